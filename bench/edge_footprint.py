"""Scenario 5: edge footprint.

edgecore with 1,000 devices of 10 properties each bound to it through the
hub (cached in edge.db, twins in memory) and a mapper connected to its
broker. RSS is measured where a gateway spends its life, not only before
anything happened: idle at start; after the mapper has reported every
property once (the figure the target applies to), then after three more
rounds; and after the hub has set a desired value on every property and the
mapper has reported again. Each is taken once edgecore has answered every
update and settled (a status interval). Also CPU share while idle, and the
cold start: process start → first ``twin/get`` answered (the mapper asks
every 20 ms). Baseline: the RSS of a bare interpreter (``python -c pass``).
Then the cost of the metrics (docs/metrics.md): edgecore restarted without them and
with them on (alternately, twice), each time a round of reports and a status
interval while a scraper reads /metrics every second; RSS on against RSS off.
Targets: < 45 MB RSS, start < 1 s, metrics within 2 MB.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paho.mqtt.client as mqtt

from bench.baselines import python_rss
from bench.core import Figure, Options
from bench.procs import NS, cpu_share, free_port, prop_name, rss, wait_for
from bench.stack import D, Stack, edge_stack, start_edge

NAME = "edge-footprint"
MB = 1_000_000
PROPERTIES = 10
#: Long enough for edgecore's status report (every 10 s by default) after a burst.
SETTLE = 11.0
#: What the metrics may add to edgecore's RSS (issue 12).
METRICS_BUDGET_MB = 2.0


def first_twin_get(stack: Stack, device: str, timeout: float = 30) -> float:
    """Restart edgecore; seconds from process start to the first twin/get answered."""
    mapper = stack.mapper(f"{D}/{device}/twin/get/result")
    try:
        stack.edge.stop()
        mapper.drain()
        stack.edge.start()
        began = stack.edge.started_at
        deadline = began + timeout
        n = 0
        while time.monotonic() < deadline:
            n += 1
            mapper.client.publish(f"{D}/{device}/twin/get", f'{{"event_id":"g{n}"}}', qos=1)
            try:
                body = mapper.expect(f"{D}/{device}/twin/get/result", 0.02)
            except AssertionError:
                continue
            if "twin" in body:
                return time.monotonic() - began
        raise RuntimeError("edgecore did not answer twin/get after a restart")
    finally:
        mapper.close()


def report_every_property(stack: Stack, round_: int, timeout: float = 120) -> None:
    """One twin/update per device with all its properties (QoS 1, 100 in flight), and wait
    for edgecore's result to every one."""
    answered = threading.Semaphore(0)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"footprint-{round_}")
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if json.loads(msg.payload).get("event_id", "").startswith(f"r{round_}-"):
            answered.release()

    subscribed = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect(stack.broker.host, stack.broker.port)
    client.loop_start()
    try:
        client.subscribe(f"{D}/+/twin/update/result", 1)
        subscribed.wait(10)
        for n, dev in enumerate(stack.devices):
            twin = {prop_name(i): {"actual": {"value": f"{round_}.{n}.{i}"}}
                    for i in range(PROPERTIES)}  # fmt: skip
            body = {"event_id": f"r{round_}-{n}", "timestamp": 0, "twin": twin}
            client.publish(f"{D}/{dev}/twin/update", json.dumps(body), qos=1)
        deadline = time.monotonic() + timeout
        for _ in stack.devices:
            if not answered.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"edgecore did not answer every update of round {round_}")
    finally:
        client.loop_stop()
        client.disconnect()


def desire_every_property(stack: Stack, timeout: float = 120) -> None:
    """The hub sets a desired value on every property of every device; wait for the edge."""

    def desire(dev: str) -> int:
        body = stack.api.ok("GET", f"{NS}/devices/{dev}")
        for prop in body["spec"]["properties"]:
            prop["desired"] = {"value": "42.5"}
        return int(stack.api.ok("PUT", f"{NS}/devices/{dev}", body)["metadata"]["resourceVersion"])

    with ThreadPoolExecutor(4) as pool:
        revision = max(pool.map(desire, stack.devices))
    wait_for(lambda: stack.edge.revision() >= revision, timeout, "the edge to take them")


def fmt_runs(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def peak_rss(pid: int) -> float:
    """The process's highest RSS so far (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    return 0.0


def settled_rss(stack: Stack, opts: Options) -> float:
    time.sleep(opts.seconds(SETTLE, 2))
    return rss(stack.edge.pid) / MB


class Scraper:
    """Reads /metrics every ``interval`` seconds in a thread, as a (very eager) Prometheus."""

    def __init__(self, port: int, interval: float = 1.0) -> None:
        self.port, self.interval = port, interval
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/metrics")
                resp = conn.getresponse()
                if resp.status == 200 and resp.read():
                    self.scrapes += 1
            except OSError:
                pass  # edgecore is (re)starting
            finally:
                conn.close()

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def metrics_rss(stack: Stack, opts: Options, on: bool, round_: int) -> tuple[float, int]:
    """Restart edgecore with metrics ``on`` or off, report every property once and settle
    while /metrics is scraped every second; (RSS in MB, scrapes answered)."""
    args = stack.edge.args
    if "--metrics-listen" in args:
        del args[args.index("--metrics-listen") : args.index("--metrics-listen") + 2]
    port = free_port()
    if on:
        args += ["--metrics-listen", str(port)]
    stack.edge.stop()
    with Scraper(port) as scraper:
        start_edge(stack, stack.edge.revision())
        report_every_property(stack, round_)
        settled = settled_rss(stack, opts)
    if on and not scraper.scrapes:
        raise RuntimeError(f"edgecore did not serve its metrics:\n{stack.edge.log()[-2000:]}")
    return settled, scraper.scrapes


def dmi_rss(stack: Stack, opts: Options, on: bool, round_: int) -> float:
    """Restart edgecore with DMI ``on`` (serving its socket, no mapper registered) or off,
    report every property once and settle; RSS in MB."""
    args = stack.edge.args
    if "--dmi-socket" in args:
        del args[args.index("--dmi-socket") : args.index("--dmi-socket") + 2]
    if on:
        args += ["--dmi-socket", str(stack.edge.data_dir.parent / "dmi.sock")]
    stack.edge.stop()
    start_edge(stack, stack.edge.revision())
    report_every_property(stack, round_)
    settled = settled_rss(stack, opts)
    if on and not (stack.edge.data_dir.parent / "dmi.sock").is_socket():
        raise RuntimeError(f"edgecore did not serve DMI:\n{stack.edge.log()[-2000:]}")
    return settled


def run(opts: Options) -> list[Figure]:
    devices = opts.size(1000, 100)
    window = opts.seconds(10, 2)
    base_rss = python_rss() / MB
    with edge_stack(NAME, devices=devices, properties=PROPERTIES) as stack:
        mapper = stack.mapper("$hw/events/device/+/+/twin/update/delta")
        try:
            time.sleep(opts.seconds(3, 1))  # let start-up work (first status report) settle
            idle_rss = rss(stack.edge.pid) / MB
            idle_cpu = cpu_share(stack.edge.pid, window)
        finally:
            mapper.close()
        report_every_property(stack, 0)
        reported_rss = settled_rss(stack, opts)
        for round_ in (1, 2, 3):
            report_every_property(stack, round_)
        rounds_rss = settled_rss(stack, opts)
        desire_every_property(stack)
        report_every_property(stack, 4)
        desired_rss = settled_rss(stack, opts)
        peak = peak_rss(stack.edge.pid)
        starts = [first_twin_get(stack, stack.devices[-1]) for _ in range(opts.size(3, 1))]
        restarted_rss = rss(stack.edge.pid) / MB
        off, on, scrapes = [], [], 0
        for pair in range(opts.size(2, 1)):
            off.append(metrics_rss(stack, opts, False, 10 + 2 * pair)[0])
            with_metrics, answered = metrics_rss(stack, opts, True, 11 + 2 * pair)
            on.append(with_metrics)
            scrapes += answered
        dmi_off, dmi_on = [], []
        for pair in range(opts.size(2, 1)):
            dmi_off.append(dmi_rss(stack, opts, False, 20 + 2 * pair))
            dmi_on.append(dmi_rss(stack, opts, True, 21 + 2 * pair))
    starts.sort()
    common = {"scenario": NAME, "unit": "MB", "baseline": base_rss,
              "baseline_name": "python -c pass", "target": 45.0}  # fmt: skip
    what = f"{devices} devices x {PROPERTIES} props"
    return [
        Figure(name=f"RSS, {what}, every property reported", value=reported_rss,
               note=f"idle before any report {idle_rss:.1f} MB", **common),
        Figure(name="RSS after 3 more rounds of reports", value=rounds_rss,
               note="each round: every property of every device, 100 updates in flight",
               **common),
        Figure(name="RSS with a desired value on every property, reported again",
               value=desired_rss, note=f"peak while busy {peak:.1f} MB; right after a cold "
               f"start {restarted_rss:.1f} MB",
               **common),
        Figure(name="RSS with metrics on, scraped every second", value=sum(on) / len(on),
               unit="MB", baseline=sum(off) / len(off), baseline_name="metrics off",
               target=sum(off) / len(off) + METRICS_BUDGET_MB, scenario=NAME,
               note=f"restarted alternately off and on, {len(on)} of each, after a round of "
               f"reports and {SETTLE:g} s; off {fmt_runs(off)}, on {fmt_runs(on)} MB; "
               f"{scrapes} scrapes answered"),
        Figure(name="RSS with DMI on (gRPC loaded, socket served)", value=sum(dmi_on) / len(dmi_on),
               unit="MB", baseline=sum(dmi_off) / len(dmi_off), baseline_name="DMI off",
               scenario=NAME,
               note=f"restarted alternately off and on, {len(dmi_on)} of each; off "
               f"{fmt_runs(dmi_off)}, on {fmt_runs(dmi_on)} MB: why DMI is off by default"),
        Figure(name="CPU idle", value=idle_cpu * 100, unit="% of a core",
               note=f"over {window:g} s", scenario=NAME),
        Figure(name="cold start to first twin/get", value=starts[len(starts) // 2], unit="s",
               target=1.0, note=f"median of {len(starts)} restarts", scenario=NAME),
    ]  # fmt: skip
