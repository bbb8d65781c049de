"""A node's time alone, as edge.db keeps it: opened when the link is lost or, after a power
cut, at the last moment the node was known live; restarts and what the edge did alone
counted; closed into one report row when the hub is back."""

from __future__ import annotations

import json
from pathlib import Path

from edgecore.outage import MIN_SECONDS
from edgecore.store import EdgeStore, OutboxLimits
from edgeward.protocol import TOPIC_NODE_OUTAGE, TOPIC_NODE_STATUS


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def open_store(path: Path, clock: Clock, quota: int = 10**9) -> EdgeStore:
    store = EdgeStore(path, clock=clock, limits=OutboxLimits(quota, 3600))
    store.claim("edge1")
    return store


def outage_rows(store: EdgeStore) -> list[dict]:
    rows = store.db.execute("SELECT key, body FROM outbox WHERE topic = ?", (TOPIC_NODE_OUTAGE,))
    return [{"key": key, **json.loads(body)} for key, body in rows]


def twin(store: EdgeStore, device: str, value: int) -> None:
    store.report_state("twin/reported", device, {"device": device, "twins": {"t": value}})


def test_an_outage_counts_what_the_node_did_alone_and_is_reported_once_back(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = open_store(tmp_path / "edge.db", clock)
    store.outage_closed()  # welcomed: live
    store.acknowledge(0)
    store.outage_lost()
    start = clock.now
    for i in range(5):
        twin(store, "default/a", i)  # 5 buffered, 4 of them replaced the one before
    store.report_event("upload", {"topic": "$hw/events/upload/x", "payload": "p"})
    store.report_state(TOPIC_NODE_STATUS, "node-status", {"usage": {}})  # not counted
    store.outages.count("servedLocally", 3)
    clock.now += 3 * 3600 + 12 * 60
    report = store.outage_closed()
    assert report == {
        "start": start,
        "end": clock.now,
        "restarts": 0,
        "buffered": 6,
        "coalesced": 4,
        "expired": 0,
        "dropped": 0,
        "servedLocally": 3,
    }
    (row,) = outage_rows(store)
    assert row["key"] == f"outage/{start!r}" and row["buffered"] == 6
    assert store.outages.open is None
    assert store.outage_closed() is None  # nothing open: nothing more


def test_a_blip_is_not_reported(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path / "edge.db", clock)
    store.outage_closed()
    store.outage_lost()
    clock.now += MIN_SECONDS - 1
    assert store.outage_closed() is None
    assert outage_rows(store) == []


def test_what_counts_as_a_blip_is_a_setting(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path / "edge.db", clock)
    store.outages.min_seconds = 2
    store.outage_closed()
    store.outage_lost()
    clock.now += 2
    assert store.outage_closed() is not None
    assert len(outage_rows(store)) == 1


def test_a_power_cut_starts_the_outage_at_the_last_live_moment_and_counts_restarts(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = open_store(tmp_path / "edge.db", clock)
    store.outage_started()
    store.outage_closed()
    clock.now += 30
    store.acknowledge(0)  # the last moment the hub was heard
    last_live = clock.now
    clock.now += 5
    twin(store, "default/a", 1)  # counted: nothing is open, the process does not know yet
    store.db.close()  # power cut: nothing more ran

    for _ in range(2):  # power comes back, then a crash, edgecore starts again
        clock.now += 600
        store = open_store(tmp_path / "edge.db", clock)
        store.outage_started()
        twin(store, "default/b", 2)  # its count is written with it
        store.db.close()
    store = open_store(tmp_path / "edge.db", clock)
    store.outage_started()
    clock.now += 60
    report = store.outage_closed()
    assert report is not None
    assert report["start"] == last_live
    assert report["restarts"] == 3
    assert report["buffered"] == 2 and report["coalesced"] == 1


def test_outbox_drops_and_expiries_while_alone_are_in_the_report(tmp_path: Path) -> None:
    clock = Clock()
    store = open_store(tmp_path / "edge.db", clock, quota=2_000)
    store.outage_closed()
    store.outage_lost()
    for i in range(40):
        store.report_event("upload", {"topic": "$hw/events/upload/x", "payload": f"{i:0100d}"})
    clock.now += 7200
    expired = store.expire_events()
    report = store.outage_closed()
    assert report is not None
    assert report["dropped"] == store.outbox_drops.counts["quota"] > 0
    assert report["expired"] == expired > 0
    assert report["buffered"] == 40
