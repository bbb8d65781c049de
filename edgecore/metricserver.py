"""The HTTP endpoint of edgecore's metrics: ``GET /metrics``, nothing else, bounded.

Any local process may connect, so every connection is bounded where it enters:
a request head of at most MAX_HEAD_BYTES, REQUEST_TIMEOUT seconds from accepting
a connection to its close (a client still connected then is cut off), MAX_CONNECTIONS
at once (more are closed at once, unanswered), and one request per connection (``Connection:
close``; Prometheus opens one per scrape). A request body is never read: what
follows the head is dropped as it arrives.

:func:`answer` (a request head → the response's bytes) is pure; :class:`_Connection`
is an asyncio protocol that only pumps bytes: no task per connection, and what a
client sends beyond the head is dropped, not buffered.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from edgecore.drops import Drops
from edgecore.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192
#: Seconds a client may stay connected, answer read included; then it is cut off.
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 4

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def answer(head: bytes, render: Callable[[], bytes]) -> bytes:
    """The whole response to a request whose head (up to the blank line) is ``head``."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[0].isalpha():
        return response(400, b"a request line is METHOD /path HTTP/1.x\n")
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target != b"/metrics":
        return response(404, b"metrics are at /metrics\n")
    if method != b"GET":
        return response(405, b"only GET\n", b"Allow: GET\r\n")
    return response(200, render(), f"Content-Type: {CONTENT_TYPE}\r\n".encode())


def response(status: int, body: bytes, headers: bytes = b"") -> bytes:
    if not headers:
        headers = b"Content-Type: text/plain; charset=utf-8\r\n"
    return (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n".encode()
        + headers
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


class MetricsServer:
    """Serves ``render()`` at ``GET /metrics`` on ``host:port`` until cancelled."""

    def __init__(
        self,
        host: str,
        port: int,
        render: Callable[[], bytes],
        timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.host, self.port = host, port
        self.render = render
        self.timeout = timeout
        self.max_connections = max_connections
        self.open: set[_Connection] = set()
        #: Connections closed unanswered, by reason (busy, timeout, too_large), for the log.
        self.refused = Drops(log)
        self._failures = Drops(log)

    async def run(self) -> None:
        """Listen and serve; a port that cannot be had is logged, and edgecore runs on
        without metrics (a gateway's devices matter more than its graphs)."""
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: _Connection(self), self.host, self.port, reuse_address=True
            )
        except OSError as exc:
            # asyncio's message repeats the address: the system's words are enough
            why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            log.error(
                "metrics: cannot listen on %s: %s; edgecore runs on without metrics",
                self.where(),
                why,
            )
            return
        self.port = server.sockets[0].getsockname()[1]
        log.info("metrics: serving http://%s/metrics", self.where())
        try:
            await server.serve_forever()  # closes the server when cancelled
        finally:
            for conn in list(self.open):
                conn.abort()

    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def respond(self, head: bytes) -> bytes:
        try:
            return answer(head, self.render)
        except Exception as exc:  # a bug in a reading: the scrape fails, edgecore goes on
            self._failures.add("render", f"metrics: could not render them: {exc!r}")
            return response(500, b"the metrics could not be rendered; see edgecore's log\n")


class _Connection(asyncio.Protocol):
    """One client: its request head, at most MAX_HEAD_BYTES, then one answer."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.answered = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        if len(server.open) >= server.max_connections:
            server.refused.add(
                "busy",
                f"metrics: refused a connection: {server.max_connections} are open already",
            )
            transport.abort()
            return
        server.open.add(self)
        self._timer = asyncio.get_running_loop().call_later(server.timeout, self._expired)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # a body, or a second request: never read
        self.head += data
        end = _end_of_head(self.head)
        if end >= 0:
            self._answer(self.server.respond(bytes(self.head[:end])))
        elif len(self.head) > MAX_HEAD_BYTES:
            self.server.refused.add(
                "too_large", f"metrics: refused a request head of more than {MAX_HEAD_BYTES} bytes"
            )
            self._answer(response(431, b"request head too large\n"))

    def eof_received(self) -> bool:
        return False  # the client is done, or cut its request short (no answer): close

    def _answer(self, data: bytes) -> None:
        """Write the answer and end our side; what the client still sends is read and
        dropped until it closes (or the timer cuts it off): closing with its bytes unread
        would reset the connection, and the reset can destroy the answer before it is read
        (a lingering close, as web servers do after an error)."""
        assert self.transport is not None
        self.answered = True
        self.head = bytearray()
        self.transport.write(data)
        self.transport.write_eof()

    def _expired(self) -> None:
        self.server.refused.add(
            "timeout",
            f"metrics: cut off a client that took more than {self.server.timeout:g}s",
        )
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.server.open.discard(self)


def _end_of_head(data: bytearray) -> int:
    """Where the head ends (before its blank line), or -1; bare LF line ends are accepted."""
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    found = [i for i in (crlf, lf) if i >= 0]
    return min(found) if found else -1
