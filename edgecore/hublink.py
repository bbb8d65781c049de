"""The edge's link to the hub: connect, resume, apply changes, drain the outbox.

The link runs forever: when the connection drops it waits a backoff delay
(full jitter, capped) and tries the next configured endpoint. Nothing else
on the edge waits for it; the cache and the outbox are in edge.db.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from edgecore.config import HubLinkConfig
from edgecore.store import Observer, StoreThread
from edgecore.transport import connect_hub
from edgeward import protocol
from edgeward.backoff import backoff
from edgeward.errors import ProtocolError
from edgeward.protocol import Change
from edgeward.sync import OutboxCursor

log = logging.getLogger(__name__)

#: Errors after which the link simply tries again later.
RETRYABLE = (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ProtocolError)
#: Seconds an idle outbox waits after new rows arrive before reading them (see _send_outbox).
OUTBOX_LINGER = 0.01


class HubLink:
    """One node's connection to the hub, reconnecting forever."""

    def __init__(
        self,
        config: HubLinkConfig,
        node: str,
        db: StoreThread,
        node_info: dict[str, Any],
        outbox_wake: asyncio.Event,
        observe: Observer | None = None,
        after_apply: Callable[[Any], None] | None = None,
    ) -> None:
        """``observe`` runs inside each batch's transaction (see EdgeStore.apply_changes);
        ``after_apply`` gets what it returned once the batch has committed."""
        self.config = config
        self.node = node
        self.db = db
        self.node_info = node_info
        self.outbox_wake = outbox_wake
        self.observe = observe
        self.after_apply = after_apply
        self.connected = asyncio.Event()
        self._snapshot: list[Change] = []

    def _delays(self) -> Iterator[float]:
        return backoff(self.config.reconnect_initial_delay, 2.0, self.config.reconnect_max_delay)

    async def run(self) -> None:
        delays = self._delays()
        attempt = 0
        while True:
            url = self.config.endpoints[attempt % len(self.config.endpoints)]
            attempt += 1
            try:
                async with connect_hub(url, self.config) as ws:
                    welcomed = await self._session(ws, url)
                    if welcomed:
                        delays = self._delays()
                        attempt -= 1  # stay on an endpoint that worked
            except InvalidURI as exc:
                log.error("hub endpoint %s is not a valid URL: %s", url, exc)
            except RETRYABLE as exc:
                log.warning("hub %s: %s", url, _describe(exc))
            finally:
                self.connected.clear()
            delay = next(delays)
            log.info("reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection, url: str) -> bool:
        """Run one connection to its end; True once the hub has welcomed us."""
        revision = await self.db.call(self.db.store.revision)
        hello = protocol.Hello(
            node=self.node,
            revision=revision,
            agent=self.node_info.get("agentVersion", ""),
            node_info=self.node_info,
        )
        await ws.send(hello.encode())
        async with asyncio.timeout(self.config.open_timeout):
            welcome = protocol.decode(await ws.recv())
        if isinstance(welcome, protocol.Error):
            raise ProtocolError(welcome.code, f"hub refused us: {welcome.reason}")
        if not isinstance(welcome, protocol.Welcome):
            raise ProtocolError(protocol.UNEXPECTED, f"expected welcome, got {welcome.type}")
        await self.db.call(self.db.store.align_outbox, welcome.report_seq)
        log.info(
            "connected to %s at revision %d (hub at %d, %s)",
            url,
            revision,
            welcome.head,
            welcome.mode,
        )
        self.connected.set()
        cursor = OutboxCursor(acked=welcome.report_seq)
        self._snapshot = []
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive(ws, cursor))
                tg.create_task(self._send_outbox(ws, cursor))
        except* ConnectionClosed as group:
            log.warning("hub %s: %s", url, _describe(group.exceptions[0]))
        except* sqlite3.Error as group:
            # e.g. a full disk: drop the link and retry later; the hub resends what was not acked
            log.error("local database: %s; reconnecting later", group.exceptions[0])
        return True

    async def _receive(self, ws: ClientConnection, cursor: OutboxCursor) -> None:
        async for frame in ws:
            try:
                msg = protocol.decode(frame)
                await self._dispatch(ws, msg, cursor)
            except ProtocolError as exc:
                log.warning("refused a frame from the hub: %s", exc)
                await ws.send(protocol.Error.of(exc).encode())
        # a clean close just ends the iteration; recv() raises its ConnectionClosed, which
        # ends the sender task too
        await ws.recv()

    async def _dispatch(
        self, ws: ClientConnection, msg: protocol.Message, cursor: OutboxCursor
    ) -> None:
        if isinstance(msg, protocol.Changes):
            result = await self.db.call(
                self.db.store.apply_changes, msg.revision, msg.items, self.observe
            )
            self._applied(result)
            await ws.send(protocol.Ack(msg.revision).encode())
            if msg.items:
                log.debug("applied %d changes through revision %d", len(msg.items), msg.revision)
        elif isinstance(msg, protocol.Snapshot):
            self._snapshot.extend(msg.items)
            if msg.final:
                items, self._snapshot = self._snapshot, []
                result = await self.db.call(
                    self.db.store.replace_all, msg.revision, items, self.observe
                )
                self._applied(result)
                await ws.send(protocol.Ack(msg.revision).encode())
                log.info(
                    "applied a snapshot of %d objects at revision %d", len(items), msg.revision
                )
        elif isinstance(msg, protocol.ReportAck):
            try:
                fresh = cursor.acknowledged(msg.seq)
            except ValueError as exc:
                raise ProtocolError(protocol.BAD_MESSAGE, str(exc)) from None
            if fresh:
                await self.db.call(self.db.store.acknowledge, msg.seq)
                self.outbox_wake.set()
        elif isinstance(msg, protocol.Error):
            log.warning("the hub refused a frame: %s: %s", msg.code, msg.reason)
        else:
            raise ProtocolError(protocol.UNEXPECTED, f"{msg.type} is not accepted from the hub")

    def _applied(self, result: Any) -> None:
        if self.after_apply is not None and result:
            self.after_apply(result)
        self.outbox_wake.set()  # the batch may have queued reports

    async def _send_outbox(self, ws: ClientConnection, cursor: OutboxCursor) -> None:
        while True:
            self.outbox_wake.clear()
            if cursor.can_send:
                items = await self.db.call(self.db.store.pending, cursor.sent)
                if items:
                    await ws.send(protocol.Report(tuple(items)).encode())
                    cursor.sending(items[-1].seq)
                    continue
            idle = cursor.can_send  # nothing was pending, as opposed to a full window
            await self.outbox_wake.wait()
            if idle:
                # Let a burst gather: a device's state rows coalesce meanwhile, and one frame
                # replaces one per twin batch, which would otherwise keep the store thread and
                # the hub busy between a mapper's update and its next one.
                await asyncio.sleep(OUTBOX_LINGER)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        rcvd = exc.rcvd
        if rcvd is not None:
            return f"connection closed by the hub ({rcvd.code} {rcvd.reason})".replace(" )", ")")
        return "connection lost"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
