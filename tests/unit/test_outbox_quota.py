"""The outbox's bounds: a disk quota that deletes the oldest events first and never the
latest state of a key, and an age after which events expire; both counted by reason."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from edgecore.store import ROW_BYTES, EdgeStore, OutboxLimits

UPLOAD = "upload"
STATE = "twin/reported"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def bytes_in_table(store: EdgeStore) -> int:
    return int(store.db.execute(f"SELECT total({ROW_BYTES}) FROM outbox").fetchone()[0])


def kinds_in_table(store: EdgeStore) -> dict[str, tuple[int, int]]:
    """(rows, bytes) by topic, as edgecore's metrics export them (store.outbox_kinds)."""
    rows = store.db.execute(
        f"SELECT topic, count(*), total({ROW_BYTES}) FROM outbox GROUP BY topic"
    ).fetchall()
    return {topic: (n, int(size)) for topic, n, size in rows}


def kinds_counted(store: EdgeStore) -> dict[str, tuple[int, int]]:
    return {topic: counts for topic, counts in store.outbox_kinds.items() if counts[0]}


def event(i: int, size: int = 200) -> dict[str, str]:
    return {"topic": "$hw/events/upload/meter", "payload": f"{i:06d}" + "x" * size}


def events_left(store: EdgeStore) -> list[int]:
    rows = store.db.execute("SELECT body FROM outbox WHERE key IS NULL ORDER BY seq")
    return [int(body.split('"payload":"')[1][:6]) for (body,) in rows]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(tmp_path: Path, clock: Clock, quota: int, ttl: float = 3600.0) -> EdgeStore:
    store = EdgeStore(tmp_path / "edge.db", clock=clock, limits=OutboxLimits(quota, ttl))
    store.claim("edge1")
    return store


def test_past_the_quota_the_oldest_events_go_and_every_state_stays(
    tmp_path: Path, clock: Clock
) -> None:
    store = make(tmp_path, clock, quota=20_000)
    for key in range(10):
        store.report_state(STATE, f"dev-{key}", {"device": f"dev-{key}", "twins": {"t": key}})
    for i in range(500):
        store.report_event(UPLOAD, event(i))
        assert store.outbox_bytes <= 20_000
    kept = events_left(store)
    assert kept == list(range(500 - len(kept), 500)), "not the oldest first"
    assert len(kept) > 50
    states = store.db.execute("SELECT count(*) FROM outbox WHERE key IS NOT NULL").fetchone()
    assert states[0] == 10
    assert store.outbox_drops.counts == {"quota": 500 - len(kept)}
    assert store.outbox_bytes == bytes_in_table(store)


def test_latest_states_are_kept_even_past_the_quota(tmp_path: Path, clock: Clock) -> None:
    """The quota bounds what a long outage adds (events); the latest state of each key is
    what the hub must end up with, so it is never the thing that goes."""
    store = make(tmp_path, clock, quota=1_000)
    store.report_event(UPLOAD, event(0))
    for key in range(50):
        store.report_state(STATE, f"dev-{key}", {"device": f"dev-{key}", "twins": {"t": key}})
    assert store.outbox_bytes > 1_000
    assert events_left(store) == []
    assert store.db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 50
    assert store.outbox_drops.counts == {"quota": 1}
    # a new event while only states are left: it is the oldest event, so it goes at once
    store.report_event(UPLOAD, event(1))
    assert events_left(store) == [] and store.outbox_drops.counts == {"quota": 2}


def test_report_many_keeps_the_quota_in_the_same_transaction(tmp_path: Path, clock: Clock) -> None:
    store = make(tmp_path, clock, quota=5_000)
    store.report_many([(UPLOAD, None, event(i)) for i in range(100)])
    assert store.outbox_bytes <= 5_000 == store.limits.quota_bytes
    kept = events_left(store)
    assert kept == list(range(100 - len(kept), 100))
    assert store.outbox_drops.counts["quota"] == 100 - len(kept)


def test_events_older_than_the_ttl_expire_and_states_do_not(tmp_path: Path, clock: Clock) -> None:
    store = make(tmp_path, clock, quota=10**9, ttl=3600)
    store.report_event(UPLOAD, event(0))
    store.report_state(STATE, "dev-0", {"device": "dev-0", "twins": {}})
    clock.now += 1800
    store.report_event(UPLOAD, event(1))
    clock.now += 1801  # event 0 is 3601 s old, event 1 1801 s
    assert store.expire_events() == 1
    assert events_left(store) == [1]
    assert store.db.execute("SELECT count(*) FROM outbox WHERE key IS NOT NULL").fetchone()[0]
    assert store.outbox_drops.counts == {"expired": 1}
    assert store.expire_events() == 0
    assert store.outbox_bytes == bytes_in_table(store)


def test_the_byte_count_follows_every_write_and_delete_and_survives_a_restart(
    tmp_path: Path, clock: Clock
) -> None:
    rng = random.Random(7)
    store = make(tmp_path, clock, quota=30_000)
    acked = 0
    for step in range(600):
        choice = rng.random()
        if choice < 0.4:
            store.report_event(UPLOAD, event(step, rng.randrange(10, 600)))
        elif choice < 0.7:
            key = f"dev-{rng.randrange(20)}"
            store.report_state(STATE, key, {"device": key, "twins": {"t": "x" * rng.randrange(50)}})
        elif choice < 0.8:
            store.report_many(
                [(UPLOAD, None, event(step)), (STATE, "dev-1", {"device": "dev-1", "twins": {}})]
            )
        elif choice < 0.95:
            pending = store.pending(acked, limit=rng.randrange(1, 20))
            if pending:
                acked = pending[-1].seq
                store.acknowledge(acked)
        else:
            clock.now += 600
            store.expire_events()
        assert store.outbox_bytes == bytes_in_table(store), step
        assert kinds_counted(store) == kinds_in_table(store), step
    counted = store.outbox_bytes
    store.close()
    again = EdgeStore(tmp_path / "edge.db", clock=clock, limits=OutboxLimits(30_000, 3600))
    assert again.outbox_bytes == counted
    assert kinds_counted(again) == kinds_in_table(again)


def test_a_rolled_back_write_does_not_leave_the_count_behind(tmp_path: Path, clock: Clock) -> None:
    store = make(tmp_path, clock, quota=10**9)
    store.report_event(UPLOAD, event(0))
    before = store.outbox_bytes
    with pytest.raises(RuntimeError), store.transaction():
        store.report_event(UPLOAD, event(1))
        store.report_state(STATE, "dev-0", {"device": "dev-0", "twins": {}})
        raise RuntimeError("the disk is full")
    assert store.outbox_bytes == before == bytes_in_table(store)
    assert kinds_counted(store) == kinds_in_table(store) == {UPLOAD: (1, before)}


def test_the_node_reports_its_outbox_as_usage_and_its_drops_as_status(
    tmp_path: Path, clock: Clock
) -> None:
    store = make(tmp_path, clock, quota=2_000)
    for i in range(30):
        store.report_event(UPLOAD, event(i))
    usage, status = store.outbox_status()
    assert usage == {"outboxRows": len(events_left(store)), "outboxBytes": store.outbox_bytes}
    assert status == {"quotaBytes": 2_000, "dropped": {"quota": 30 - len(events_left(store))}}


def test_an_outbox_an_older_edgecore_filled_is_counted_at_open(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    EdgeStore(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(
        "INSERT INTO outbox (topic, key, body, created, checked) VALUES ('upload', NULL, ?, 0, 0)",
        ("é" * 100,),
    )
    db.close()
    assert EdgeStore(path).outbox_bytes == len("upload") + 200
