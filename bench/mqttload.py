"""MQTT load with bare paho: a request/reply driver, an echo responder and a counting sink.

Every client sets TCP_NODELAY on its socket and uses QoS 1, like a mapper
talking to edgecore. The driver is callback-driven on paho's network thread
(no hand-off between threads per message), so the same code measures the
baseline (an echo client) and edgecore.

Run as ``python -m bench.mqttload echo HOST PORT`` or ``… sink HOST PORT TOPIC``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

ECHO_FILTER = "bench/echo/+/req"


def echo_channel(i: int) -> tuple[str, str]:
    return f"bench/echo/{i}/req", f"bench/echo/{i}/resp"


def client(name: str, inflight: int = 1000) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}")
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    c.on_socket_open = lambda _c, _u, s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


@dataclass
class DriverResult:
    replies: int
    seconds: float
    latencies: list[float]  # seconds
    first_reply: Any = None
    sent: int = 0

    @property
    def rate(self) -> float:
        return self.replies / self.seconds if self.seconds else 0.0


@dataclass
class RequestDriver:
    """Keeps ``depth`` requests in flight on each channel (request topic, reply topic).

    ``payload(channel, n)`` builds the n-th request of a channel. Replies on a
    channel are taken in order (MQTT keeps a publisher's order per topic).
    """

    host: str
    port: int
    channels: list[tuple[str, str]]
    payload: Callable[[int, int], bytes]
    depth: int = 1
    qos: int = 1
    _sent: list[deque[float]] = field(default_factory=list, init=False)
    _by_reply: dict[str, int] = field(default_factory=dict, init=False)

    def run(self, seconds: float, warmup: float) -> DriverResult:
        self._sent = [deque() for _ in self.channels]
        self._by_reply = {reply: i for i, (_, reply) in enumerate(self.channels)}
        counters = {"n": 0, "replies": 0, "sent": 0}
        latencies: list[float] = []
        state = {"running": True, "recording": False, "first": None}
        ready = threading.Event()
        c = client("bench-driver", inflight=len(self.channels) * self.depth + 16)

        def send(ch: int) -> None:
            counters["n"] += 1
            self._sent[ch].append(time.perf_counter())
            c.publish(self.channels[ch][0], self.payload(ch, counters["n"]), qos=self.qos)

        def on_connect(cl: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            cl.subscribe([(reply, 1) for _, reply in self.channels])

        def on_subscribe(*_args: Any) -> None:
            for ch in range(len(self.channels)):
                for _ in range(self.depth):
                    send(ch)
            ready.set()

        def on_message(_cl: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            ch = self._by_reply.get(msg.topic)
            if ch is None or not self._sent[ch]:
                return
            began = self._sent[ch].popleft()
            if state["first"] is None:
                state["first"] = msg.payload
            if state["recording"]:
                latencies.append(time.perf_counter() - began)
                counters["replies"] += 1
            if state["running"]:
                send(ch)

        c.on_connect = on_connect
        c.on_subscribe = on_subscribe
        c.on_message = on_message
        c.connect(self.host, self.port)
        c.loop_start()
        try:
            if not ready.wait(10):
                raise RuntimeError("the MQTT driver could not subscribe")
            time.sleep(warmup)
            state["recording"] = True
            start = time.perf_counter()
            time.sleep(seconds)
            state["recording"] = False
            elapsed = time.perf_counter() - start
            state["running"] = False
            replies = counters["replies"]
            time.sleep(0.2)
        finally:
            c.loop_stop()
            c.disconnect()
        first = state["first"]
        with contextlib.suppress(ValueError):
            first = json.loads(first) if first is not None else None
        return DriverResult(replies, elapsed, latencies, first, counters["n"])


def publish_rate(host: str, port: int, topic: str, window: int, seconds: float) -> float:
    """Publish QoS 1 as fast as the broker acknowledges, ``window`` unacknowledged at once.

    Returns messages/s handed to the broker (the sink measures what came out).
    """
    c = client("bench-publisher", inflight=window + 16)
    payload = b'{"event_id":"e","timestamp":0,"twin":{"temperature":{"actual":{"value":"1"}}}}'
    state = {"running": True, "acked": 0}

    def on_publish(cl: mqtt.Client, *_a: Any) -> None:
        state["acked"] += 1
        if state["running"]:
            cl.publish(topic, payload, qos=1)

    done = threading.Event()
    c.on_publish = on_publish
    c.on_connect = lambda cl, *_a: [cl.publish(topic, payload, qos=1) for _ in range(window)]
    c.connect(host, port)
    c.loop_start()
    start = time.perf_counter()
    done.wait(seconds)
    state["running"] = False
    acked = state["acked"]
    elapsed = time.perf_counter() - start
    time.sleep(0.2)
    c.loop_stop()
    c.disconnect()
    return acked / elapsed


DEVICE_TOPIC = "$hw/events/device/"
DELTA = "/twin/update/delta"


class DeltaWatch:
    """Mappers awaiting a desired value: when each device's ``…/twin/update/delta`` first has it.

    ``devices`` are device ids (``<namespace>/<name>``). The client subscribes to
    each device's delta topic, or to ``filters`` when given (deltas of other
    devices are then ignored). ``expect(value)`` starts the watch: from then on
    the first delta of a device whose ``delta[prop]`` is ``value`` is timed
    (``time.monotonic()``, on paho's thread as it arrives) and, with ``reply``,
    answered as a mapper does once it has applied the value: a ``twin/update``
    reporting it as the actual value.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        devices: list[str],
        prop: str = "temperature",
        filters: tuple[str, ...] = (),
        reply: bool = False,
    ) -> None:
        self.devices = frozenset(devices)
        self.prop = prop
        self.reply = reply
        self._value: str | None = None
        self._arrived: dict[str, float] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        wanted = filters or tuple(f"{DEVICE_TOPIC}{d}{DELTA}" for d in sorted(self.devices))
        subscribed = threading.Event()
        self.client = client(name)
        self.client.on_connect = lambda cl, *_a: cl.subscribe([(f, 1) for f in wanted])
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not subscribed.wait(10):
            self.close()
            raise RuntimeError(f"mapper {name} could not subscribe on {host}:{port}")

    def expect(self, value: str) -> None:
        """Time the first delta carrying ``value`` of every device (forgets earlier ones)."""
        with self._lock:
            self._arrived = {}
            self._value = value
            self._done.clear()
            if not self.devices:
                self._done.set()

    def _on_message(self, cl: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        device = msg.topic[len(DEVICE_TOPIC) : -len(DELTA)]
        if device not in self.devices or self._value is None:
            return
        try:
            delta = json.loads(msg.payload).get("delta")
        except (ValueError, AttributeError):
            return
        if not isinstance(delta, dict) or delta.get(self.prop) != self._value:
            return
        with self._lock:
            if device in self._arrived:
                return
            self._arrived[device] = now
            if len(self._arrived) == len(self.devices):
                self._done.set()
        if self.reply:
            body = {"event_id": f"mapper-{device}", "timestamp": time.time_ns() // 1_000_000,
                    "twin": {self.prop: {"actual": {"value": self._value}}}}  # fmt: skip
            cl.publish(f"{DEVICE_TOPIC}{device}/twin/update", json.dumps(body), qos=1)

    def wait(self, timeout: float) -> bool:
        """True once every device's delta has arrived, False after ``timeout`` seconds."""
        return self._done.wait(max(0.0, timeout))

    def arrived(self) -> dict[str, float]:
        """Device id → monotonic time its awaited delta arrived."""
        with self._lock:
            return dict(self._arrived)

    def missing(self) -> list[str]:
        with self._lock:
            return sorted(self.devices - self._arrived.keys())

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# ---- child processes ------------------------------------------------------------------------


def _echo(host: str, port: int) -> None:
    c = client("bench-echo")

    def on_message(cl: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        cl.publish(msg.topic[:-3] + "resp", msg.payload, qos=1)

    c.on_connect = lambda cl, *_a: cl.subscribe(ECHO_FILTER, 1)
    c.on_subscribe = lambda *_a: print("ready", flush=True)
    c.on_message = on_message
    c.connect(host, port)
    c.loop_forever()


def _sink(host: str, port: int, topic: str) -> None:
    """Count messages; print the (time, count) samples when stdin says stop."""
    c = client("bench-sink")
    count = [0]

    def on_message(*_a: Any) -> None:
        count[0] += 1

    c.on_connect = lambda cl, *_a: cl.subscribe(topic, 1)
    c.on_subscribe = lambda *_a: print("ready", flush=True)
    c.on_message = on_message
    c.connect(host, port)
    c.loop_start()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    while not stop.wait(0.1):
        samples.append((time.monotonic(), count[0]))
    c.loop_stop()
    print(json.dumps(samples), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mqttload")
    parser.add_argument("role", choices=("echo", "sink"))
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("topic", nargs="?", default="bench/sink")
    args = parser.parse_args(argv)
    if args.role == "echo":
        _echo(args.host, args.port)
    else:
        _sink(args.host, args.port, args.topic)


if __name__ == "__main__":
    main()
