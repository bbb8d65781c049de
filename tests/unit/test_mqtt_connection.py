"""edgecore's paho driver (edgecore/mqttlink.py) against the order paho calls it in."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
from typing import Any

from edgecore.mqttlink import MqttConnection


class PahoCalls:
    """What MqttConnection uses of a paho client: the callbacks it sets, and the I/O calls
    the loop makes on it (counted)."""

    def __init__(self) -> None:
        self.writes = 0
        self.wrote = asyncio.Event()

    def loop_read(self) -> None:
        pass

    def loop_write(self) -> None:
        self.writes += 1
        self.wrote.set()
        self.on_socket_unregister_write(self, None, None)  # written: paho stops asking

    def loop_misc(self) -> int:
        return 0


def test_a_publish_before_paho_announces_its_socket_is_written_once_it_does() -> None:
    """paho's connect() (in a worker thread) holds its new socket a moment before calling
    on_socket_open; a publish on the loop in between asks to write. That must neither raise
    (it failed the publish, and with it the deltas of a change the edge had stored) nor be
    forgotten: the write happens once the socket is announced."""

    async def scenario() -> int:
        client: Any = PahoCalls()
        connection = MqttConnection(
            client, "127.0.0.1", 1883, 60, lambda: itertools.repeat(1.0), "publisher"
        )
        listener = socket.create_server(("127.0.0.1", 0))
        ours = socket.create_connection(listener.getsockname())
        broker, _ = listener.accept()
        listener.close()
        try:
            connection._on_register_write(client, None, ours)  # the publish, on the loop
            opened = threading.Thread(target=connection._on_socket_open, args=(client, None, ours))
            opened.start()
            opened.join()
            await asyncio.wait_for(client.wrote.wait(), 5)
            await asyncio.sleep(0.05)  # unregistered after the write: no more calls
            connection._on_socket_close(client, None, ours)
            connection._on_unregister_write(client, None, ours)  # closed: nothing to unwatch
            await asyncio.sleep(0)
            return client.writes
        finally:
            ours.close()
            broker.close()

    assert asyncio.run(scenario()) == 1
