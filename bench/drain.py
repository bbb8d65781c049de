"""Scenario 6: drain after an outage.

Three figures, each from buffered rows to the hub holding all of them (read
from the hub's ``node_sync.report_seq``):

- **reported updates**: with the hub down, mappers publish reported values
  for 100 devices over MQTT as fast as edgecore takes them (8 in flight per
  device); edgecore stores each in its twin state and outbox, where a
  device's reports coalesce to its latest state. Then the hub starts; the
  figure is updates made during the outage per second from the hub being
  back (listening) to the hub holding every device's latest state — what a
  user waits for after an outage. The edge's reconnect delay is capped at
  0.5 s here (30 s by default) so the figure is the drain, not the backoff.
- **upload events**: 100,000 ``upload`` rows (apps' events: they never
  coalesce) written straight into the stopped edgecore's outbox with the
  EdgeStore API, then edgecore starts: rows/s from the hub's first persisted
  row to the last one. The hub only logs uploads: transport and bookkeeping.
- **twin rows, one per device per frame**: 100,000 ``twin/reported`` rows as
  events, going round 1,000 devices so no frame of up to 500 rows names a
  device twice (the hub writes only a device's last row within a frame):
  the hub's cost of writing a Device status per row — what bounds a drain
  when every buffered row is a different device.

Baseline: bare SQLite rows/s inserted in one transaction on the same machine.
Target: >= 20,000 updates/s drained.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from bench.baselines import sqlite_batch_rate
from bench.core import Figure, Options
from bench.fleet import twin_body
from bench.mqttload import RequestDriver
from bench.stack import NODE, D, Stack, edge_stack
from bench.twin_rtt import update_payload
from edgecore.store import EdgeStore
from edgeward.protocol import TOPIC_TWIN_REPORTED, TOPIC_UPLOAD

NAME = "drain"
DEVICES = 1000
REPORTING_DEVICES = 100
PIPELINE = 8
SEQ_SQL = "SELECT report_seq FROM node_sync WHERE node = ?"


def _fill(stack: Stack, topic: str, rows: int) -> int:
    """Write ``rows`` outbox rows while edgecore is stopped; returns the highest seq."""
    store = EdgeStore(stack.edge.data_dir / "edge.db")
    try:
        with store.transaction():
            for i in range(rows):
                device_id = f"default/dev-{i % DEVICES}"
                if topic == TOPIC_UPLOAD:
                    body = {"topic": "$hw/events/upload/bench", "payload": f"record {i}"}
                else:
                    body = twin_body(device_id, str(i % 1000))
                seq = store.report_event(topic, body)
        return seq
    finally:
        store.close()


def _hub_seq(stack: Stack) -> int:
    return int(stack.hub.query(SEQ_SQL, NODE)[0][0])


def drain_rows(stack: Stack, topic: str, rows: int, timeout: float) -> tuple[float, float]:
    """(rows/s drained, seconds from edgecore start to the hub holding them all)."""
    stack.edge.stop()
    high = _fill(stack, topic, rows)
    before = _hub_seq(stack)
    stack.edge.start()
    began = stack.edge.started_at
    first: tuple[float, int] | None = None
    deadline = began + timeout
    while time.monotonic() < deadline:
        seq = _hub_seq(stack)
        now = time.monotonic()
        if first is None and seq > before:
            first = (now, seq)
        if seq >= high:
            assert first is not None
            drained = high - first[1]
            rate = drained / (now - first[0]) if drained else float("nan")
            return rate, now - began
        time.sleep(0.01)
    raise RuntimeError(f"the hub did not receive {rows} rows within {timeout:g}s")


def _drain_reported(stack: Stack, seconds: float, timeout: float) -> tuple[int, int, float]:
    """(updates stored during the outage, outbox rows they left, seconds to drain them)."""
    stack.hub.stop()
    channels = [
        (f"{D}/{d}/twin/update", f"{D}/{d}/twin/update/result")
        for d in stack.devices[:REPORTING_DEVICES]
    ]
    driver = RequestDriver(
        stack.broker.host, stack.broker.port, channels,
        lambda _ch, n: update_payload(n), depth=PIPELINE,
    )  # fmt: skip
    result = driver.run(seconds, warmup=0)
    time.sleep(1)  # the last updates in flight are stored too
    db = stack.edge.db()
    rows, high = db.execute("SELECT count(*), max(seq) FROM outbox").fetchone()
    db.close()
    stack.hub.start()
    began = time.monotonic()
    while time.monotonic() < began + timeout:
        if _hub_seq(stack) >= high:
            return result.replies, rows, time.monotonic() - began
        time.sleep(0.01)
    raise RuntimeError(f"the hub did not receive the outbox within {timeout:g}s")


def edge_config() -> Path:
    fd, name = tempfile.mkstemp(prefix=f"edgeward-bench-{NAME}-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write("hub:\n  reconnect_initial_delay: 0.1\n  reconnect_max_delay: 0.5\n")
    return Path(name)


def run(opts: Options) -> list[Figure]:
    rows = opts.size(100_000, 5_000)
    body = json.dumps(twin_body("default/dev-1", "1"), separators=(",", ":"))
    base = sqlite_batch_rate(rows, body)
    timeout = opts.seconds(600, 120)
    common = {"scenario": NAME, "better": "higher", "baseline": base,
              "baseline_name": "sqlite batch insert"}  # fmt: skip
    config = edge_config()
    try:
        with edge_stack(NAME, DEVICES, 1, True, "--config", str(config)) as stack:
            # about as many updates as there are upload rows, at this machine's twin rate
            updates, left, drained = _drain_reported(stack, opts.seconds(60, 3), timeout)
            figures = [
                Figure(name=f"drain reported updates made offline ({REPORTING_DEVICES} devices)",
                       value=updates / drained, unit="updates/s", target=20_000.0,
                       note=f"{updates:,} updates, {left} outbox rows after coalescing; "
                       f"{drained:.2f} s from the hub listening again to it holding the latest "
                       "state of every device", **common),
            ]  # fmt: skip
            upload_rate, total = drain_rows(stack, TOPIC_UPLOAD, rows, timeout)
            figures.append(
                Figure(name=f"drain {rows:,} upload events", value=upload_rate, unit="rows/s",
                       target=20_000.0, note=f"{total:.1f} s from edgecore start to the last "
                       "row on the hub", **common)
            )  # fmt: skip
            twin_rate, total = drain_rows(stack, TOPIC_TWIN_REPORTED, rows, timeout)
            figures.append(
                Figure(name=f"drain {rows:,} twin rows, each device once per frame",
                       value=twin_rate, unit="rows/s", note=f"{DEVICES:,} devices, a Device "
                       f"status write per row; {total:.1f} s in all", **common)
            )  # fmt: skip
    finally:
        config.unlink(missing_ok=True)
    return figures
