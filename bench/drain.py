"""Scenario 6: drain after an outage.

While edgecore is stopped (offline), rows are written straight into its
outbox with the EdgeStore API, in one transaction — publishing 100,000
updates over MQTT would not buffer them: twin reports are state rows that
coalesce to one per device, so an outage of any length leaves at most one
twin row per device. Then edgecore starts and the link returns; the figure
is rows/s from the hub's first persisted report to the last one, read from
the hub's ``node_sync.report_seq``. Two kinds of rows: ``twin/reported``
(the hub writes each into a Device's status, a new revision per row) and
``upload`` events (the hub only logs them: the transport and bookkeeping
alone). The twin rows go round the devices in turn, so every frame of up to
500 rows names each device at most once: the hub writes only the last row of
a device within a frame (each carries the whole twin state), and the figure
is meant to be the cost of a row, not of that shortcut. Baseline: bare SQLite rows/s inserted in one transaction on the
same machine. Target: >= 20,000 updates/s drained.
"""

from __future__ import annotations

import json
import time

from bench.baselines import sqlite_batch_rate
from bench.core import Figure, Options
from bench.fleet import twin_body
from bench.stack import NODE, Stack, edge_stack
from edgecore.store import EdgeStore
from edgeward.protocol import TOPIC_TWIN_REPORTED, TOPIC_UPLOAD

NAME = "drain"
DEVICES = 1000


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


def _drain(stack: Stack, topic: str, rows: int, timeout: float) -> tuple[float, float]:
    """(rows/s drained, seconds from edgecore start to the hub holding them all)."""
    stack.edge.stop()
    high = _fill(stack, topic, rows)
    seq_sql = "SELECT report_seq FROM node_sync WHERE node = ?"
    before = int(stack.hub.query(seq_sql, NODE)[0][0])
    stack.edge.start()
    began = stack.edge.started_at
    first: tuple[float, int] | None = None
    deadline = began + timeout
    while time.monotonic() < deadline:
        seq = int(stack.hub.query(seq_sql, NODE)[0][0])
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


def run(opts: Options) -> list[Figure]:
    rows = opts.size(100_000, 5_000)
    body = json.dumps(twin_body("default/dev-1", "1"), separators=(",", ":"))
    base = sqlite_batch_rate(rows, body)
    figures = []
    with edge_stack(NAME, devices=DEVICES, mqtt=False) as stack:
        for topic in (TOPIC_UPLOAD, TOPIC_TWIN_REPORTED):
            rate, total = _drain(stack, topic, rows, timeout=opts.seconds(600, 120))
            figures.append(
                Figure(scenario=NAME, name=f"drain {rows:,} {topic} rows", value=rate,
                       unit="rows/s", better="higher", baseline=base,
                       baseline_name="sqlite batch insert", target=20_000.0,
                       note=f"{total:.1f} s from edgecore start to the last row on the hub")
            )  # fmt: skip
    return figures
