"""The hub's edge endpoint: one websocket per node, speaking edgeward.protocol.

A session is: hello → welcome → catch-up (changes since the edge's revision,
or a snapshot) → live (changes as they commit, reports and acks both ways).
Bad frames get an error frame and are logged; a peer that keeps sending them,
or that does not start with a valid hello, is closed. One node's trouble
never touches another's session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from cloudhub.changefeed import ChangeFeed, Subscription
from cloudhub.groupwriter import GroupWriter
from cloudhub.nodes import NodeRegistry
from cloudhub.store import Store
from edgeward import protocol
from edgeward.errors import ProtocolError
from edgeward.kinds import dns_subdomain_problem
from edgeward.sync import ChangeRow, NodeBacklog, change_batches, snapshot_frames

log = logging.getLogger(__name__)

#: Close a connection after this many refused frames.
MAX_BAD_FRAMES = 10
#: A session with nothing to send tells its edge how far the log has moved this often,
#: so an idle edge's revision stays inside the change log.
PROGRESS_INTERVAL = 30.0
HELLO_TIMEOUT = 10.0
#: Change-log rows read at a time when a node catches up.
CATCH_UP_PAGE = 1000

# Close codes (4000-4999 are for applications).
CLOSE_POLICY = 1008
CLOSE_REPLACED = 4000


class EdgeServer:
    """Accepts edge connections and runs one session per node."""

    def __init__(
        self, store: Store, feed: ChangeFeed, nodes: NodeRegistry, writer: GroupWriter
    ) -> None:
        self.store = store
        self.feed = feed
        self.nodes = nodes
        self.writer = writer
        self.sessions: dict[str, Session] = {}

    async def handle(self, ws: ServerConnection) -> None:
        peer = _peer(ws)
        try:
            hello = await self._read_hello(ws, peer)
        except ConnectionClosed:
            return
        if hello is None:
            return
        session = Session(self, ws, hello)
        previous = self.sessions.get(hello.node)
        self.sessions[hello.node] = session
        if previous is not None:
            log.info(
                "node %s: a newer connection from %s replaces the one from %s",
                hello.node,
                peer,
                _peer(previous.ws),
            )
            await previous.ws.close(CLOSE_REPLACED, "replaced by a newer connection")
        try:
            await session.run()
        except* ConnectionClosed:
            pass  # the edge went away; it reconnects and resumes
        finally:
            if self.sessions.get(hello.node) is session:
                del self.sessions[hello.node]
            log.info("node %s: disconnected (%s)", hello.node, peer)

    async def _read_hello(self, ws: ServerConnection, peer: str) -> protocol.Hello | None:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                frame = await ws.recv()
        except TimeoutError:
            await _refuse(ws, peer, ProtocolError(protocol.UNEXPECTED, "no hello received in time"))
            return None
        try:
            msg = protocol.decode(frame)
            if not isinstance(msg, protocol.Hello):
                raise ProtocolError(protocol.UNEXPECTED, f"expected hello, got {msg.type}")
            if msg.protocol != protocol.PROTOCOL_VERSION:
                raise ProtocolError(
                    protocol.UNSUPPORTED_PROTOCOL,
                    f"protocol {msg.protocol} is not supported "
                    f"(this hub speaks {protocol.PROTOCOL_VERSION})",
                )
            if (problem := dns_subdomain_problem(msg.node)) is not None:
                raise ProtocolError(protocol.BAD_MESSAGE, f"hello: node name {problem}")
        except ProtocolError as exc:
            await _refuse(ws, peer, exc)
            return None
        return msg


async def _refuse(ws: ServerConnection, peer: str, exc: ProtocolError) -> None:
    log.warning("edge %s refused: %s", peer, exc)
    try:
        await ws.send(protocol.Error.of(exc).encode())
        await ws.close(CLOSE_POLICY, exc.code)
    except ConnectionClosed:
        pass


def _peer(ws: ServerConnection) -> str:
    addr: Any = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)


class Session:
    """One connected node."""

    def __init__(self, server: EdgeServer, ws: ServerConnection, hello: protocol.Hello) -> None:
        self.server = server
        self.ws = ws
        self.hello = hello
        self.node = hello.node
        self.sent = hello.revision
        self.acked = hello.revision
        self.bad_frames = 0

    async def run(self) -> None:
        store, feed = self.server.store, self.server.feed
        nodes, info = self.server.nodes, self.hello.node_info
        registration = await self.server.writer.submit(
            lambda tx: nodes.register_in(tx, self.node, info)
        )
        report_seq = nodes.registered(self.node, info, registration)
        sub = feed.subscribe_node(self.node)
        try:
            _compacted, head, first = await asyncio.to_thread(
                store.resume_view, self.node, self.hello.revision, CATCH_UP_PAGE
            )
            mode = "snapshot" if first is None else "changes"
            log.info(
                "node %s: connected from %s at revision %d (hub at %d): %s",
                self.node,
                _peer(self.ws),
                self.hello.revision,
                head,
                mode,
            )
            await self.ws.send(protocol.Welcome(mode, head, report_seq).encode())
            if first is None:
                await self._send_snapshot()
            else:
                await self._catch_up(head, first)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive())
                tg.create_task(self._follow(sub))
        finally:
            sub.close()

    async def _send_snapshot(self) -> None:
        objects, head = await asyncio.to_thread(self.server.store.objects_for_node, self.node)
        for frame in snapshot_frames(objects, head):
            await self.ws.send(frame.encode())
        self.sent = head

    async def _catch_up(
        self, head: int | None = None, first: list[ChangeRow] | None = None
    ) -> None:
        """Send what the node is owed since ``self.sent``, read from the change log
        (``first``: the first page, already read at revision ``head``)."""
        store = self.server.store
        if head is None:
            head = await asyncio.to_thread(store.head)
        backlog = NodeBacklog(self.node)
        after = self.sent
        while True:
            if first is None:
                rows = await asyncio.to_thread(
                    store.changes_for_node, self.node, after, CATCH_UP_PAGE
                )
            else:
                rows, first = first, None
            backlog.add(rows)
            if rows:
                after = rows[-1].revision
            if len(rows) < CATCH_UP_PAGE:
                break
        await self._send_changes(backlog, max(head, after))

    async def _send_changes(self, backlog: NodeBacklog, through: int) -> None:
        if through <= self.sent:
            return
        for frame in change_batches(backlog.take(), through):
            await self.ws.send(frame.encode())
        self.sent = through

    async def _follow(self, sub: Subscription) -> None:
        backlog = NodeBacklog(self.node)
        while not sub.closed:  # closed: the hub is stopping
            if not await sub.wait(timeout=PROGRESS_INTERVAL):
                if self.server.feed.last > self.sent:
                    await self._send_changes(backlog, self.server.feed.last)
                continue
            if sub.overflowed:
                sub.recovered()
                await self._catch_up()
                continue
            rows = [r for r in sub.take() if r.revision > self.sent]
            if rows:
                backlog.add(rows)
                await self._send_changes(backlog, rows[-1].revision)

    async def _receive(self) -> None:
        async for frame in self.ws:
            try:
                msg = protocol.decode(frame)
                await self._dispatch(msg)
            except ProtocolError as exc:
                self.bad_frames += 1
                log.warning("node %s: refused a frame: %s", self.node, exc)
                await self.ws.send(protocol.Error.of(exc).encode())
                if self.bad_frames >= MAX_BAD_FRAMES:
                    await self.ws.close(CLOSE_POLICY, "too many bad frames")
                    break
        # The connection is over, even when it closed cleanly (iteration then just stops):
        # recv() raises its ConnectionClosed, which ends the session's other task too.
        await self.ws.recv()

    async def _dispatch(self, msg: protocol.Message) -> None:
        handler = self._handlers.get(type(msg))
        if handler is None:
            raise ProtocolError(protocol.UNEXPECTED, f"{msg.type} is not accepted from an edge")
        await handler(self, msg)

    async def _on_ack(self, msg: protocol.Ack) -> None:
        if msg.revision > self.sent:
            raise ProtocolError(
                protocol.BAD_MESSAGE, f"ack for revision {msg.revision} beyond {self.sent} sent"
            )
        self.acked = max(self.acked, msg.revision)

    async def _on_report(self, msg: protocol.Report) -> None:
        nodes, acked = self.server.nodes, self.acked
        high = nodes.absorb(self.node, msg.items, acked)
        if high is None:
            high = await self.server.writer.submit(
                lambda tx: nodes.record_reports_in(tx, self.node, msg.items, acked)
            )
            nodes.reports_written(self.node, msg.items, high)
        await self.ws.send(protocol.ReportAck(high).encode())

    async def _on_error(self, msg: protocol.Error) -> None:
        log.warning("node %s reports an error: %s: %s", self.node, msg.code, msg.reason)

    _handlers: dict[type, Callable[[Session, Any], Awaitable[None]]] = {
        protocol.Ack: _on_ack,
        protocol.Report: _on_report,
        protocol.Error: _on_error,
    }
