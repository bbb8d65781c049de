"""Scenario 9: what twin history costs the hub's report path.

The hub's own code, in this process, on a SQLite file as ``cloudhub`` runs it by default:
a registered node with 1,000 devices sends ``twin/reported`` rows, 500 to a frame, going
round the devices so no frame names a device twice (the hub writes a device's last row in
a frame only), each with a new reported value: every row changes a Device status and,
with history on, adds a history row. The figure is rows/s with history on; the baseline
is the same rows with history off (``history_max_per_property: 0``) in the same run, on
a fresh database each.

Target (issue 12): history costs under 10% of the twin-row drain rate, i.e. a ratio of
at least 0.9.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.core import Figure, Options
from bench.fleet import twin_body
from cloudhub.db import open_engine
from cloudhub.nodes import NodeRegistry
from cloudhub.store import Store
from edgeward.kinds import DEVICE, DEVICE_MODEL
from edgeward.protocol import TOPIC_TWIN_REPORTED, ReportItem

NAME = "history"
NODE = "edge-h"
DEVICES = 1_000
FRAME = 500


def _rate(directory: Path, rows: int, keep_history: bool) -> float:
    engine = open_engine(f"sqlite:///{directory / 'hub.db'}")
    try:
        store = Store(engine)
        store.migrate()
        store.twin_history = keep_history
        registry = NodeRegistry(store, grace_period=3600)
        registry.register(NODE, {"agentVersion": "bench"})
        model = {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
                 "metadata": {"name": "m", "namespace": "default"},
                 "spec": {"properties": [{"name": "temperature", "type": "FLOAT"}]}}  # fmt: skip
        store.create(DEVICE_MODEL, model)
        for i in range(DEVICES):
            store.create(DEVICE, {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                                  "metadata": {"name": f"dev-{i}", "namespace": "default"},
                                  "spec": {"nodeName": NODE, "deviceModelRef": {"name": "m"},
                                           "properties": [{"name": "temperature"}]}})  # fmt: skip
        stamp = time.time_ns() // 1_000_000
        frames = []
        for start in range(0, rows, FRAME):
            frame = []
            for seq in range(start + 1, min(start + FRAME, rows) + 1):
                body = twin_body(f"default/dev-{seq % DEVICES}", f"{seq}.5", stamp + seq)
                frame.append(ReportItem(seq=seq, topic=TOPIC_TWIN_REPORTED, key=None, body=body))
            frames.append(tuple(frame))
        began = time.perf_counter()
        for frame in frames:
            outcome = registry.record_reports(NODE, frame, 0)
            assert not outcome.rejected, outcome.rejected[:1]
        return rows / (time.perf_counter() - began)
    finally:
        engine.dispose()


def run(opts: Options) -> list[Figure]:
    rows = opts.size(50_000, 5_000)
    with tempfile.TemporaryDirectory(prefix="edgeward-bench-history-") as tmp:
        (Path(tmp) / "on").mkdir()
        (Path(tmp) / "off").mkdir()
        off = _rate(Path(tmp) / "off", rows, keep_history=False)
        on = _rate(Path(tmp) / "on", rows, keep_history=True)
    return [
        Figure(
            scenario=NAME,
            name=f"{rows:,} twin rows into the hub with history kept",
            value=on,
            unit="rows/s",
            better="higher",
            baseline=off,
            baseline_name="the same rows, history off",
            target_ratio=0.9,
            note=f"{DEVICES:,} devices, {FRAME} rows a frame, a new value in every row; "
            "SQLite, in process",
        )
    ]
