"""The edge's link to the hub: the I/O around an EdgeSession, reconnecting as the policy says.

Every rule of the conversation is in :class:`edgeward.session.EdgeSession`,
and whether to try again after a connection ends is
:func:`edgeward.session.classify`'s to say. This module connects, pumps
frames and store results into the session, carries its commands out, and
waits between attempts (full jitter, capped). What cannot work by retrying —
a URL that is not a hub, a hub that refuses this node or speaks another
protocol — raises :class:`LinkStopped`, and edgecore exits with that line.

Per connection, two tasks: ``_receive`` hands frames over one at a time and
awaits each one's store job before reading the next (a burst from the hub
waits in the socket, not in memory, except up to READ_AHEAD_BYTES read ahead while a
batch edge.db cannot store is held, to keep the link's pings flowing); ``_send_outbox``
drains the outbox
within the session's window. Nothing else on the edge waits for the link:
the cache and the outbox are in edge.db.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from edgecore import credentials
from edgecore.config import HubLinkConfig
from edgecore.drops import Drops
from edgecore.store import StoreThread, is_storage_failure
from edgecore.transport import connect_hub
from edgecore.twins import Outgoing, TwinService
from edgeward import certs
from edgeward.backoff import backoff
from edgeward.certs import CertificateError
from edgeward.errors import FatalError
from edgeward.protocol import Change
from edgeward.session import Cause, EdgeSession, Ended, Verdict, classify
from edgeward.session.commands import (
    AlignOutbox,
    ApplyChanges,
    Close,
    Command,
    DeleteAcked,
    InstallCertificate,
    Job,
    Log,
    ReadOutbox,
    Send,
    StageSnapshot,
)

log = logging.getLogger(__name__)

#: Seconds an idle outbox waits after new rows arrive before reading them (see _send_outbox).
OUTBOX_LINGER = 0.01
#: Seconds between two tries of a hub batch edge.db could not store (a full disk).
STORAGE_RETRY = 2.0
#: Longest wait between looks at the node certificate's renewal time.
RENEWAL_CHECK = 3600.0
#: Bytes of the hub's frames read ahead while one of its batches is held (a full disk).
READ_AHEAD_BYTES = 1024 * 1024


class LinkStopped(FatalError):
    """The hub link cannot work by trying again; the message says why, in one line."""


class HubLink:
    """One node's connection to the hub, reconnecting until the policy says stop."""

    def __init__(
        self,
        config: HubLinkConfig,
        node: str,
        db: StoreThread,
        node_info: dict[str, Any],
        outbox_wake: asyncio.Event,
        twins: TwinService | None = None,
        publish: Callable[[list[Outgoing]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``twins`` follows the Devices the hub sends (inside each batch's transaction);
        ``publish`` gets the MQTT messages that produced once the batch has committed."""
        self.config = config
        self.node = node
        self.db = db
        self.node_info = node_info
        self.outbox_wake = outbox_wake
        self.twins = twins
        self.publish = publish
        self.clock = clock
        self.connected = asyncio.Event()
        #: The endpoint of the current or latest attempt, and whether an attempt ended
        #: since the link was last live: what :meth:`summary` says.
        self.endpoint = config.endpoints[0]
        self.retrying = False
        #: Connections tried, and sessions that went live, since edgecore started.
        self.attempts = 0
        self.sessions = 0
        self._live_since: float | None = None
        #: Local failures the link rides over, logged at a limited rate.
        self._problems = Drops(log)
        #: The connection being served, and frames read from it ahead of their turn while
        #: a batch is held (_read_ahead): handled first, in order, once it is stored.
        self._ws: ClientConnection | None = None
        self._ahead: deque[str | bytes] = deque()
        self._ahead_bytes = 0

    def summary(self) -> str:
        """The link's state in a few words, for the daemon's status line."""
        if self.connected.is_set():
            return f"connected to hub {self.endpoint}"
        if self.retrying:
            return "hub unreachable (retrying)"
        return f"connecting to hub {self.endpoint}"

    def _delays(self) -> Iterator[float]:
        return backoff(self.config.reconnect_initial_delay, 2.0, self.config.reconnect_max_delay)

    async def run(self) -> None:
        """Connect, serve, and reconnect forever; raises LinkStopped when retrying cannot help."""
        delays = self._delays()
        endpoints = self.config.endpoints
        attempt = 0
        while True:
            url = self.endpoint = endpoints[attempt % len(endpoints)]
            if url.startswith("wss://"):
                expired = await asyncio.to_thread(
                    credentials.expired_message, self.config, self.node
                )
                if expired is not None:
                    raise LinkStopped(expired)
            self.attempts += 1
            verdict, welcomed = await self._attempt(url)
            if welcomed:  # the link was live: the node is alone from now
                await self.db.call(self.db.store.outage_lost)
            self.retrying = True
            if not verdict.retry:
                raise LinkStopped(verdict.message)
            log.warning("%s", verdict.message)
            if verdict.reset_backoff:
                delays = self._delays()
            if not welcomed or verdict.next_endpoint:
                attempt += 1  # stay on an endpoint that worked, else try the next
            delay = next(delays)
            log.info("reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)

    async def _attempt(self, url: str) -> tuple[Verdict, bool]:
        """One connection, from opening to its end: what the policy says of it."""
        core: EdgeSession | None = None
        try:
            async with connect_hub(url, self.config) as ws:
                revision = await self.db.call(self.db.store.revision)
                core = EdgeSession(
                    self.node, revision, self.node_info.get("agentVersion", ""), self.node_info
                )
                ended = await self._serve(ws, core, url)
        except InvalidURI as exc:
            ended = Ended(Cause.INVALID_URL, str(exc))
        except InvalidStatus as exc:
            ended = Ended(
                Cause.HTTP_STATUS,
                _said(exc.response.body),
                http_status=exc.response.status_code,
            )
        except InvalidHandshake as exc:
            # a handshake cut short is the network; a reply that is not HTTP is not a hub
            tls = _tls_refusal(exc.__cause__)
            lost = isinstance(exc.__cause__, EOFError | OSError)
            cause = Cause.UNREACHABLE if lost else Cause.NOT_WEBSOCKET
            detail = _describe(exc)
            if lost and url.startswith("wss://"):
                # TLS 1.3 checks our certificate after the handshake: a hub refusing it
                # (another CA, revoked at the TLS layer) only closes the connection
                detail += (
                    "; the hub closed the connection before answering: if this persists, "
                    "it may not accept this node's certificate (join again)"
                )
            ended = tls or Ended(cause, detail)
        except ssl.SSLError as exc:
            ended = _tls_refusal(exc) or Ended(Cause.UNREACHABLE, _describe(exc))
        except (OSError, TimeoutError) as exc:
            ended = Ended(Cause.UNREACHABLE, _describe(exc))
        except sqlite3.Error as exc:
            ended = Ended(Cause.LOCAL_STORE, str(exc))
        finally:
            self.connected.clear()
            self._live_since = None
        return classify(ended, self.node, url), core is not None and core.welcomed

    async def _serve(self, ws: ClientConnection, core: EdgeSession, url: str = "") -> Ended:
        closed: ConnectionClosed | None = None
        self._ws, self._ahead, self._ahead_bytes = ws, deque(), 0
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive(ws, core))
                tg.create_task(self._send_outbox(ws, core))
                tg.create_task(self._await_welcome(core))
                if url.startswith("wss://"):
                    tg.create_task(self._renew_when_due(ws, core))
        except* ConnectionClosed as group:
            closed = group.exceptions[0]  # type: ignore[assignment]
        except* TimeoutError:
            pass
        if closed is None:
            return Ended(Cause.UNREACHABLE, f"no welcome within {self.config.open_timeout:g}s")
        lived = 0.0 if self._live_since is None else self.clock() - self._live_since
        rcvd, sent = closed.rcvd, closed.sent
        # without a close frame from the hub, why this side gave up: the dead link's pings
        reason = rcvd.reason if rcvd else (sent.reason if sent else "")
        return core.ended(rcvd.code if rcvd else None, reason, lived)

    async def _renew_when_due(self, ws: ClientConnection, core: EdgeSession) -> None:
        """Ask for a new certificate two thirds into the current one's life (once per session:
        a refused renewal is tried again on the next connection)."""
        while True:
            due = await asyncio.to_thread(credentials.renewal_due, self.config)
            if due is None:
                return
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(min(wait, RENEWAL_CHECK))
                continue
            if not core.welcomed or core.renewing:
                await asyncio.sleep(1.0)
                continue
            try:
                csr = await credentials.new_csr(self.config, self.node)
            except (OSError, CertificateError) as exc:
                log.warning("cannot renew the node certificate: %s; retrying later", exc)
                await asyncio.sleep(RENEWAL_CHECK)
                continue
            log.info("renewing the node certificate (two thirds of its life have passed)")
            await self._execute(ws, core, core.renew(csr))
            return

    async def _await_welcome(self, core: EdgeSession) -> None:
        await asyncio.sleep(self.config.open_timeout)
        if not core.welcomed and not core.closed:
            raise TimeoutError

    async def _receive(self, ws: ClientConnection, core: EdgeSession) -> None:
        await self._execute(ws, core, core.start())
        while True:
            if self._ahead:
                frame = self._ahead.popleft()
                self._ahead_bytes -= len(frame)
            else:
                # raises ConnectionClosed when the link ends, cleanly or not, which ends the
                # sender task too
                frame = await ws.recv()
            await self._execute(ws, core, core.receive(frame))

    async def _send_outbox(self, ws: ClientConnection, core: EdgeSession) -> None:
        while True:
            self.outbox_wake.clear()
            job = core.outbox_request()
            idle = False
            if job is not None:
                commands = await self._run(core, job)
                if commands:
                    await self._execute(ws, core, commands)
                    continue
                idle = True  # nothing was pending, as opposed to a full window
            await self.outbox_wake.wait()
            if idle:
                # Let a burst gather: a device's state rows coalesce meanwhile, and one frame
                # replaces one per twin batch, which would otherwise keep the store thread and
                # the hub busy between a mapper's update and its next one.
                await asyncio.sleep(OUTBOX_LINGER)

    async def _execute(
        self, ws: ClientConnection, core: EdgeSession, commands: list[Command]
    ) -> None:
        for command in commands:
            if isinstance(command, Send):
                await ws.send(command.message.encode())
            elif isinstance(command, Close):
                await ws.close(command.code, command.reason)
            elif isinstance(command, Log):
                log.log(command.level, "%s", command.text)
            elif isinstance(command, InstallCertificate):
                await self._install(ws, command.certificate)
            else:
                assert isinstance(command, Job)
                await self._execute(ws, core, await self._run(core, command))

    async def _install(self, ws: ClientConnection, pem: str) -> None:
        """Put the renewed certificate in place and reconnect with it at once, so every
        session runs on a certificate with life left (and may renew it in turn)."""
        try:
            not_after = await asyncio.to_thread(credentials.install, self.config, pem, self.node)
        except (OSError, CertificateError) as exc:
            log.warning("the renewed certificate could not be installed: %s", exc)
            return
        log.info(
            "renewed the node certificate, valid until %s; reconnecting with it",
            certs.utc(not_after),
        )
        await ws.close(1000, "reconnecting with a renewed certificate")

    async def _run(self, core: EdgeSession, job: Job) -> list[Command]:
        """Carry out a job on the store's thread and hand its result to the core."""
        db = self.db
        try:
            if isinstance(job, AlignOutbox):
                await db.call(db.store.align_outbox, job.report_seq)
                await db.call(db.store.outage_closed)
                commands = core.aligned()
                self._live_since = self.clock()
                self.connected.set()
                self.sessions += 1
                self.retrying = False
                self.outbox_wake.set()
                return commands
            if isinstance(job, ApplyChanges):
                self._published(await self._until_stored(self._apply, job.revision, job.items))
                return core.applied()
            if isinstance(job, StageSnapshot):
                self._published(await self._until_stored(self._stage, job))
                if job.final:
                    log.info("applied a snapshot at revision %d", job.revision)
                return core.applied()
            if isinstance(job, ReadOutbox):
                return core.outbox_read(await db.call(db.store.pending, job.after))
            assert isinstance(job, DeleteAcked)
            try:
                await db.call(db.store.acknowledge, job.seq)
            except sqlite3.OperationalError as exc:
                # Rows the hub holds that cannot be deleted now (a full disk): harmless, they
                # are deleted when the session next aligns the outbox; the link stays up.
                self._problems.add("delete-acked", f"could not delete acknowledged rows: {exc}")
            if job.rejected:
                await db.call(db.store.count_rejected, len(job.rejected))
            self.outbox_wake.set()
            return core.deleted()
        except ConnectionClosed:
            raise  # the link ended while the job waited (_read_ahead): not the job's failure
        except Exception as exc:
            if not isinstance(exc, sqlite3.Error):
                log.exception("%s failed", type(job).__name__)
            return core.job_failed(job, str(exc) or type(exc).__name__)

    async def _until_stored(
        self, apply: Callable[..., list[Outgoing]], *args: Any
    ) -> list[Outgoing]:
        """Apply a batch from the hub; one edge.db cannot take now (a full disk, an I/O
        error) is tried again every STORAGE_RETRY seconds with the link kept up: the hub
        holds it (unacknowledged) meanwhile, and the edge serves from its cache."""
        failed = False
        while True:
            try:
                published = await self.db.call(apply, *args)
            except sqlite3.OperationalError as exc:
                if not is_storage_failure(exc):
                    raise
                failed = True
                self._problems.add(
                    "storage",
                    f"edge.db cannot store changes from the hub ({exc}); the hub keeps them "
                    f"and they are tried again every {STORAGE_RETRY:g}s, with the link up",
                )
                await self._read_ahead(STORAGE_RETRY)
                continue
            if failed:
                log.warning("edge.db takes changes from the hub again")
            return published

    async def _read_ahead(self, seconds: float) -> None:
        """Wait ``seconds``, reading the hub's next frames meanwhile (up to READ_AHEAD_BYTES;
        _receive handles them in order once the held batch is stored). websockets answers
        pings and takes pongs only while frames are read: without this, a few more frames
        from the hub fill its queue, reading stops, and the keepalive ends a healthy link."""
        ws, loop = self._ws, asyncio.get_running_loop()
        until = loop.time() + seconds
        while ws is not None and self._ahead_bytes < READ_AHEAD_BYTES:
            left = until - loop.time()
            if left <= 0:
                return
            try:
                async with asyncio.timeout(left):
                    frame = await ws.recv()  # cancelling recv() loses nothing
            except TimeoutError:
                return
            self._ahead.append(frame)
            self._ahead_bytes += len(frame)
        await asyncio.sleep(max(0.0, until - loop.time()))

    # -- on the store's thread --------------------------------------------------------

    def _apply(self, revision: int, items: Sequence[Change]) -> list[Outgoing]:
        observe = self.twins.on_hub_changes if self.twins is not None else None
        batch = self.db.store.apply_changes(revision, items, observe)
        return self._adopt(batch)

    def _stage(self, job: StageSnapshot) -> list[Outgoing]:
        observe = self.twins.on_hub_changes if self.twins is not None else None
        batch = self.db.store.stage_snapshot(job.revision, job.items, job.first, job.final, observe)
        return self._adopt(batch)

    def _adopt(self, batch: Any) -> list[Outgoing]:
        """The batch committed: the twins take it in; its messages are published next."""
        if self.twins is None or batch is None:
            return []
        self.twins.adopt(batch)
        return batch.publish

    def _published(self, messages: list[Outgoing]) -> None:
        if messages and self.publish is not None:
            self.publish(messages)
        self.outbox_wake.set()  # the batch may have queued reports


def _said(body: bytes | None) -> str:
    """The first line of a refusal's body (the hub says there why it refused)."""
    if not body:
        return ""
    line = body.decode("utf-8", "replace").strip().splitlines()
    return line[0][:300] if line else ""


#: OpenSSL alert reasons that mean the hub refused our certificate.
_REFUSED_ALERTS = ("CERTIFICATE", "UNKNOWN_CA")


def _tls_refusal(exc: BaseException | None) -> Ended | None:
    """A TLS failure no retry can fix, as the Ended that stops the link; None otherwise."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Ended(Cause.HUB_NOT_TRUSTED, exc.verify_message or str(exc))
    if isinstance(exc, ssl.SSLError) and "ALERT" in (exc.reason or ""):
        reason = exc.reason or ""
        if any(word in reason for word in _REFUSED_ALERTS):
            return Ended(Cause.CERTIFICATE_REFUSED, reason.lower().replace("_", " "))
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
