"""Hostile local clients of edgecore's metrics port (edgecore/metricserver.py): malformed,
oversized and slow requests and a crowd of idle connections are answered or cut off, and
neither hang edgecore nor stop it answering the next scrape.

In tests/conftest.py SERIAL: the connection cap is seen only while the idle connections
are younger than the 5 s a client may stay, which a loaded machine could stretch."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from edgecore.metricserver import MAX_CONNECTIONS, MAX_HEAD_BYTES, REQUEST_TIMEOUT
from tests.integration.test_edge_metrics import registered, scrape
from tests.support.postgres import free_port
from tests.support.procs import Edge, Hub, wait_for

#: Long enough that only a server that never cuts a client off makes a test wait it out.
PATIENCE = REQUEST_TIMEOUT * 6


@pytest.fixture
def metrics(hub: Hub, start_edge: Any) -> Iterator[tuple[Edge, int]]:
    port = free_port()
    edge = start_edge("edge-h", "--metrics-listen", str(port))
    wait_for(lambda: registered(hub, "edge-h"), 30, "the edge to register")
    wait_for(lambda: scrape(port), 30, "the metrics to be served")
    yield edge, port


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset counts as a close)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def exchange(port: int, request: bytes) -> bytes:
    with connect(port) as sock:
        sock.sendall(request)
        return read_all(sock)


def test_malformed_requests_get_an_error_and_a_close(metrics: tuple[Edge, int]) -> None:
    edge, port = metrics
    cases = [
        (b"BLAH\r\n\r\n", b"HTTP/1.1 400 "),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(20) + b"\n\n", b"HTTP/1.1 400 "),
        (b"GET /metrics HTTP/9\r\n\r\n", b"HTTP/1.1 400 "),
        (b"GET /../etc/passwd HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 "),
        (b"DELETE /metrics HTTP/1.1\r\n\r\n", b"HTTP/1.1 405 "),
        # a body is never read: the answer comes at the head's end, and the rest is dropped
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000,
         b"HTTP/1.1 405 "),
        (b"GET /metrics HTTP/1.1\n\n", b"HTTP/1.1 200 "),  # bare LF ends a head too
    ]  # fmt: skip
    for request, status in cases:
        reply = exchange(port, request)
        assert reply.startswith(status), (request[:40], reply[:200])
        assert b"\r\nConnection: close\r\n" in reply
    assert scrape(port) and edge.running


def test_an_oversized_head_is_refused_without_being_kept(metrics: tuple[Edge, int]) -> None:
    """Headers without end: 431 once MAX_HEAD_BYTES are passed; what the client keeps
    sending (here 4 MiB) is read and dropped, so it neither grows edgecore nor resets the
    answer away."""
    edge, port = metrics
    rss_before = edge_rss(edge)
    with connect(port) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Filler: " + b"a" * (MAX_HEAD_BYTES * 2))
        sock.sendall(b"b" * (4 * 2**20))
        sock.shutdown(socket.SHUT_WR)
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    assert edge_rss(edge) - rss_before < 2 * 2**20
    assert scrape(port) and edge.running
    wait_for(lambda: "refused a request head of more than 8192 bytes" in edge.log(), 10, "a line")


def test_a_slow_client_is_cut_off(metrics: tuple[Edge, int]) -> None:
    """A request head that never ends, and a client that never reads its answer nor closes:
    both are closed by edgecore, unanswered or answered, after REQUEST_TIMEOUT."""
    edge, port = metrics
    with connect(port) as stalled, connect(port) as lingering:
        stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        lingering.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")  # read, but never closed
        assert read_all(stalled) == b""
        assert read_all(lingering).startswith(b"HTTP/1.1 200 ")
    wait_for(lambda: "cut off a client that took more than 5s" in edge.log(), 10, "a line")
    assert scrape(port)


def test_past_the_connection_cap_more_are_closed_and_scrapes_come_back(
    metrics: tuple[Edge, int],
) -> None:
    edge, port = metrics
    idle = [connect(port) for _ in range(MAX_CONNECTIONS)]
    try:
        with connect(port) as extra:
            extra.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            assert read_all(extra) == b"", "a connection past the cap was served"
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: scrape(port), 30, "scrapes to be served again")
    assert "metrics: refused a connection: 4 are open already" in edge.log()
    assert edge.running


def edge_rss(edge: Edge) -> int:
    import psutil

    assert edge.proc is not None
    return int(psutil.Process(edge.proc.pid).memory_info().rss)
