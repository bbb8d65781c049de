"""Everything about how the hub's two ports are served, in one place.

Plain HTTP and websockets for now; TLS with client certificates (the
security issue) changes this module and the edge's ``edgecore/transport.py``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from edgeward import protocol
from edgeward.errors import ConfigError


def listen(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free port. ConfigError when the address is taken.

    TCP_NODELAY is set here because asyncio does not set it on connections accepted
    from a socket it did not create; Linux passes it on to accepted sockets. Without
    it a response written in two parts (uvicorn: headers, then body) waits ~40 ms
    for the peer's delayed ACK on every kept-alive request.
    """
    try:
        sock = socket.create_server((host, port))
    except OSError as exc:
        raise ConfigError([f"cannot listen on {host}:{port}: {exc.strerror}"]) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def url(scheme: str, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://{host}:{port}"


def edge_endpoint(
    handler: Callable[[ServerConnection], Awaitable[None]], sock: socket.socket
) -> Any:
    """The websocket server edges connect to (an async context manager yielding a Server).

    No permessage-deflate: frames are small JSON, and compression costs memory
    per connection on the hub and CPU on small gateways.
    """
    return ws_serve(handler, sock=sock, max_size=protocol.MAX_FRAME_BYTES, compression=None)


class _ApiServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The hub's supervisor owns SIGTERM/SIGINT and stops every part in order.
        yield


def api_server(app: Any) -> uvicorn.Server:
    """The REST API's server; run it with ``await server.serve(sockets=[sock])``."""
    return _ApiServer(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
    )
