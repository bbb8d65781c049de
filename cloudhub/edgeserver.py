"""The hub's edge endpoint: one websocket per node, pumped through a HubSession.

Every rule of the conversation — what an edge may send, what it is owed,
when a session ends — is in :class:`edgeward.session.HubSession`. This
module only carries events in (frames, change-feed wake-ups, job results,
requests from other parts of the hub) and commands out (frames, closes, log
lines, store jobs). Per session, two tasks in one TaskGroup:

- ``_receive``: frames from the edge, one at a time (a frame's job — a
  report's group commit — is awaited before the next frame is read, so a
  fast edge is slowed by the hub instead of growing its memory);
- ``_follow``: the change feed for this node, and requests from elsewhere in
  the hub — a newer connection for the same node, a deleted Node — which
  wake it the way rows do (a third task and a queue per session cost 3 KiB
  of the hub's memory per node).

One node's trouble never touches another's session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from cloudhub import intake
from cloudhub.changefeed import ChangeFeed, Subscription
from cloudhub.edgegate import EdgeGate, node_identity
from cloudhub.groupwriter import GroupWriter
from cloudhub.hellos import HelloBatcher
from cloudhub.metrics import HubMetrics
from cloudhub.nodes import NodeRegistry, SessionSuperseded
from cloudhub.store import Store
from edgeward.certs import CertificateError
from edgeward.protocol import Error, Rejected, ReportItem, Welcome
from edgeward.session import HubSession
from edgeward.session.commands import (
    Close,
    Command,
    Job,
    Log,
    PersistReports,
    ReadLog,
    ReadSnapshot,
    Register,
    Send,
    SignCertificate,
)

log = logging.getLogger(__name__)

#: A session with nothing to send tells its edge how far the log has moved this often,
#: so an idle edge's revision stays inside the change log.
PROGRESS_INTERVAL = 30.0
HELLO_TIMEOUT = 10.0
DEFAULT_FRAMES_PER_SECOND = 200.0


class EdgeServer:
    """Accepts edge connections and runs one session per node.

    With a ``gate`` (TLS), a session speaks only for the node its certificate
    names; without one (a hub run --insecure), for whichever node it says.
    """

    def __init__(
        self,
        store: Store,
        feed: ChangeFeed,
        nodes: NodeRegistry,
        writer: GroupWriter,
        gate: EdgeGate | None = None,
        frames_per_second: float = DEFAULT_FRAMES_PER_SECOND,
        signer: Callable[[str, str], str] | None = None,
        metrics: HubMetrics | None = None,
        hello_timeout: float = HELLO_TIMEOUT,
    ) -> None:
        """``signer(node, csr)`` signs and records a node's renewed certificate (PEM);
        ``metrics`` counts frames and report rows; ``hello_timeout``: seconds a new
        connection has to say hello."""
        self.store = store
        self.feed = feed
        self.nodes = nodes
        self.writer = writer
        self.gate = gate
        self.frames_per_second = frames_per_second
        self.signer = signer
        self.metrics = metrics
        self.sessions: dict[str, SessionShell] = {}
        self.hellos = HelloBatcher(nodes, writer)
        self.hello_timeout = hello_timeout
        self.hello_timeouts = 0
        nodes.on_superseded = self.superseded

    async def handle(self, ws: ServerConnection) -> None:
        await SessionShell(self, ws).run()

    def claim(self, shell: SessionShell) -> None:
        """``shell`` now serves its node; an older connection of the node is closed."""
        previous = self.sessions.get(shell.core.node)
        self.sessions[shell.core.node] = shell
        if previous is not None and previous is not shell:
            previous.request(lambda: previous.core.replaced(shell.peer))

    def superseded(self, name: str, session: int) -> None:
        """Another hub replica took ``name``'s session ``session`` over: close it here."""
        shell = self.sessions.get(name)
        if shell is not None and shell.session == session:
            shell.request(lambda: shell.core.replaced("another hub replica"))

    def move(self, name: str) -> None:
        """Rebalancing: ask ``name``'s edge to reconnect, to another replica (close 4003)."""
        shell = self.sessions.get(name)
        if shell is not None:
            shell.request(shell.core.move)

    def session_ages(self) -> list[tuple[str, float]]:
        """Each node served here, with the time its session began (time.time())."""
        return [(name, shell.since) for name, shell in self.sessions.items()]

    def node_deleted(self, name: str, revision: int | None = None) -> None:
        """An operator deleted the Node (at ``revision``, through any replica): close its
        session, unless it registered after the deletion; it registers again from seq 0."""
        shell = self.sessions.get(name)
        if shell is not None and (revision is None or shell.registered_at < revision):
            shell.request(shell.core.node_deleted)

    def resync(self, name: str) -> bool:
        """An operator asked for a resync: close the node's session, if it is connected here,
        so it reconnects at once and takes a snapshot. Whether it was connected here."""
        shell = self.sessions.get(name)
        if shell is not None:
            shell.request(shell.core.resync_requested)
        return shell is not None


class SessionShell:
    """The I/O around one HubSession."""

    __slots__ = (
        "_bucket",
        "_requests",
        "core",
        "credential",
        "peer",
        "registered_at",
        "server",
        "session",
        "since",
        "sub",
        "ws",
    )

    def __init__(self, server: EdgeServer, ws: ServerConnection) -> None:
        self.server = server
        self.ws = ws
        self.peer = _peer(ws)
        #: The certificate the connection presented (None on a hub run --insecure).
        self.credential = node_identity(ws) if server.gate is not None else None
        self.core = HubSession(identity=None if self.credential is None else self.credential.node)
        self.sub: Subscription | None = None
        #: The node's session number this connection serves under (set at registration).
        self.session: int | None = None
        #: When it began serving its node (time.time()), for rebalancing.
        self.since = time.time()
        #: The revision its registration committed at (a later Node deletion ends it).
        self.registered_at = 0
        self._requests: list[Callable[[], list[Command]]] = []
        self._bucket = TokenBucket(server.frames_per_second)

    def request(self, event: Callable[[], list[Command]]) -> None:
        """Hand the session an event from outside it (it runs on the session's own task)."""
        self._requests.append(event)
        if self.sub is not None:
            self.sub.poke()

    async def run(self) -> None:
        how = ""  # how the connection ended, for the log line that says it did
        try:
            welcomed = await self._greet()
            intake.greeted(self.ws)  # however the greeting ended: the next connection's turn
            if welcomed:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._receive())
                    tg.create_task(self._follow())
        except* ConnectionClosed as closed:
            # the edge went away, or we closed it (a frame too big: 1009); it reconnects
            # and resumes, or stops on a close that says retrying cannot help
            how = f": {closed.exceptions[0]}"
        finally:
            self.core.connection_lost()
            if self.sub is not None:
                self.sub.close()
            if self.core.node:
                if self.server.sessions.get(self.core.node) is self:
                    del self.server.sessions[self.core.node]
                if self.session is not None:
                    self.server.nodes.leases.release(self.core.node, self.session)
                log.info("node %s: disconnected (%s)%s", self.core.node, self.peer, how)

    async def _greet(self) -> bool:
        """Hello, registration and the catch-up; False when the session ended there."""
        try:
            async with asyncio.timeout(self.server.hello_timeout):
                frame = await self.ws.recv()
            intake.hello_received(self.ws)
        except TimeoutError:
            self.server.hello_timeouts += 1  # counted here, not as a refusal: it said nothing
            await self._execute(self.core.hello_timed_out(), audit=False)
            return False
        await self._execute(self.core.receive(frame))
        return not self.core.closed

    async def _receive(self) -> None:
        metrics = self.server.metrics
        async for frame in self.ws:
            if metrics is not None:
                metrics.edge_frames.inc()
            await self._bucket.take()  # a node sending faster than its rate waits here
            await self._execute(self.core.receive(frame))
        # The connection is over, even when it closed cleanly (iteration then just stops):
        # recv() raises its ConnectionClosed, which ends the session's other tasks too.
        await self.ws.recv()

    async def _follow(self) -> None:
        sub, feed = self.sub, self.server.feed
        assert sub is not None
        while not self.core.closed:
            if self._requests:
                sub.poked = False
                events, self._requests = self._requests, []
                for event in events:
                    await self._execute(event())
            elif not await sub.wait(timeout=PROGRESS_INTERVAL) and not sub.has_news:
                # (rows the feed pushed as the wait timed out come first: the progress mark
                # reaches past them, and rows below it would be taken for replays)
                await self._execute(self.core.idle(feed.last))
            elif sub.closed:  # the hub is stopping
                await self._execute(self.core.stopping())
            elif sub.overflowed:
                sub.recovered()
                await self._execute(self.core.feed_overflowed())
            elif sub.poked and not self._requests:
                sub.poked = False
            else:
                await self._execute(self.core.rows_published(sub.take()))

    async def _execute(self, commands: list[Command], audit: bool = True) -> None:
        """Carry out the core's commands; a policy close is counted and audited as a refusal
        of the connection's certificate, unless ``audit`` is False."""
        refusal = ""  # the error frame that explains a policy close, sent just before it
        for command in commands:
            if isinstance(command, Send):
                if isinstance(command.message, Error):
                    refusal = command.message.reason
                await self.ws.send(command.message.encode())
                if isinstance(command.message, Welcome):
                    intake.greeted(self.ws)  # the catch-up that follows is paced by the node
            elif isinstance(command, Close):
                intake.greeted(self.ws)  # the close handshake is paced by the peer
                gate, credential = self.server.gate, self.credential
                if command.code == 1008 and audit and gate is not None and credential:
                    action = "frame" if self.core.node else "hello"
                    gate.refused_session(credential, action, self.peer, refusal or command.reason)
                await self.ws.close(command.code, command.reason)
            elif isinstance(command, Log):
                log.log(command.level, "node %s: %s", self.core.node or self.peer, command.text)
            else:
                assert isinstance(command, Job)
                await self._execute(await self._run(command))

    async def _run(self, job: Job) -> list[Command]:
        """Carry out a job and hand its result to the core; a failure is the core's to judge."""
        store, node = self.server.store, self.core.node
        try:
            if isinstance(job, Register):
                return await self._register(job)
            if isinstance(job, ReadLog):
                page = await asyncio.to_thread(store.log_page, job.after, job.limit, node)
                return self.core.log_read(page.rows, page.compacted, page.head)
            if isinstance(job, ReadSnapshot):
                objects, head = await asyncio.to_thread(
                    store.snapshot_page, node, job.after_key, job.limit
                )
                return self.core.snapshot_read(objects, head)
            if isinstance(job, SignCertificate):
                return await self._sign(job.csr)
            assert isinstance(job, PersistReports)
            high, rejected = await self._persist(job.items, job.acked_revision)
            return self.core.reports_persisted(high, rejected)
        except SessionSuperseded:
            self.server.nodes.leases.superseded(node, self.session)
            return self.core.replaced("another hub replica")
        except Exception as exc:
            log.debug("node %s: %s failed", node, type(job).__name__, exc_info=True)
            return self.core.job_failed(job, _describe(exc))

    async def _sign(self, csr: str) -> list[Command]:
        signer = self.server.signer
        if signer is None:
            return self.core.certificate_refused("this hub issues no certificates")
        try:
            pem = await asyncio.to_thread(signer, self.core.node, csr)
        except CertificateError as exc:
            return self.core.certificate_refused(str(exc))
        return self.core.certificate_signed(pem)

    async def _register(self, job: Register) -> list[Command]:
        server = self.server
        # Subscribe before the first read of the log, so no change falls between the two.
        self.sub = server.feed.subscribe_node(job.node)
        server.claim(self)
        log.info("node %s: connected from %s", job.node, self.peer)
        # batched with the hellos around it (a burst after a failover is thousands), and
        # lock-free for a node already Ready with the same nodeInfo (cloudhub/hellos.py)
        registration = await server.hellos.register(job.node, job.node_info)
        self.session = registration.session
        self.registered_at = registration.revision
        report_seq = server.nodes.registered(job.node, job.node_info, registration)
        return self.core.registered(report_seq, resync=registration.resync)

    async def _persist(
        self, items: tuple[ReportItem, ...], acked: int
    ) -> tuple[int, tuple[Rejected, ...]]:
        nodes, node = self.server.nodes, self.core.node
        if self.server.metrics is not None:
            self.server.metrics.edge_reports.inc(len(items))
        high = nodes.absorb(node, items, acked)
        if high is not None:
            return high, ()
        session = self.session
        outcome: Any = await self.server.writer.submit(
            lambda tx: nodes.record_reports_in(tx, node, items, acked, session)
        )
        high, rejected = outcome if isinstance(outcome, tuple) else (outcome, ())
        nodes.reports_written(node, items, high, tuple(rejected), session)
        return high, tuple(rejected)


class TokenBucket:
    """Frames per second for one session, with bursts of twice the rate."""

    __slots__ = ("_level", "_stamp", "rate")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._level = 2 * rate
        self._stamp = time.monotonic()

    async def take(self) -> None:
        now = time.monotonic()
        self._level = min(2 * self.rate, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._level < 1:
            await asyncio.sleep((1 - self._level) / self.rate)
            self._level, self._stamp = 1.0, time.monotonic()
        self._level -= 1


def _peer(ws: ServerConnection) -> str:
    addr: Any = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
