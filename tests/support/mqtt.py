"""A bare paho client playing a mapper (or any MQTT app) in tests."""

from __future__ import annotations

import json
import queue
import socket
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from tests.support.mosquitto import Mosquitto


class FakeMapper:
    """Subscribes to topic filters and collects what arrives; publishes JSON at QoS 1."""

    def __init__(self, broker: Mosquitto, *filters: str) -> None:
        self.messages: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"fake-mapper-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_message = self._on_message
        self.client.on_socket_open = lambda c, u, s: s.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        subscribed = queue.Queue()
        self.client.on_subscribe = lambda *args: subscribed.put(True)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if filters:
            self.client.subscribe([(f, 1) for f in filters])
            subscribed.get(timeout=10)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body: Any = json.loads(msg.payload)
        except ValueError:
            body = msg.payload
        self.messages.put((msg.topic, body))

    def publish(self, topic: str, body: Any) -> None:
        payload = body if isinstance(body, bytes | str) else json.dumps(body)
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def expect(self, topic: str, timeout: float = 10, where: Any = None) -> Any:
        """The next message on ``topic`` (matching ``where(body)`` if given); others are kept."""
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no message on {topic} within {timeout}s; saw {skipped}")
                try:
                    got_topic, body = self.messages.get(timeout=left)
                except queue.Empty:
                    continue
                if got_topic == topic and (where is None or where(body)):
                    return body
                skipped.append((got_topic, body))
        finally:
            for item in skipped:
                self.messages.put(item)

    def drain(self) -> list[tuple[str, Any]]:
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
