"""Scenario 9: what twin history costs the hub's report path.

The cost, measured in process: the hub's own code on a SQLite file as ``cloudhub`` runs it
by default. A registered node with 1,000 devices sends ``twin/reported`` rows, 500 to a
frame, going round the devices so no frame names a device twice (the hub writes a
device's last row in a frame only), each with a new reported value: every row changes a
Device status and, with history on, adds a history row. Two hubs, history on and history
off (``history_max_per_property: 0``), each on a fresh database, take each frame in turn
(a machine that slows down for a while slows both alike); with history on, the time
includes the merges of the newest values into the indexed history table, at the hub's
interval (the hub's leader does them in a thread of their own, here they run between
frames), and a last one after the last frame. History's cost is the difference of their
times a row.

Target (issue 12): history costs under 10% of the twin-row drain rate. The drain rate is
scenario 6's twin-row drain (a real hub and edgecore over the link, history off, as
before history existed), measured in the same run; the figure is history's cost a row
over the drain's time a row. The in-process rates are also shown: there history's share
is larger (about a tenth), since the report path alone leaves out the link, the frames'
decoding, the change feed and the acknowledgements that a drained row also costs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench import drain
from bench.core import Figure, Options
from bench.fleet import twin_body
from bench.stack import edge_stack
from cloudhub import history
from cloudhub.db import open_engine
from cloudhub.nodes import NodeRegistry
from cloudhub.store import Store
from edgeward.kinds import DEVICE, DEVICE_MODEL
from edgeward.protocol import TOPIC_TWIN_REPORTED, ReportItem

NAME = "history"
NODE = "edge-h"
DEVICES = 1_000
FRAME = 500


class _Hub:
    """A hub store on its own SQLite file, with the node and its devices registered; it
    keeps the time its frames and merges took."""

    def __init__(self, directory: Path, keep_history: bool) -> None:
        self.engine = open_engine(f"sqlite:///{directory / 'hub.db'}")
        self.store = store = Store(self.engine)
        store.migrate()
        store.twin_history = keep_history
        self.registry = NodeRegistry(store, grace_period=3600)
        self.registry.register(NODE, {"agentVersion": "bench"})
        model = {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
                 "metadata": {"name": "m", "namespace": "default"},
                 "spec": {"properties": [{"name": "temperature", "type": "FLOAT"}]}}  # fmt: skip
        store.create(DEVICE_MODEL, model)
        for i in range(DEVICES):
            store.create(DEVICE, {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                                  "metadata": {"name": f"dev-{i}", "namespace": "default"},
                                  "spec": {"nodeName": NODE, "deviceModelRef": {"name": "m"},
                                           "properties": [{"name": "temperature"}]}})  # fmt: skip
        self.busy = 0.0
        self._since_merge = 0.0

    def send(self, frame: tuple[ReportItem, ...]) -> None:
        began = time.perf_counter()
        outcome = self.registry.record_reports(NODE, frame, 0)
        assert not outcome.rejected, outcome.rejected[:1]
        self._count(began)
        if self._since_merge >= history.MERGE_INTERVAL:
            self.merge()

    def merge(self) -> None:
        began = time.perf_counter()
        history.merge(self.store)
        self._count(began)
        self._since_merge = 0.0

    def _count(self, began: float) -> None:
        spent = time.perf_counter() - began
        self.busy += spent
        self._since_merge += spent


def _frames(rows: int) -> list[tuple[ReportItem, ...]]:
    stamp = time.time_ns() // 1_000_000
    frames = []
    for start in range(0, rows, FRAME):
        frame = []
        for seq in range(start + 1, min(start + FRAME, rows) + 1):
            body = twin_body(f"default/dev-{seq % DEVICES}", f"{seq}.5", stamp + seq)
            frame.append(ReportItem(seq=seq, topic=TOPIC_TWIN_REPORTED, key=None, body=body))
        frames.append(tuple(frame))
    return frames


def _rates(directory: Path, rows: int) -> tuple[float, float]:
    """Rows/s with history off and on, the two hubs taking the same frames in turn so a
    machine that slows down for a while slows both alike."""
    (directory / "off").mkdir()
    (directory / "on").mkdir()
    off, on = _Hub(directory / "off", False), _Hub(directory / "on", True)
    try:
        for frame in _frames(rows):
            off.send(frame)
            on.send(frame)
        off.merge()
        on.merge()
        return rows / off.busy, rows / on.busy
    finally:
        off.engine.dispose()
        on.engine.dispose()


def _drain_rate(rows: int, timeout: float) -> float:
    """Rows/s of scenario 6's twin-row drain (a real hub and edgecore), history off: the
    twin-row drain rate as it was before history, which the target is stated against."""
    config = drain.edge_config()
    try:
        with edge_stack(
            NAME, drain.DEVICES, 1, True, "--config", str(config),
            hub_flags=("--history-max-per-property", "0"),
        ) as stack:  # fmt: skip
            rate, _ = drain.drain_rows(stack, TOPIC_TWIN_REPORTED, rows, timeout)
            return rate
    finally:
        config.unlink(missing_ok=True)


def run(opts: Options) -> list[Figure]:
    rows = opts.size(50_000, 5_000)
    with tempfile.TemporaryDirectory(prefix="edgeward-bench-history-") as tmp:
        off, on = _rates(Path(tmp), rows)
    drained = _drain_rate(rows, opts.seconds(600, 120))
    cost = 1e6 / on - 1e6 / off  # microseconds a row
    share = 100 * cost * drained / 1e6
    return [
        Figure(
            scenario=NAME,
            name="history's cost a twin row, share of the twin-row drain's time a row",
            value=share,
            unit="%",
            target=10.0,
            note=f"{cost:.1f} us a row (history on against off, in process) over "
            f"{1e6 / drained:.0f} us a row of the drain ({drained:,.0f} rows/s, a hub and "
            "edgecore, history off, same run)",
        ),
        Figure(
            scenario=NAME,
            name=f"{rows:,} twin rows into the hub's report path alone, history kept",
            value=on,
            unit="rows/s",
            better="higher",
            baseline=off,
            baseline_name="the same rows, history off",
            note=f"{DEVICES:,} devices, {FRAME} rows a frame, a new value in every row; "
            "SQLite, in process: the report path without the link and the frames, so "
            "history's share here is larger than of the drain",
        ),
    ]
