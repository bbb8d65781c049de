"""Everything about how the hub's two ports are served, in one place.

With an :class:`~cloudhub.pki.Authority`, both ports speak TLS 1.2+ (the edge
port requires a client certificate from the hub's CA); without one (``--insecure``)
plain HTTP and websockets. Handshakes are bounded in time, so connections that
never finish TLS or never upgrade cost a socket for seconds, not forever, and
are counted (:class:`HandshakeWatch`, shown in ``/healthz``).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.server import ServerProtocol

from cloudhub.edgegate import EdgeGate
from cloudhub.intake import Intake, Turn
from cloudhub.pki import Authority
from edgeward import protocol
from edgeward.errors import ConfigError

log = logging.getLogger(__name__)

#: Seconds a client has to finish the TLS handshake, then the websocket upgrade.
HANDSHAKE_TIMEOUT = 10.0
#: Connections the kernel queues for each listener before the hub accepts them.
LISTEN_BACKLOG = 4096
#: Bytes asyncio reads from a TLS connection at a time.
TLS_READ_SIZE = 4 * 1024


def small_tls_buffers() -> None:
    """Have asyncio's TLS connections read 4 KiB at a time instead of 256 KiB.

    asyncio gives every TLS connection a zero-filled buffer of
    ``SSLProtocol.max_size`` (256 KiB), all of it resident — 2.5 GB for 10,000
    nodes — although a websockets connection never reads into it (it takes
    copies of at most that size). What nodes send the hub is small frames; a
    1 MiB request takes 256 reads of a few microseconds each. Measured per idle
    edge connection on the hub: 36 KiB for TLS at 4 KiB (OpenSSL's state ~20 KiB,
    the verified client certificate ~11 KiB), 48 KiB at 16 KiB, 292 KiB at 256 KiB
    (docs/performance.md).
    """
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_SIZE


def listen(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free port. ConfigError when the address is taken.

    TCP_NODELAY is set here because asyncio does not set it on connections accepted
    from a socket it did not create; Linux passes it on to accepted sockets. Without
    it a response written in two parts (uvicorn: headers, then body) waits ~40 ms
    for the peer's delayed ACK on every kept-alive request.

    The backlog is deep (Python's default is 128) so that a fleet reconnecting after a
    hub restart, or a crowd of connections that never finish their handshake, do not
    make the kernel drop honest nodes' connects; Linux caps it at net.core.somaxconn.
    """
    try:
        sock = socket.create_server((host, port), backlog=LISTEN_BACKLOG)
    except OSError as exc:
        raise ConfigError([f"cannot listen on {host}:{port}: {exc.strerror}"]) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def url(scheme: str, sock: socket.socket, connectable: bool = False) -> str:
    """The socket's address as a URL; ``connectable``: a wildcard address (every interface)
    as the loopback address, which clients on this machine can use and init's server
    certificate names."""
    host, port = sock.getsockname()[:2]
    if connectable and host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


class HandshakeWatch:
    """Counts edge connections cut off for not finishing their handshake in time, and TLS
    handshakes that failed.

    asyncio gives up on a TLS handshake after ``ssl_handshake_timeout`` and websockets
    on an HTTP upgrade after ``open_timeout``, both without a word. A hub held busy by
    connections that never finish should show it, so the edge endpoint reports here:

    - TLS: the context's ``sslobject_class`` (the object asyncio's TLS layer drives,
      made by ``SSLContext.wrap_bio``) starts a timer at its first handshake step and
      stops it when the handshake ends, done or failed. One still running after
      ``timeout`` belongs to a connection asyncio has just aborted (its own timer,
      started a moment earlier with the same delay, fired first).
    - The upgrade: the connection class counts its opening handshake being cancelled,
      which only websockets' ``open_timeout`` does (a stopping server answers 503).
    """

    def __init__(self, timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.timeout = timeout
        self.timeouts = 0
        #: TLS handshakes the hub's side refused: no client certificate, one from another
        #: CA, a protocol version or cipher it does not speak, bytes that are not TLS.
        self.failures = 0

    def watch_tls(self, context: ssl.SSLContext) -> ssl.SSLContext:
        """``context``, counting the TLS handshakes that time out or fail."""
        context.sslobject_class = _watched_tls(self)
        return context

    def connection_class(self) -> type[ServerConnection]:
        """The websocket connection class, counting upgrades that time out."""
        watch = self

        class WatchedConnection(ServerConnection):
            #: Its place among connections in their handshake (cloudhub/intake.py).
            turn: Turn | None = None

            def connection_lost(self, exc: Exception | None) -> None:
                if self.turn is not None:
                    self.turn.end()
                super().connection_lost(exc)

            async def handshake(self, *args: Any, **kwargs: Any) -> None:
                try:
                    await super().handshake(*args, **kwargs)
                except asyncio.CancelledError:
                    watch.timeouts += 1
                    raise

            #: When the peer last sent anything (loop time).
            heard = 0.0

            def data_received(self, data: bytes) -> None:
                self.heard = self.loop.time()
                super().data_received(data)

            async def keepalive(self) -> None:
                await keepalive_when_silent(self)

        return WatchedConnection


async def keepalive_when_silent(ws: Any) -> None:
    """websockets' keepalive, except that only a link silent for a whole ping interval
    is pinged: anything the peer sends (its own pings, reports, acks) shows the link
    passes packets. Edges ping the hub on their own, so a healthy link seldom needs the
    hub's pings (only when an edge's ping comes late), which with the edges' own were
    ~40% of an idle hub's CPU (docs/performance.md). A link that stops passing packets is
    still pinged, and closed when no pong comes within the timeout, as before. ``ws`` is a
    WatchedConnection."""
    interval, timeout = ws.ping_interval, ws.ping_timeout
    try:
        while True:
            quiet = ws.loop.time() - ws.heard
            if quiet < interval:
                await asyncio.sleep(interval - quiet)
                continue
            pong = await ws.ping()
            try:
                async with asyncio.timeout(timeout):
                    await pong
            except TimeoutError:
                # as websockets does it: fail the connection (close frame, then TCP close)
                async with ws.send_context():
                    ws.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                return
    except ConnectionClosed:
        return
    except Exception:
        log.error("keepalive ping failed", exc_info=True)


def _watched_tls(watch: HandshakeWatch) -> type[ssl.SSLObject]:
    class WatchedTls(ssl.SSLObject):
        _timer: asyncio.TimerHandle | None = None
        _started = False

        def do_handshake(self) -> None:
            if not self._started:
                self._started = True
                self._timer = asyncio.get_running_loop().call_later(watch.timeout, self._timed_out)
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise  # under way: asyncio calls again when the peer sends more
            except BaseException as exc:
                self._stop()
                if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
                    watch.failures += 1  # a peer that hung up mid-way was not refused
                raise
            self._stop()

        def _stop(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self) -> None:
            self._timer = None
            watch.timeouts += 1

    return WatchedTls


def edge_endpoint(
    handler: Callable[[ServerConnection], Awaitable[None]],
    sock: socket.socket,
    authority: Authority | None = None,
    gate: EdgeGate | None = None,
    watch: HandshakeWatch | None = None,
    ping: tuple[float, float] = (20.0, 20.0),
    intake: Intake | None = None,
) -> Server:
    """The websocket server edges connect to (an async context manager yielding itself).

    No permessage-deflate: frames are small JSON, and compression costs memory
    per connection on the hub and CPU on small gateways. ``ping``: the keepalive's
    interval and timeout, in seconds. Connections reach their handshake through
    ``intake``, a limited number at a time (cloudhub/intake.py).
    """
    watch = watch or HandshakeWatch()
    intake = intake or Intake(timeout=watch.timeout)
    tls = None
    if authority is not None:
        small_tls_buffers()
        tls = watch.watch_tls(authority.edge_context())
    connection_class = watch.connection_class()
    options: dict[str, Any] = {
        "ping_interval": ping[0],
        "ping_timeout": ping[1],
        # a link found dead by its pings cannot carry the close handshake either
        "close_timeout": min(ping[1], 10.0),
    }
    server = ws_serve(
        handler,
        max_size=protocol.MAX_FRAME_BYTES,
        compression=None,
        open_timeout=watch.timeout,
        process_request=None if gate is None else gate.process_request,
        create_connection=connection_class,
        **options,
    )

    def connection(turn: Turn) -> ServerConnection:
        # as websockets' serve() makes them: it does not accept connections here, the intake does
        ws = connection_class(ServerProtocol(max_size=protocol.MAX_FRAME_BYTES), server, **options)
        ws.turn = turn
        return ws

    async def accepting() -> Any:
        return await intake.start(sock, connection, tls)

    server.create_server = accepting
    return server


class _Config(uvicorn.Config):
    def __init__(self, app: Any, tls: ssl.SSLContext | None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._tls = tls

    def load(self) -> None:
        super().load()
        if self._tls is not None:
            self.ssl = self._tls  # the hub's own context: TLS 1.2+, its server certificate


class _ApiServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The hub's supervisor owns SIGTERM/SIGINT and stops every part in order.
        yield


def api_server(app: Any, authority: Authority | None = None) -> uvicorn.Server:
    """The REST API's server; run it with ``await server.serve(sockets=[sock])``."""
    return _ApiServer(
        _Config(
            app,
            None if authority is None else authority.api_context(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
    )
