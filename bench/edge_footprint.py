"""Scenario 5: edge footprint.

edgecore with 1,000 devices of 10 properties each bound to it through the
hub (cached in edge.db, twins in memory) and a mapper connected to its
broker: RSS and CPU share while idle, then the cold start: process start →
first ``twin/get`` answered (the mapper asks every 20 ms). Baseline: the RSS
of a bare interpreter (``python -c pass``). Targets: < 45 MB RSS, start < 1 s.
"""

from __future__ import annotations

import time

from bench.baselines import python_rss
from bench.core import Figure, Options
from bench.procs import cpu_share, rss
from bench.stack import D, edge_stack

NAME = "edge-footprint"
MB = 1_000_000


def first_twin_get(stack, device: str, timeout: float = 30) -> float:  # type: ignore[no-untyped-def]
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


def run(opts: Options) -> list[Figure]:
    devices = opts.size(1000, 100)
    window = opts.seconds(10, 2)
    base_rss = python_rss()
    with edge_stack(NAME, devices=devices, properties=10) as stack:
        mapper = stack.mapper("$hw/events/device/+/+/twin/update/delta")
        try:
            time.sleep(opts.seconds(3, 1))  # let start-up work (first status report) settle
            idle_rss = rss(stack.edge.pid)
            idle_cpu = cpu_share(stack.edge.pid, window)
        finally:
            mapper.close()
        starts = [first_twin_get(stack, stack.devices[-1]) for _ in range(opts.size(3, 1))]
        restarted_rss = rss(stack.edge.pid)
    starts.sort()
    common = {"scenario": NAME}
    return [
        Figure(name=f"RSS idle, {devices} devices x 10 props", value=idle_rss / MB, unit="MB",
               baseline=base_rss / MB, baseline_name="python -c pass", target=45.0,
               note=f"RSS right after a cold start {restarted_rss / MB:.1f} MB", **common),
        Figure(name="CPU idle", value=idle_cpu * 100, unit="% of a core",
               note=f"over {window:g} s", **common),
        Figure(name="cold start to first twin/get", value=starts[len(starts) // 2], unit="s",
               target=1.0, note=f"median of {len(starts)} restarts", **common),
    ]  # fmt: skip
