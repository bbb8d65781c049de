"""The edge port lets a limited number of connections through their handshake at once
(cloudhub/intake.py), against a real cloudhub process."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from cloudhub.intake import HOLD
from tests.integration.test_edge_endpoint import hello, open_ws
from tests.integration.test_hostile_crowds import UPGRADE, edge_counters
from tests.support.procs import Hub, wait_for


@pytest.fixture
def hub(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Hub]:
    h = Hub(tmp_path / "hub", "--edge-handshake-limit", str(request.param))
    h.start()
    try:
        yield h
    finally:
        h.kill()


def upgrading(hub: Hub, stack: ExitStack) -> socket.socket:
    """A connection that has asked for the websocket (and will never say hello)."""
    sock = stack.enter_context(socket.create_connection(("127.0.0.1", hub.edge_port)))
    sock.sendall(UPGRADE)
    return sock


def answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096)
    except TimeoutError:
        return b""


@pytest.mark.parametrize("hub", [2], indirect=True)
def test_connections_beyond_the_limit_wait_their_turn(hub: Hub) -> None:
    """Two connections in their handshake take both turns; a third waits, unanswered and
    counted as waiting, until a turn ends (here: held for HOLD seconds by a peer that never
    says hello), and is then served."""
    with ExitStack() as stack:
        stalled = [upgrading(hub, stack) for _ in range(2)]
        for sock in stalled:
            assert answer(sock, 5).startswith(b"HTTP/1.1 101")
        third = upgrading(hub, stack)
        assert answer(third, 1) == b"", "a third connection was let through at once"
        edge = edge_counters(hub)
        assert (edge["handshaking"], edge["waitingToHandshake"]) == (2, 1), edge
        assert answer(third, HOLD + 5).startswith(b"HTTP/1.1 101")


@pytest.mark.parametrize("hub", [1], indirect=True)
def test_silent_connections_take_no_turn(hub: Hub) -> None:
    """Connections that say nothing cost no work, so they wait outside the queue: a node
    connects past fifty of them with a single turn."""
    with ExitStack() as stack:
        for _ in range(50):
            stack.enter_context(socket.create_connection(("127.0.0.1", hub.edge_port)))
        ws = open_ws(hub)
        try:
            assert hello(ws, "edge-a")["type"] == "welcome"
        finally:
            ws.close()
        assert edge_counters(hub)["waitingToHandshake"] == 0


@pytest.mark.parametrize("hub", [1], indirect=True)
def test_a_connection_whose_client_left_while_waiting_is_dropped_unread(hub: Hub) -> None:
    """A client that gave up while it waited gets no handshake nobody would finish: it is
    dropped when its turn comes, counted as abandoned, and the next one is served."""
    with ExitStack() as stack:
        holder = upgrading(hub, stack)
        assert answer(holder, 5).startswith(b"HTTP/1.1 101")
        with socket.create_connection(("127.0.0.1", hub.edge_port)) as gone:
            gone.sendall(UPGRADE)
            wait_for(lambda: edge_counters(hub)["waitingToHandshake"] == 1, 5, "it to wait")
        ws = open_ws(hub)  # waits behind both, up to HOLD seconds
        try:
            assert hello(ws, "edge-a")["type"] == "welcome"
        finally:
            ws.close()
        edge = edge_counters(hub)
        assert edge["abandonedWaiting"] == 1, edge


@pytest.mark.parametrize("hub", [1], indirect=True)
def test_a_hello_the_hub_is_slow_to_answer_keeps_its_turn(hub: Hub, tmp_path: Path) -> None:
    """Once a connection's hello is in, the wait is the hub's: its turn does not time out,
    so a hub too slow to answer (here: its database held by another writer) does not let
    more connections in than it can answer."""
    with ExitStack() as stack:
        holder = stack.enter_context(sqlite3.connect(tmp_path / "hub" / "hub.db", timeout=30))
        holder.execute("BEGIN IMMEDIATE")  # the hub's writes wait for this
        first = stack.enter_context(socket.create_connection(("127.0.0.1", hub.edge_port)))
        first.sendall(UPGRADE)
        assert answer(first, 5).startswith(b"HTTP/1.1 101")
        first.sendall(
            masked_text(
                json.dumps({"type": "hello", "node": "edge-a", "revision": 0, "protocol": 1})
            )
        )
        second = upgrading(hub, stack)
        assert answer(second, HOLD + 2) == b"", "a hello's turn timed out while the hub worked"
        holder.rollback()
        assert answer(second, 10).startswith(b"HTTP/1.1 101")
        assert b"welcome" in answer(first, 10)


def masked_text(text: str) -> bytes:
    """One websocket text frame as a client sends it (masked, with a zero mask)."""
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def test_the_handshake_timeout_is_a_setting(tmp_path: Path) -> None:
    """edge_handshake_timeout bounds each step of coming in: a connection that says nothing
    and a websocket that never says hello are both cut off and counted after it, well
    before the 10 s default."""
    hub = Hub(tmp_path / "hub", "--edge-handshake-timeout", "1")
    hub.start()
    try:
        with ExitStack() as stack:
            stack.enter_context(socket.create_connection(("127.0.0.1", hub.edge_port)))
            no_hello = upgrading(hub, stack)
            assert answer(no_hello, 5).startswith(b"HTTP/1.1 101")

            def cut_off() -> bool:
                edge = edge_counters(hub)
                return (edge["handshakeTimeouts"], edge["helloTimeouts"]) == (1, 1)

            wait_for(cut_off, 5, "both to be cut off after the configured second")
    finally:
        hub.kill()


def test_a_connection_that_waits_too_long_for_its_turn_is_dropped(tmp_path: Path) -> None:
    """Behind peers that each hold the only turn until their upgrade times out, a connection
    that waits three handshake timeouts is dropped unanswered and counted, like every
    staller before it."""
    hub = Hub(tmp_path / "hub", "--edge-handshake-limit", "1", "--edge-handshake-timeout", "1")
    hub.start()

    def staller(stack: ExitStack) -> None:  # an upgrade never finished: holds a turn 1 s
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", hub.edge_port)))
        sock.sendall(b"GET / HTTP/1.1\r\n")

    try:
        with ExitStack() as stack:
            for _ in range(3):  # their turns end at about 1, 2 and 3 s
                staller(stack)
            time.sleep(0.5)
            # queued until 3.5 s: when the third turn ends this one is still waiting ahead
            # of the latecomer, and takes the turn past the latecomer's 3 s in the queue
            staller(stack)
            late = upgrading(hub, stack)
            late.settimeout(15)
            try:
                got = late.recv(4096)
            except ConnectionResetError:  # closed with its request unread
                got = b""
            assert got == b"", f"served after waiting past three time-outs: {got[:40]!r}"
            wait_for(
                lambda: edge_counters(hub)["handshakeTimeouts"] == 5,
                5,
                "every connection to be counted as timed out",
            )
    finally:
        hub.kill()
