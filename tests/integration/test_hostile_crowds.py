"""Crowds of connections that never finish, against a real secure cloudhub.

Hundreds of peers open the edge port and then say nothing: some never start TLS,
some finish TLS but never ask for the websocket, some open the websocket but never
say hello. The hub must cut each off after its handshake or hello time-out (set to
TIMEOUT seconds here, 10 by default), count them in /healthz, and meanwhile serve a real
edgecore that joins and syncs.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.nodecerts import NodeCert, join
from tests.support.procs import Edge, Hub, wait_for

NS = "/api/v1/namespaces/default"
#: Silent plain TCP connections (never start TLS), TLS connections that never ask for the
#: websocket, and websockets that never say hello.
PLAIN, TLS_ONLY, NO_HELLO = 300, 100, 100
#: The hub's edge_handshake_timeout: each step's time-out, long enough for the latecomer to
#: join and sync while the crowd hangs.
TIMEOUT = 6
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def raise_nofile(wanted: int) -> None:
    """Let this process (and the hub it starts) hold ``wanted`` open files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < wanted:
        pytest.skip(f"this test needs {wanted} open files; the hard limit is {hard}")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    raise_nofile(2 * (PLAIN + TLS_ONLY + NO_HELLO) + 512)
    h = Hub(tmp_path / "hub", "--edge-handshake-timeout", str(TIMEOUT), secure=True)
    h.start()
    try:
        yield h
    finally:
        h.kill()


def edge_counters(hub: Hub) -> dict[str, int]:
    status, body = hub.request("GET", "/healthz")
    assert status == 200, body
    return body["edge"]


def tls(hub: Hub, cred: NodeCert) -> ssl.SSLSocket:
    """A TLS connection to the edge port with a valid node certificate."""
    raw = socket.create_connection(("127.0.0.1", hub.edge_port), timeout=10)
    return cred.context().wrap_socket(raw, server_hostname="127.0.0.1")


def websocket(hub: Hub, cred: NodeCert) -> ssl.SSLSocket:
    """A websocket the hub has accepted (101), on which nothing more is ever sent."""
    sock = tls(hub, cred)
    sock.sendall(UPGRADE)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        assert chunk, f"the hub closed the upgrade: {answer!r}"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 101"), answer[:200]
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the hub has closed ``sock`` (read without waiting: EOF or an error)."""
    sock.setblocking(False)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True


class Silent:
    """A websocket that never says hello, and what the hub sent on it."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.data = b""
        sock.setblocking(False)

    def frames(self) -> list[tuple[int, bytes]]:
        """(opcode, payload) of each whole frame received so far (the hub's are unmasked)."""
        with contextlib.suppress(BlockingIOError, ssl.SSLWantReadError, OSError):
            while chunk := self.sock.recv(65536):
                self.data += chunk
        out, i, data = [], 0, self.data
        while i + 2 <= len(data):
            opcode, length, i = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
            if length >= 126:
                width = 2 if length == 126 else 8
                length, i = int.from_bytes(data[i : i + width], "big"), i + width
            if i + length > len(data):
                break
            out.append((opcode, data[i : i + length]))
            i += length
        return out

    def close_code(self) -> int | None:
        """The code of the close frame the hub sent, once it has."""
        closes = [payload for opcode, payload in self.frames() if opcode == 0x8]
        return int.from_bytes(closes[0][:2], "big") if closes else None


def desired_target(edge: Edge, name: str) -> Any:
    obj = edge.cached().get(("default", name))
    return None if obj is None else obj["spec"]["properties"][0]["desired"]["value"]


def test_connections_that_never_finish_are_cut_off_counted_and_crowd_out_no_one(
    hub: Hub, tmp_path: Path
) -> None:
    """Connections that never finish TLS, never ask for the websocket or never say hello are
    each closed by the hub after its time-out and counted in /healthz (handshake and hello
    time-outs, not refusals); while they hang, a new node joins, connects and syncs."""
    squatter = join(hub, "squatter", tmp_path / "squatter")
    before = edge_counters(hub)
    crowd: list[socket.socket] = []
    try:
        crowd += [socket.create_connection(("127.0.0.1", hub.edge_port)) for _ in range(PLAIN)]
        crowd += [tls(hub, squatter) for _ in range(TLS_ONLY)]
        silent = [Silent(websocket(hub, squatter)) for _ in range(NO_HELLO)]
        unfinished = crowd[:]
        crowd += [s.sock for s in silent]

        # while they hang: a node joins, connects, is Ready and gets its device
        late = tmp_path / "latecomer"
        join(hub, "latecomer", late)
        device = {
            "metadata": {"name": "late-dev"},
            "spec": {
                "nodeName": "latecomer",
                "properties": [{"name": "t", "desired": {"value": "1"}}],
            },
        }
        assert hub.request("POST", f"{NS}/devices", device)[0] == 201
        edge = Edge(late, "latecomer", hub.edge, "--no-mqtt", "--status-interval", "0.5")
        edge.start()
        try:
            wait_for(lambda: desired_target(edge, "late-dev") == "1", 15, "the latecomer to sync")
            assert silent[-1].close_code() is None, "the crowd was gone before the latecomer came"

            wait_for(
                lambda: all(closed_by_peer(s) for s in unfinished),
                40,
                "the hub to drop every connection that never finished its handshake",
            )
            # the silent websockets are told why: an error frame, then a policy close (the
            # hub then waits websockets' close time-out for an answer that never comes)
            wait_for(
                lambda: all(s.close_code() == 1008 for s in silent),
                40,
                "the hub to close every websocket that never said hello",
            )
            for s in silent:
                (error,) = [json.loads(p) for opcode, p in s.frames() if opcode == 0x1]
                assert error["type"] == "error" and "no hello" in error["reason"], error
            after = edge_counters(hub)
            assert after["handshakeTimeouts"] - before["handshakeTimeouts"] == PLAIN + TLS_ONLY
            assert after["helloTimeouts"] - before["helloTimeouts"] == NO_HELLO
            assert after["refused"] == before["refused"]  # time-outs are not refusals
            assert after["sessions"] == 1  # the latecomer

            # and it is still served once the crowd is gone
            device["spec"]["properties"][0]["desired"]["value"] = "2"
            status, body = hub.request("PATCH", f"{NS}/devices/late-dev", {"spec": device["spec"]})
            assert status == 200, body
            wait_for(lambda: desired_target(edge, "late-dev") == "2", 15, "the next change")
            assert edge.running
        finally:
            edge.kill()
    finally:
        for sock in crowd:
            sock.close()
    assert "Traceback" not in hub.log()
