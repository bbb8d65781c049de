"""The chaos suite's fault proxy models what networks do: a blackholed link never passes a
byte again (TCP never delivers a stream with a hole in it), while new links pass."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.support.faultproxy import FaultProxy


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1024):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fault_proxy = FaultProxy("127.0.0.1", server.server_address[1])
    try:
        yield fault_proxy
    finally:
        fault_proxy.close()
        server.shutdown()
        server.server_close()


def echoed(conn: socket.socket, data: bytes) -> bytes:
    conn.sendall(data)
    try:
        return conn.recv(1024)
    except TimeoutError:
        return b""


def test_a_blackholed_link_stays_dead_after_the_fault_ends(proxy: FaultProxy) -> None:
    conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5)
    with conn:
        assert echoed(conn, b"before") == b"before"
        proxy.set("blackhole", new=False)
        assert echoed(conn, b"lost") == b""
        proxy.set("pass")
        assert echoed(conn, b"after") == b"", "bytes after a hole would be a stream no TCP gives"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as fresh:
        assert echoed(fresh, b"new link") == b"new link"


def test_a_delayed_link_passes_everything_in_order(proxy: FaultProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as conn:
        proxy.set("delay", delay=0.05)
        assert echoed(conn, b"slow") == b"slow"
        proxy.set("pass")
        assert echoed(conn, b"fast") == b"fast"
