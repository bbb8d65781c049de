"""How many edge connections the hub lets into their handshake at once.

After a replica dies, or a hub restarts, thousands of edges reconnect within a
second. Accepted all at once, their TLS handshakes, websocket upgrades and
hellos run interleaved on one event loop: every one finishes late, many after
the client or the hub gave up, and each of those is paid again — the reconnect
collapses (docs/performance.md, scenario 11: 21,757 failed connects, and 2,100
nodes still not back after 15 minutes). So the edge listener accepts every
connection as it comes but lets at most ``limit`` at a time take their *turn*:
from the TLS handshake until the hello is answered (or the connection ends).
The others wait, first come first served, costing a socket each:

- a connection that has sent nothing waits outside the queue (an idle socket
  costs no CPU, so it must not take a turn from one that has work to do), and
  is dropped after the handshake timeout, counted like a stalled handshake;
- a connection whose client gave up while it waited is dropped unread
  (``abandoned``), instead of being handed a handshake nobody will finish, and one
  that waited three handshake timeouts is dropped and counted as a time-out;
- while the hub waits for the peer (the TLS handshake, the upgrade, the hello)
  a turn lasts at most ``hold`` seconds: a peer that stalls its handshake on
  purpose delays the queue by that much, not for the whole handshake timeout.
  Once the hello is in, the turn lasts until it is answered: the wait is the
  hub's, and a hub slow to answer must not let more connections in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Connections in their handshake at once, on each replica.
DEFAULT_LIMIT = 128
#: Seconds a connection may keep its turn before the next one gets it anyway.
HOLD = 5.0
#: Handshake timeouts a connection may wait for its turn (30 s by default): clients give up
#: sooner (edgecore: 10 s), and a link slow enough to need a longer handshake timeout needs
#: a longer wait too.
QUEUE_TIMEOUTS = 3
#: Seconds to wait before accepting again when the process is out of file descriptors.
ACCEPT_RETRY = 0.5

_GONE = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


class Turn:
    """A connection's place among those in their handshake; ends once, however it ends."""

    def __init__(self, release: Callable[[], None], hold: float) -> None:
        self._release: Callable[[], None] | None = release
        self._timer = asyncio.get_running_loop().call_later(hold, self.end)

    def working(self) -> None:
        """The hub, not the peer, is what the connection waits for now (its hello is in):
        the turn lasts until the hello is answered, however long the hub takes. Otherwise
        a hub too slow to answer within ``hold`` would let ever more connections in."""
        self._timer.cancel()

    def end(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None
            self._timer.cancel()


def hello_received(connection: Any) -> None:
    """The connection said hello: its turn no longer times out (:meth:`Turn.working`)."""
    turn = getattr(connection, "turn", None)
    if turn is not None:
        turn.working()


def greeted(connection: Any) -> None:
    """The edge server answered this connection's hello (or refused it): the next one's turn."""
    turn = getattr(connection, "turn", None)
    if turn is not None:
        turn.end()


class Intake:
    """The edge port's accept loop, letting ``limit`` connections handshake at a time."""

    def __init__(
        self, limit: int = DEFAULT_LIMIT, hold: float = HOLD, timeout: float = 10.0
    ) -> None:
        self.limit = limit
        self.hold = hold
        self.timeout = timeout
        self._turns = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()
        #: Connections in their turn: handshaking, or waiting for the hello's answer.
        self.in_turn = 0
        #: Connections with something to say, waiting for their turn.
        self.waiting = 0
        #: Connections dropped because their client left while they waited.
        self.abandoned = 0
        #: Connections that said nothing, or waited too long, and were dropped.
        self.timeouts = 0

    async def start(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[Turn], asyncio.Protocol],
        tls: ssl.SSLContext | None,
    ) -> IntakeServer:
        """Accept connections on ``sock`` from now on, until the server returned is closed."""
        server = IntakeServer(self, sock, protocol_factory, tls)
        await server.start_serving()
        return server

    async def serve(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[Turn], asyncio.Protocol],
        tls: ssl.SSLContext | None,
    ) -> None:
        """Accept connections on ``sock`` until cancelled; then drop those still waiting."""
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        try:
            while True:
                try:
                    conn, _ = await loop.sock_accept(sock)
                except OSError as exc:  # out of descriptors, or a connection reset in the queue
                    log.warning("edge port: accepting failed (%s); retrying", exc.strerror)
                    await asyncio.sleep(ACCEPT_RETRY)
                    continue
                task = loop.create_task(self._admit(conn, protocol_factory, tls))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def _admit(
        self,
        conn: socket.socket,
        protocol_factory: Callable[[Turn], asyncio.Protocol],
        tls: ssl.SSLContext | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        try:
            if not await self._take_turn(loop, conn):
                conn.close()
                return
        except asyncio.CancelledError:
            conn.close()
            raise
        self.in_turn += 1
        turn = Turn(self._end_turn, self.hold)
        try:
            await loop.connect_accepted_socket(
                lambda: protocol_factory(turn),
                conn,
                ssl=tls,
                ssl_handshake_timeout=self.timeout if tls is not None else None,
                # as websockets' serve() sets it: its close time-out, at most 10 s
                ssl_shutdown_timeout=self.timeout if tls is not None else None,
            )
        except BaseException as exc:
            turn.end()
            conn.close()
            if not isinstance(exc, Exception):
                raise  # cancelled: the server stops
            log.debug("edge port: handshake failed: %r", exc)  # refused, timed out, reset

    def _end_turn(self) -> None:
        self.in_turn -= 1
        self._turns.release()

    async def _take_turn(self, loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bool:
        """Wait until ``conn`` has sent something and a turn is free; False to drop it."""
        try:
            async with asyncio.timeout(self.timeout):
                await _readable(loop, conn)
        except TimeoutError:
            self.timeouts += 1
            return False
        self.waiting += 1
        try:
            async with asyncio.timeout(QUEUE_TIMEOUTS * self.timeout):
                await self._turns.acquire()
        except TimeoutError:
            self.timeouts += 1
            return False
        finally:
            self.waiting -= 1
        if _peer_gone(conn):
            self._turns.release()
            self.abandoned += 1
            return False
        return True


class IntakeServer(asyncio.AbstractServer):
    """An :class:`asyncio.Server` whose accepting is an :class:`Intake`'s: what websockets'
    ``Server`` drives (it closes it, and asks whether it still serves)."""

    def __init__(
        self,
        intake: Intake,
        sock: socket.socket,
        protocol_factory: Callable[[Turn], asyncio.Protocol],
        tls: ssl.SSLContext | None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._serve = lambda: intake.serve(sock, protocol_factory, tls)
        self._sock: socket.socket | None = sock
        self._task: asyncio.Task[None] | None = None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._sock is None else (self._sock,)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._task is not None and self._sock is not None

    async def start_serving(self) -> None:
        if self._task is None and self._sock is not None:
            self._task = self._loop.create_task(self._serve())

    async def serve_forever(self) -> None:
        await self.start_serving()
        assert self._task is not None
        await self._task

    def close(self) -> None:
        """Stop accepting; connections still waiting for their turn are dropped."""
        if self._task is not None:
            self._task.cancel()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    ready = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())


def _peer_gone(conn: socket.socket) -> bool:
    """Whether the client closed or reset the connection (data it sent before is moot)."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | _GONE)
    with contextlib.suppress(OSError):
        return any(events & _GONE for _, events in poller.poll(0))
    return True
