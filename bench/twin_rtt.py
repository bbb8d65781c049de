"""Scenario 1: twin round trip at the edge.

A mapper publishes a reported value on ``$hw/events/device/<ns>/<name>/twin/update``
and waits for ``…/twin/update/result``, one request at a time; edgecore
validates it, stores twin state and an outbox row in SQLite (one commit),
then answers. Baseline: the same paho client against a bare paho echo client
through the same Mosquitto, TCP_NODELAY on both sides. Target: p50 within 2x
the baseline.
"""

from __future__ import annotations

from bench.baselines import latency_ms, mqtt_echo
from bench.core import Figure, Options
from bench.mqttload import RequestDriver
from bench.stack import D, edge_stack

NAME = "twin-rtt"


def update_payload(n: int, prop: str = "temperature") -> bytes:
    return b'{"event_id":"e%d","timestamp":0,"twin":{"%s":{"actual":{"value":"%d.5"}}}}' % (
        n,
        prop.encode(),
        n % 100,
    )


def run(opts: Options) -> list[Figure]:
    seconds = opts.seconds(10, 2)
    warmup = opts.seconds(1, 0.3)
    with edge_stack(NAME, devices=1) as stack:
        device = stack.devices[0]
        driver = RequestDriver(
            stack.broker.host,
            stack.broker.port,
            [(f"{D}/{device}/twin/update", f"{D}/{device}/twin/update/result")],
            lambda _ch, n: update_payload(n),
        )
        edge = driver.run(seconds, warmup)
        if not isinstance(edge.first_reply, dict) or "twin" not in edge.first_reply:
            raise RuntimeError(f"edgecore refused the update: {edge.first_reply}")
        base = mqtt_echo(stack.broker, seconds, warmup)
    common = {"scenario": NAME, "unit": "ms", "baseline_name": "paho echo"}
    return [
        Figure(name="round trip p50", value=latency_ms(edge.latencies, 50),
               baseline=latency_ms(base.latencies, 50), target_ratio=2.0,
               note=f"{edge.replies} requests", **common),
        Figure(name="round trip p99", value=latency_ms(edge.latencies, 99),
               baseline=latency_ms(base.latencies, 99), **common),
    ]  # fmt: skip
