"""Scenario 8: a mapper flood.

edgecore with 1,000 devices bound, behind Mosquitto configured as the
``edgeward-edge`` package ships it (packaging/mosquitto/edgeward.conf). Four
publisher processes send 200,000 twin updates as fast as they can: QoS 0 to
one device, QoS 1 to one device, QoS 0 round 1,000 devices, QoS 1 round
1,000 devices (50,000 each), while a steady device reports at QoS 1 ten
times a second and times its results. Figures: edgecore's peak RSS (sampled
every 5 ms) against its idle RSS measured just before (target ≤ 1.5x); the
rate offered and the rate answered; what edgecore dropped (QoS 0 past its
queue, counted and reported as ``usage.mqttDropped``) and what the broker
dropped (``$SYS``, reported as ``usage.brokerDropped``); updates unaccounted
for — neither answered nor counted as dropped (target 0); the steady
device's updates answered and their p99 latency during the flood; and
whether the broker connection stayed up.

Run one publisher alone: ``python -m bench.flood HOST PORT QOS DEVICES COUNT``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bench.core import Figure, Options, percentile
from bench.procs import ROOT, child_env, rss, wait_for
from bench.stack import D, Stack, edge_stack

NAME = "flood"
MB = 1_000_000
SHIPPED_BROKER = ROOT / "packaging" / "mosquitto" / "edgeward.conf"
#: (QoS, devices) of each publisher process.
PUBLISHERS = ((0, 1), (1, 1), (0, 1000), (1, 1000))
#: Flooded devices are dev-0 … dev-999; the steady one is bound besides them.
STEADY = "dev-1000"


def broker_config(path: Path = SHIPPED_BROKER) -> str:
    """The shipped drop-in without its listener (the bench broker has its own port)."""
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    return "".join(f"{ln}\n" for ln in lines if not ln.startswith(("listener", "allow_anon")))


class Results:
    """Counts update results (QoS 1: the broker queues them) and times the steady device's."""

    def __init__(self, stack: Stack) -> None:
        self.answered = 0
        self.steady_sent: dict[str, float] = {}
        self.steady_latency: list[float] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flood-results")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(stack.broker.host, stack.broker.port)
        self.client.loop_start()
        self.client.subscribe(f"{D}/+/twin/update/result", 1)
        if not subscribed.wait(10):
            raise RuntimeError("the result counter could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        event = json.loads(msg.payload).get("event_id", "")
        if event.startswith("f"):
            self.answered += 1
        elif event in self.steady_sent:
            self.steady_latency.append(time.monotonic() - self.steady_sent.pop(event))

    def steady(self, stop: threading.Event) -> int:
        """Report for the steady device ten times a second until ``stop``; returns how many."""
        n = 0
        while not stop.wait(0.1):
            n += 1
            self.steady_sent[f"s{n}"] = time.monotonic()
            body = {"event_id": f"s{n}", "timestamp": 0,
                    "twin": {"temperature": {"actual": {"value": str(n)}}}}  # fmt: skip
            self.client.publish(f"{D}/{STEADY}/twin/update", json.dumps(body), qos=1)
        return n

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _publisher(stack: Stack, qos: int, devices: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.flood", stack.broker.host, str(stack.broker.port),
         str(qos), str(devices), str(count)],
        stdout=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT,
    )  # fmt: skip


def _usage(stack: Stack) -> dict[str, Any]:
    return (
        stack.api.ok("GET", f"/api/v1/nodes/{stack.edge.node}").get("status", {}).get("usage", {})
    )


def run(opts: Options) -> list[Figure]:
    count = opts.size(50_000, 5_000)
    total = count * len(PUBLISHERS)
    with edge_stack(NAME, devices=1001, broker_config=broker_config()) as stack:
        results = Results(stack)
        try:
            time.sleep(opts.seconds(11, 3))  # a status report, as when idle
            idle = rss(stack.edge.pid) / MB
            samples: list[int] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.005):
                    samples.append(rss(stack.edge.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            steady_count: list[int] = []
            steady_stop = threading.Event()
            steady = threading.Thread(
                target=lambda: steady_count.append(results.steady(steady_stop))
            )
            steady.start()
            began = time.monotonic()
            procs = [_publisher(stack, qos, n, count) for qos, n in PUBLISHERS]
            for proc in procs:
                if proc.wait(300) != 0:
                    raise RuntimeError("a flood publisher failed")
            offered = time.monotonic() - began
            steady_stop.set()
            steady.join()

            def dropped() -> tuple[int, int]:
                usage = _usage(stack)
                edge = sum(usage.get("mqttDropped", {}).values())
                return edge, int(usage.get("brokerDropped", 0))

            def settled() -> bool:
                before = results.answered + sum(dropped())
                time.sleep(2)
                return results.answered + sum(dropped()) == before

            wait_for(settled, 300, "the flood to be answered or counted")
            handled = time.monotonic() - began - 2
            stop.set()
            sampler.join()
            time.sleep(1)
            edge_drops, broker_drops = dropped()
            peak = max(samples) / MB
            connected = "disconnected from the broker" not in stack.edge.log()
            steady_sent, steady_answered = steady_count[0], len(results.steady_latency)
            latencies = sorted(results.steady_latency)
        finally:
            results.close()
    # the broker's count is of every message it dropped: the steady device's too
    sent = total + steady_sent
    unaccounted = sent - results.answered - steady_answered - edge_drops - broker_drops
    common = {"scenario": NAME}
    return [
        Figure(name=f"edgecore peak RSS, {total:,} updates (QoS 0 and 1, 1 and 1,000 devices)",
               value=peak, unit="MB", baseline=idle, baseline_name="its idle RSS",
               target_ratio=1.5, **common),
        Figure(name="updates offered", value=total / offered, unit="updates/s", better="higher",
               note=f"{total:,} in {offered:.1f} s", **common),
        Figure(name="updates answered", value=results.answered / handled, unit="updates/s",
               better="higher", note=f"{results.answered:,} in {handled:.1f} s", **common),
        Figure(name="dropped by edgecore (QoS 0 past its queue, counted)", value=edge_drops,
               unit="updates", **common),
        Figure(name="dropped by the broker (counted)", value=broker_drops, unit="updates",
               **common),
        Figure(name="unaccounted for (neither answered nor counted)", value=unaccounted,
               unit="updates", target=0, note=f"of {sent:,} sent", **common),
        Figure(name="steady device: QoS 1 updates answered during the flood",
               value=steady_answered, unit=f"of {steady_sent}", better="higher",
               target=steady_sent, **common),
        Figure(name="steady device: p99 update → result during the flood",
               value=percentile(latencies, 0.99) * 1000 if latencies else float("nan"),
               unit="ms", **common),
        Figure(name="broker connection stayed up", value=1.0 if connected else 0.0,
               unit="yes=1", better="higher", target=1.0, **common),
    ]  # fmt: skip


def publish(host: str, port: int, qos: int, devices: int, count: int) -> None:
    """Publish ``count`` updates round ``devices`` devices as fast as the broker takes them."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"flood-{qos}-{devices}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    last = None
    for i in range(count):
        dev = f"dev-{qos}" if devices == 1 else f"dev-{i % devices}"
        body = {"event_id": f"f{qos}-{devices}-{i}", "timestamp": 0,
                "twin": {"temperature": {"actual": {"value": str(i)}}}}  # fmt: skip
        last = client.publish(f"{D}/{dev}/twin/update", json.dumps(body), qos=qos)
    if last is not None:
        last.wait_for_publish(120)
    while client.want_write():
        time.sleep(0.01)
    time.sleep(0.2)
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    host, port, qos, devices, count = sys.argv[1:6]
    publish(host, int(port), int(qos), int(devices), int(count))
