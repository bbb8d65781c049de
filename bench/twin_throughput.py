"""Scenario 2: twin throughput at the edge.

100 devices, each with one update in flight (and a pipelined variant with
several in flight per device): reported values go through Mosquitto into
edgecore, which stores twin state and outbox rows in SQLite and answers on
``…/twin/update/result``; the outbox drains to the hub meanwhile. The figure
is results per second. Baseline: the bare paho one-way QoS 1 publish rate
through the same broker into a counting sink. Targets: >= 5,000 updates/s and
>= 60% of the baseline.
"""

from __future__ import annotations

from bench.baselines import latency_ms, mqtt_publish_rate
from bench.core import Figure, Options
from bench.mqttload import RequestDriver
from bench.stack import D, edge_stack
from bench.twin_rtt import update_payload

NAME = "twin-throughput"
PIPELINE = 8


def run(opts: Options) -> list[Figure]:
    devices = 100
    seconds = opts.seconds(10, 2)
    warmup = opts.seconds(2, 0.5)
    with edge_stack(NAME, devices=devices) as stack:
        base = mqtt_publish_rate(stack.broker, seconds)  # while edgecore idles
        channels = [(f"{D}/{d}/twin/update", f"{D}/{d}/twin/update/result") for d in stack.devices]
        results = {}
        for depth in (1, PIPELINE):
            driver = RequestDriver(
                stack.broker.host, stack.broker.port, channels,
                lambda _ch, n: update_payload(n), depth=depth,
            )  # fmt: skip
            results[depth] = driver.run(seconds, warmup)
            first = results[depth].first_reply
            if not isinstance(first, dict) or "twin" not in first:
                raise RuntimeError(f"edgecore refused the update: {first}")
        outbox = stack.edge.db().execute("SELECT count(*) FROM outbox").fetchone()[0]
    one, piped = results[1], results[PIPELINE]
    common = {"scenario": NAME, "unit": "updates/s", "better": "higher",
              "baseline": base, "baseline_name": "paho publish", "target": 5000.0,
              "target_ratio": 0.6}  # fmt: skip
    return [
        Figure(name="100 devices, 1 in flight", value=one.rate,
               note=f"p50 {latency_ms(one.latencies, 50):.1f} ms, "
               f"p99 {latency_ms(one.latencies, 99):.1f} ms; outbox rows left {outbox}",
               **common),
        Figure(name=f"100 devices, {PIPELINE} in flight", value=piped.rate,
               note=f"p50 {latency_ms(piped.latencies, 50):.1f} ms, "
               f"p99 {latency_ms(piped.latencies, 99):.1f} ms", **common),
    ]  # fmt: skip
