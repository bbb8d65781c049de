"""The edge's SQLite file: cache apply rules, outbox coalescing and sequence bookkeeping."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from edgecore.store import EdgeStore, open_store
from edgeward import protocol
from edgeward.errors import ConfigError
from edgeward.protocol import MAX_SEQ, Change
from edgeward.storable import MAX_FRAME_BYTES, MAX_REPORT_BYTES


def put(name: str, rv: int, value: str = "v") -> Change:
    body = {
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": str(rv)},
        "spec": {"v": value},
    }
    return Change("put", "Device", "default", name, rv, body)


def delete(name: str, rv: int) -> Change:
    return Change("delete", "Device", "default", name, rv)


@pytest.fixture
def store(tmp_path: Path) -> EdgeStore:
    s = EdgeStore(tmp_path / "edge.db")
    s.claim("edge1")
    return s


def names(store: EdgeStore) -> dict[str, str]:
    return {o["metadata"]["name"]: o["spec"]["v"] for o in store.objects("Device")}


def test_changes_and_revision_are_applied_together(store: EdgeStore) -> None:
    """A batch and its revision land in one transaction, and survive reopening the file."""
    store.apply_changes(5, [put("a", 3), put("b", 5)])
    assert store.revision() == 5
    store.close()
    again = EdgeStore(store.path)
    assert again.revision() == 5
    assert names(again) == {"a": "v", "b": "v"}


def test_a_failing_batch_changes_nothing(store: EdgeStore) -> None:
    """If applying a batch fails half-way, neither its objects nor its revision are kept."""
    store.apply_changes(2, [put("a", 2)])
    broken = Change("put", "Device", "default", "b", 4, {"not-serializable": {1, 2}})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        store.apply_changes(4, [put("c", 3), broken])
    assert store.revision() == 2
    assert names(store) == {"a": "v"}


def test_replays_and_stale_changes_are_harmless(store: EdgeStore) -> None:
    """A change older than the stored object is skipped, so a replayed batch cannot roll
    an object back or delete one that was re-created later."""
    store.apply_changes(10, [put("a", 10, "new")])
    store.apply_changes(10, [put("a", 7, "old"), delete("a", 8)])
    assert names(store) == {"a": "new"}
    store.apply_changes(11, [delete("a", 11)])
    assert names(store) == {}
    store.apply_changes(11, [delete("a", 11)])  # deleting what is gone is fine
    assert store.revision() == 11


def test_snapshot_replaces_the_whole_cache(store: EdgeStore) -> None:
    """A snapshot removes every object it does not contain."""
    store.apply_changes(5, [put("a", 1), put("b", 2), put("c", 5)])
    store.replace_all(9, [put("b", 9, "fresh")])
    assert names(store) == {"b": "fresh"}
    assert store.revision() == 9


def test_state_reports_coalesce_and_events_do_not(store: EdgeStore) -> None:
    """Unsent state rows for one key collapse to the latest value; events all stay, in order."""
    store.report_state("node/status", "node-status", {"n": 1})
    store.report_event("device/event", {"e": 1})
    store.report_state("node/status", "node-status", {"n": 2})
    store.report_event("device/event", {"e": 2})
    items = store.pending(0)
    assert [(i.topic, i.body) for i in items] == [
        ("device/event", {"e": 1}),
        ("node/status", {"n": 2}),
        ("device/event", {"e": 2}),
    ]
    assert [i.seq for i in items] == sorted(i.seq for i in items)


def test_rows_queued_together_leave_what_one_by_one_would(store: EdgeStore) -> None:
    """report_many writes the rows report_state/report_event would write one at a time: a key's
    last row, at the place of its last occurrence, replacing an older unsent one; every event."""
    store.report_state("node/status", "node-status", {"n": 0})
    store.report_many(
        [
            ("twin/reported", "twin/a", {"v": 1}),
            ("upload", None, {"e": 1}),
            ("twin/reported", "twin/b", {"v": 1}),
            ("node/status", "node-status", {"n": 1}),
            ("twin/reported", "twin/a", {"v": 2}),
            ("upload", None, {"e": 2}),
        ]
    )
    items = store.pending(0)
    assert [(i.topic, i.key, i.body) for i in items] == [
        ("upload", None, {"e": 1}),
        ("twin/reported", "twin/b", {"v": 1}),
        ("node/status", "node-status", {"n": 1}),
        ("twin/reported", "twin/a", {"v": 2}),
        ("upload", None, {"e": 2}),
    ]
    assert [i.seq for i in items] == sorted(i.seq for i in items)


def test_twin_states_are_saved_and_deleted_in_bulk(store: EdgeStore) -> None:
    """save_twins stores (or replaces) several devices' states at once; delete_twins drops them."""
    store.save_twins([("default/a", {"v": 1}), ("default/b", {"v": 1})])
    store.save_twins(iter([("default/a", {"v": 2})]))
    assert store.twins() == {"default/a": {"v": 2}, "default/b": {"v": 1}}
    store.delete_twins(["default/b", "default/unknown"])
    assert store.twins() == {"default/a": {"v": 2}}


def test_sequence_numbers_never_go_back(store: EdgeStore) -> None:
    """After every row is acknowledged and deleted, new rows still get higher seqs, so the hub
    never mistakes them for replays."""
    first = store.report_event("e", {})
    store.acknowledge(first)
    assert store.outbox_size() == 0
    second = store.report_event("e", {})
    assert second > first
    store.close()
    third = EdgeStore(store.path).report_event("e", {})
    assert third > second


def test_pending_respects_limits_but_always_returns_a_row(store: EdgeStore) -> None:
    """Report frames are bounded in rows and bytes, yet a single huge row still goes out."""
    for i in range(10):
        store.report_event("e", {"i": i})
    assert len(store.pending(0, limit=3)) == 3
    assert len(store.pending(0, max_bytes=20)) == 2
    store.report_event("big", {"x": "y" * 10_000})
    after = store.pending(0)[-2].seq
    assert [i.topic for i in store.pending(after, max_bytes=100)] == ["big"]


def test_align_outbox_acknowledges_what_the_hub_holds(store: EdgeStore) -> None:
    """The hub's persisted seq in welcome deletes rows up to it."""
    seqs = [store.report_event("e", {"i": i}) for i in range(5)]
    store.align_outbox(seqs[2])
    assert [i.seq for i in store.pending(0)] == seqs[3:]


def test_align_outbox_renumbers_after_the_edge_was_wiped(store: EdgeStore) -> None:
    """If the hub has seen seqs this file never issued (the edge's data was wiped and the node
    re-joined under its name), pending rows move above the hub's seq instead of being lost."""
    store.report_event("e", {"i": 1})
    store.report_state("s", "k", {"i": 2})
    store.align_outbox(1000)
    items = store.pending(0)
    assert [i.body for i in items] == [{"i": 1}, {"i": 2}]
    assert all(i.seq > 1000 for i in items)
    assert store.report_event("e", {"i": 3}) > items[-1].seq


def test_renumbered_rows_follow_the_hub_seq_without_a_gap_or_an_overflow(
    store: EdgeStore,
) -> None:
    """Pending rows are renumbered to follow the hub's seq in order: even at the highest seq a
    hub may hold, the new seqs fit (shifting by it, as before, overflowed int64 and edgecore
    crashed at every start)."""
    for i in range(3):
        store.report_event("e", {"i": i})
    store.acknowledge(1)
    store.align_outbox(MAX_SEQ)
    assert [i.seq for i in store.pending(0)] == [MAX_SEQ + 1, MAX_SEQ + 2]
    assert store.report_event("e", {"i": 9}) == MAX_SEQ + 3
    store.align_outbox(MAX_SEQ + 3)
    assert store.pending(0) == []


def test_a_file_aligned_before_takes_a_higher_hub_seq_as_an_acknowledgement(
    store: EdgeStore,
) -> None:
    """Once a file has been aligned, a hub seq above anything it recorded issuing means the
    hub took a row sent from memory (hold_state) after acknowledging the rows below it:
    those rows are deleted, not renumbered and sent a second time."""
    store.align_outbox(0)
    store.report_event("e", {"i": 1})
    store.report_event("e", {"i": 2})
    store.align_outbox(1000)
    assert store.pending(0) == []
    assert store.report_event("e", {"i": 3}) == 1001


def full_disk(*_args: object) -> None:
    raise sqlite3.OperationalError("database or disk is full")


def test_a_status_edge_db_cannot_take_is_sent_from_memory_in_seq_order(
    store: EdgeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk the node's status is held in memory and sent after every stored row,
    at a seq above them; rows stored later follow it, and its key's next stored value or
    the hub's acknowledgement replaces it."""
    first = store.report_event("e", {"i": 1})
    with monkeypatch.context() as m:
        m.setattr(store, "_append", full_disk)
        with pytest.raises(sqlite3.OperationalError):
            store.report_state("node/status", "node-status", {"disk": 100})
    held = store.hold_state("node/status", "node-status", {"disk": 100})
    assert held == first + 1
    assert [i.seq for i in store.pending(0)] == [first], "stored rows go first"
    assert [(i.seq, i.body) for i in store.pending(first)] == [(held, {"disk": 100})]
    again = store.hold_state("node/status", "node-status", {"disk": 99})
    assert again == held + 1 and [i.body for i in store.pending(first)] == [{"disk": 99}]
    later = store.report_event("e", {"i": 2})
    assert later > again, "a row stored later is numbered above the held one"
    assert [i.seq for i in store.pending(first)] == [again]
    assert [i.seq for i in store.pending(again)] == [later]
    store.acknowledge(again)
    assert [i.seq for i in store.pending(0)] == [later]
    store.hold_state("node/status", "node-status", {"disk": 98})
    store.report_state("node/status", "node-status", {"disk": 50})
    assert [i.body for i in store.pending(later)] == [{"disk": 50}], "the stored value wins"


def test_a_refused_status_is_not_held(store: EdgeStore) -> None:
    assert store.hold_state("node/status", "node-status", {"x": "\ud800"}) is None
    assert store.pending(0) == []


def test_alignment_on_a_full_disk_keeps_the_link_and_numbers_new_rows_above_the_hub(
    store: EdgeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub's seq cannot be recorded on a full disk: the session goes on, the rows the
    hub holds are deleted at the next alignment, and no new row takes a seq the hub has."""
    store.align_outbox(0)
    store.report_event("e", {"i": 1})
    with monkeypatch.context() as m:
        m.setattr(store, "_delete", full_disk)
        store.align_outbox(500)  # no exception: the link comes up
    assert store.hold_state("node/status", "node-status", {"disk": 100}) == 501
    assert store.report_event("e", {"i": 2}) == 502
    store.align_outbox(501)
    assert [i.seq for i in store.pending(0)] == [502]


def test_a_file_never_aligned_is_not_numbered_past_on_a_full_disk(
    store: EdgeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new file's rows must be renumbered above the hub's seq before any is sent: when
    the disk is full that fails the session (it tries again) rather than leave them below
    the rows that would be sent meanwhile, where a later alignment would delete them."""
    store.report_event("e", {"i": 1})
    with monkeypatch.context() as m:
        m.setattr(store, "_renumber_after", full_disk)
        with pytest.raises(sqlite3.OperationalError):
            store.align_outbox(500)
    store.align_outbox(500)
    assert [(i.seq, i.body) for i in store.pending(500)] == [(501, {"i": 1})]


def test_a_snapshot_is_staged_and_replaces_the_cache_on_its_final_frame(store: EdgeStore) -> None:
    """Snapshot frames are kept aside until the final one; then the cache becomes exactly
    the snapshot, with its revision, in one transaction; a new snapshot drops what an
    unfinished one had staged."""
    store.apply_changes(3, [put("old", 1), put("kept", 2)])
    store.stage_snapshot(9, [put("stale", 5)], first=True, final=False)
    assert store.revision() == 3 and store.get_object("Device", "default", "stale") is None
    store.stage_snapshot(9, [put("kept", 8)], first=True, final=False)  # starts over
    changed = store.stage_snapshot(9, [put("new", 9)], first=False, final=True, observe=list)
    assert store.revision() == 9
    assert sorted(o["metadata"]["name"] for o in store.objects("Device")) == ["kept", "new"]
    assert sorted((a.name, a.before is None, a.after is None) for a in changed) == [
        ("kept", False, False),
        ("new", True, False),
        ("old", False, True),
    ]


def test_a_file_belongs_to_one_node(store: EdgeStore) -> None:
    """Starting with another node name on an existing cache is refused with a clear reason."""
    store.claim("edge1")
    with pytest.raises(ConfigError, match="holds the cache of node 'edge1'"):
        store.claim("edge2")


def test_corrupt_or_foreign_files_are_refused_clearly(tmp_path: Path) -> None:
    """A file that is not an edge cache gives a one-line reason, not a traceback."""
    bad = tmp_path / "edge.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="cannot open the edge cache"):
        open_store(bad)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A cache written by a newer edgecore is not opened by an older one (no silent damage)."""
    path = tmp_path / "edge.db"
    EdgeStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(ConfigError, match="newer than this edgecore"):
        EdgeStore(path)


def test_health_counts_devices_and_outbox_rows_under_the_write_lock(store: EdgeStore) -> None:
    """The watchdog's probe: the status line's counts, read holding the write lock (another
    writer makes it wait) and writing nothing."""
    store.apply_changes(2, [put("a", 1), put("b", 2)])
    store.report_state("twin/reported", "k1", {"v": 1})
    store.report_event("event", {"v": 2})
    assert store.health() == (2, 2)
    other = sqlite3.connect(store.path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    store.db.execute("PRAGMA busy_timeout = 0")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.health()
    other.execute("ROLLBACK")
    other.close()
    changes = store.db.total_changes
    assert store.health() == (2, 2)
    assert store.db.total_changes == changes


def test_file_is_in_wal_mode_with_full_sync(store: EdgeStore) -> None:
    """The cache uses WAL and synchronous=FULL, so a committed batch survives power loss."""
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_acknowledging_rows_leaves_full_sync_on(store: EdgeStore) -> None:
    """Deleting acknowledged rows skips the disk sync (a replay is harmless), but every other
    write still waits for it."""
    seq = store.report_event("e", {})
    store.acknowledge(seq)
    assert store.outbox_size() == 0
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2


def _deferred_foreign_key(store: EdgeStore) -> None:
    """Tables whose foreign key is checked only at COMMIT (test-only, in the store's file)."""
    store.db.execute("PRAGMA foreign_keys = ON")
    store.db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    store.db.execute(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER "
        "REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )


def test_a_failed_commit_leaves_the_store_usable(store: EdgeStore) -> None:
    """When COMMIT itself fails (SQLite keeps the transaction open, as after a disk error), the
    error reaches the caller, nothing of the transaction is kept, and the next write works."""
    _deferred_foreign_key(store)
    with pytest.raises(sqlite3.IntegrityError), store.transaction():
        store.report_event("e", {"i": 1})
        store.db.execute("INSERT INTO child (parent) VALUES (42)")
    assert not store.db.in_transaction
    assert store.outbox_size() == 0
    assert store.db.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    seq = store.report_event("e", {"i": 2})
    assert [i.seq for i in store.pending(0)] == [seq]


def test_a_full_disk_fails_the_write_and_leaves_the_store_usable(store: EdgeStore) -> None:
    """A write that runs out of space (SQLite may roll the transaction back by itself) raises
    the disk error itself, keeps nothing, and the store works again once there is room."""
    store.report_event("e", {"i": 0})
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(sqlite3.OperationalError, match="full"), store.transaction():
        for i in range(1000):
            store.report_event("e", {"i": i, "pad": "x" * 4000})
    assert not store.db.in_transaction
    assert store.outbox_size() == 1
    store.db.execute("PRAGMA max_page_count = 1073741823")
    store.report_event("e", {"i": 1})
    assert store.outbox_size() == 2


# -- rows the hub could not take ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"x": "y" * MAX_REPORT_BYTES}, "too_large"),
        ({"x": float("nan")}, "unstorable"),
        ({"x": 2**63}, "unstorable"),
        ({"x": "\ud800"}, "unstorable"),
        ({"x": {"y": {1, 2}}}, "unstorable"),
    ],
)
def test_a_row_the_hub_could_not_take_is_refused_when_written(
    store: EdgeStore, body: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A row whose body is not storable or is larger than the hub takes is not written: it is
    counted by reason and logged, and the rows around it are written as usual."""
    first = store.report_event("upload", {"i": 1})
    assert store.report_event("upload", body) is None
    assert store.report_state("node/status", "node-status", body) is None
    store.report_many([("twin/reported", "twin/a", body), ("upload", None, {"i": 2})])
    assert [(i.seq == first, i.body) for i in store.pending(0)] == [
        (True, {"i": 1}),
        (False, {"i": 2}),
    ]
    assert store.outbox_drops.counts == {reason: 3}
    assert "refused a row on upload, never sent" in caplog.text


def test_a_refused_state_row_leaves_the_older_value_of_its_key(store: EdgeStore) -> None:
    """When the latest value of a key is refused, the older unsent value is still sent (it is
    still the newest the hub can take)."""
    store.report_state("twin/reported", "twin/a", {"v": 1})
    assert store.report_state("twin/reported", "twin/a", {"v": 2**64}) is None
    store.report_many([("twin/reported", "twin/a", {"v": float("inf")})])
    assert [i.body for i in store.pending(0)] == [{"v": 1}]


def test_refusals_are_logged_at_a_limited_rate(
    store: EdgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer repeating bad input cannot flood the log: one line per reason and minute."""
    for _ in range(50):
        store.report_event("upload", {"x": float("nan")})
    assert store.outbox_drops.counts == {"unstorable": 50}
    assert caplog.text.count("refused a row on upload") == 1


def _plant(store: EdgeStore, topic: object, body: object, key: object = None) -> int:
    """A row written straight into the outbox, as an older edgecore (or a hand) could have."""
    cur = store.db.execute(
        "INSERT INTO outbox (topic, key, body, created) VALUES (?, ?, ?, 0)", (topic, key, body)
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


PLANTED = [
    ("upload", '{"payload":"' + "y" * (MAX_FRAME_BYTES + 10) + '"}'),
    ("upload", '{"payload":"' + "y" * MAX_REPORT_BYTES + '"}'),
    ("upload", "not json"),
    ("upload", b"\xff\xfe not utf-8"),
    ("upload", '{"x":NaN}'),
    ("upload", '{"x":"\\ud800"}'),
    ("upload", '{"x":18446744073709551616}'),
    ("upload", "[1,2]"),
    ("", '{"x":1}'),
    (b"\xff topic", '{"x":1}'),
    ("t" * MAX_FRAME_BYTES, '{"x":1}'),
]


def test_stored_rows_the_hub_could_not_take_are_quarantined(
    store: EdgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows already in the outbox that the hub could not take (an older edgecore wrote them)
    are deleted instead of sent, each counted and logged with its seq and topic; the rows
    around them are sent."""
    before = store.report_event("upload", {"i": 1})
    planted = [_plant(store, topic, body) for topic, body in PLANTED]
    after = store.report_state("twin/reported", "twin/a", {"i": 2})
    items = store.pending(0)
    assert [i.seq for i in items] == [before, after]
    assert store.outbox_drops.counts == {"quarantined": len(PLANTED)}
    for seq in planted:
        assert f"deleted row {seq} (" in caplog.text
    assert f"deleted row {planted[0]} (upload) unsent" in caplog.text
    assert store.outbox_size() == 2
    assert [i.seq for i in store.pending(0)] == [before, after]
    assert store.outbox_drops.counts == {"quarantined": len(PLANTED)}


def test_a_row_an_older_edgecore_escaped_is_measured_as_it_is_sent(store: EdgeStore) -> None:
    """An older edgecore stored non-ASCII text as \\u escapes: a row that is larger stored than
    sent is sent, not quarantined."""
    body = {"payload": "é" * (MAX_REPORT_BYTES // 3)}
    seq = _plant(store, "upload", json.dumps(body))  # ASCII: 6 bytes per é, 2 as sent
    assert [(i.seq, i.body) for i in store.pending(0)] == [(seq, body)]


def test_a_report_frame_never_exceeds_the_frame_limit(store: EdgeStore) -> None:
    """However large the rows (each within the limit), pending never builds a frame larger
    than the hub accepts, and every row is sent in turn."""
    big = {"payload": "y" * (MAX_REPORT_BYTES - 100)}
    seqs = [store.report_event("upload", big) for _ in range(9)]
    sent: list[int] = []
    while len(sent) < len(seqs):
        items = store.pending(sent[-1] if sent else 0, max_bytes=MAX_FRAME_BYTES)
        frame = protocol.Report(tuple(items)).encode().encode()
        assert len(frame) <= MAX_FRAME_BYTES
        assert 0 < len(items) <= 3
        sent.extend(i.seq for i in items)
    assert sent == seqs


def test_rows_checked_when_written_are_sent_as_they_are_and_damage_is_still_caught(
    store: EdgeStore,
) -> None:
    """A row this edgecore wrote was checked then, so reading it costs only its parse; should
    it be damaged on disk since, it is quarantined like a row an older edgecore wrote."""
    good = store.report_event("upload", {"i": 1})
    damaged = store.report_event("upload", {"i": 2})
    after = store.report_event("upload", {"i": 3})
    store.db.execute("UPDATE outbox SET body = '{\"i\": ' WHERE seq = ?", (damaged,))
    assert [(i.seq, i.body) for i in store.pending(0)] == [(good, {"i": 1}), (after, {"i": 3})]
    assert store.outbox_drops.counts == {"quarantined": 1}
