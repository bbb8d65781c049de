"""The hub's listening sockets."""

from __future__ import annotations

import socket

import pytest

from cloudhub.transport import listen
from edgeward.errors import ConfigError


def test_accepted_connections_send_small_writes_at_once() -> None:
    """Connections to the hub have TCP_NODELAY: a response written in two parts is not held
    back ~40 ms waiting for the client's delayed ACK (asyncio sets it only on sockets it
    created itself)."""
    server = listen("127.0.0.1", 0)
    try:
        client = socket.create_connection(server.getsockname()[:2])
        accepted, _ = server.accept()
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        server.close()


def test_a_taken_port_is_a_one_line_error() -> None:
    server = listen("127.0.0.1", 0)
    try:
        port = server.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port)
    finally:
        server.close()
