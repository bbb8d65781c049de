"""The sync bookkeeping: resume decisions, per-node backlogs, batching and the outbox window."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.kinds import ALL_NODES
from edgeward.protocol import Change, Changes, decode
from edgeward.sync import (
    ChangeRow,
    NodeBacklog,
    OutboxCursor,
    change_batches,
    resume_mode,
    snapshot_frames,
)

Key = tuple[str, str, str]


def device(name: str, node: str | None, revision: int, temp: str = "21") -> dict[str, Any]:
    """A stored Device body bound to ``node`` (None: unbound) at ``revision``."""
    spec: dict[str, Any] = {"properties": [{"name": "temp", "desired": {"value": temp}}]}
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": str(revision)},
        "spec": spec,
    }


def model(name: str, revision: int) -> dict[str, Any]:
    """A stored DeviceModel body at ``revision``."""
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": str(revision)},
        "spec": {"properties": [{"name": "temp", "type": "INT"}]},
    }


def row(
    revision: int,
    name: str,
    op: Literal["create", "update", "delete"],
    route: str | None,
    prev_route: str | None,
    kind: str = "Device",
) -> ChangeRow:
    """A change-log row as the hub's store writes it."""
    body = model(name, revision) if kind == "DeviceModel" else device(name, route, revision)
    return ChangeRow(revision, kind, "default", name, op, route, prev_route, body)


def apply(cache: dict[Key, dict[str, Any]], changes: tuple[Change, ...] | list[Change]) -> None:
    """Apply changes to an edge cache the way the edge does: put stores, delete removes."""
    for change in changes:
        if change.op == "put":
            assert change.object is not None
            cache[change.key] = change.object
        else:
            cache.pop(change.key, None)


# -- resume_mode -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("edge", "compacted", "head", "mode"),
    [
        (0, 0, 0, "changes"),  # a fresh edge on a fresh hub
        (0, 0, 50, "changes"),  # a fresh edge, nothing compacted yet
        (10, 10, 50, "changes"),  # exactly at the compaction point
        (30, 10, 50, "changes"),  # inside the log
        (50, 10, 50, "changes"),  # up to date
        (9, 10, 50, "snapshot"),  # older than the log
        (0, 10, 50, "snapshot"),  # a fresh edge after compaction
        (51, 10, 50, "snapshot"),  # ahead of the hub (restored from a backup)
        (1000, 0, 0, "snapshot"),  # ahead of an empty hub
    ],
)
def test_resume_mode(edge: int, compacted: int, head: int, mode: str) -> None:
    """Changes when the edge revision is within [compacted, head], otherwise a snapshot."""
    assert resume_mode(edge, compacted, head) == mode


# -- ChangeRow -------------------------------------------------------------------


def test_row_touches_its_route_and_previous_route_only() -> None:
    """A row touches the node it routes to and the node it routed to before, nobody else."""
    rebind = row(5, "d", "update", "b", "a")
    assert rebind.touches("a")
    assert rebind.touches("b")
    assert not rebind.touches("c")
    unbound = row(6, "d", "update", None, None)
    assert not unbound.touches("a")
    assert not unbound.touches("*")


def test_row_routed_to_all_nodes_touches_every_node() -> None:
    """A DeviceModel row (route "*") touches every node."""
    r = row(3, "m", "create", ALL_NODES, None, kind="DeviceModel")
    assert all(r.touches(n) for n in ("a", "b", "edge-17"))


def test_change_for_the_route_is_a_put_with_the_body() -> None:
    """A create or update is a put of the new body for the node it routes to."""
    r = row(7, "d", "update", "a", "a")
    assert r.change_for("a") == Change("put", "Device", "default", "d", 7, r.body)
    assert r.key == ("Device", "default", "d")


def test_rebind_is_a_delete_for_the_old_node_and_a_put_for_the_new() -> None:
    """Moving a device from A to B deletes it on A and puts it on B."""
    r = row(8, "d", "update", "b", "a")
    assert r.change_for("a") == Change("delete", "Device", "default", "d", 8)
    assert r.change_for("b") == Change("put", "Device", "default", "d", 8, r.body)


def test_unbinding_is_a_delete_for_the_old_node() -> None:
    """Clearing a device's nodeName deletes it on the node it was bound to."""
    r = row(9, "d", "update", None, "a")
    assert r.touches("a")
    assert r.change_for("a").op == "delete"


def test_delete_row_is_a_delete_even_on_its_route() -> None:
    """A deleted object is deleted on the node it was routed to."""
    r = row(10, "d", "delete", "a", "a")
    assert r.change_for("a") == Change("delete", "Device", "default", "d", 10)


def test_deleted_model_is_deleted_on_every_node() -> None:
    """Deleting a DeviceModel sends a delete to every node."""
    r = row(11, "m", "delete", ALL_NODES, ALL_NODES, kind="DeviceModel")
    for node in ("a", "b"):
        assert r.touches(node)
        assert r.change_for(node) == Change("delete", "DeviceModel", "default", "m", 11)


# -- NodeBacklog -----------------------------------------------------------------


def test_backlog_keeps_the_latest_state_per_object() -> None:
    """Several writes to one object leave only the newest in the backlog."""
    backlog = NodeBacklog("a")
    backlog.add([row(1, "d", "create", "a", None), row(2, "d", "update", "a", "a")])
    backlog.add([row(3, "d", "update", "a", "a")])
    assert len(backlog) == 1
    (change,) = backlog.take()
    assert change.op == "put"
    assert change.resource_version == 3
    assert change.object == device("d", "a", 3)


def test_backlog_rebind_away_and_back() -> None:
    """A device re-bound A→B is a delete for A; re-bound back B→A it is a put for A again."""
    away = [row(1, "d", "create", "a", None), row(2, "d", "update", "b", "a")]
    a, b = NodeBacklog("a"), NodeBacklog("b")
    a.add(away)
    b.add(away)
    assert [(c.op, c.resource_version) for c in a.take()] == [("delete", 2)]
    assert [(c.op, c.resource_version) for c in b.take()] == [("put", 2)]

    back = [row(3, "d", "update", "a", "b")]
    a.add(back)
    b.add(back)
    assert [(c.op, c.resource_version) for c in a.take()] == [("put", 3)]
    assert [(c.op, c.resource_version) for c in b.take()] == [("delete", 3)]


def test_backlog_delivers_models_to_every_node() -> None:
    """A DeviceModel change reaches every node's backlog."""
    rows = [row(1, "m", "create", ALL_NODES, None, kind="DeviceModel")]
    for node in ("a", "b", "c"):
        backlog = NodeBacklog(node)
        backlog.add(rows)
        assert [c.key for c in backlog.take()] == [("DeviceModel", "default", "m")]


def test_backlog_ignores_rows_for_other_nodes() -> None:
    """Rows that neither route nor routed to the node leave its backlog empty."""
    backlog = NodeBacklog("a")
    backlog.add(
        [
            row(1, "d1", "create", "b", None),
            row(2, "d1", "update", "c", "b"),
            row(3, "d2", "create", None, None),
            row(4, "d1", "delete", "c", "c"),
        ]
    )
    assert len(backlog) == 0
    assert backlog.take() == []


def test_backlog_create_then_delete_is_a_delete() -> None:
    """An object created and deleted since the edge's revision is owed as a delete."""
    backlog = NodeBacklog("a")
    backlog.add([row(1, "d", "create", "a", None), row(2, "d", "delete", "a", "a")])
    assert backlog.take() == [Change("delete", "Device", "default", "d", 2)]


def test_backlog_output_is_in_revision_order() -> None:
    """take() lists changes in the revision order of each object's latest write."""
    backlog = NodeBacklog("a")
    backlog.add(
        [
            row(1, "x", "create", "a", None),
            row(2, "y", "create", "a", None),
            row(3, "z", "create", ALL_NODES, None, kind="DeviceModel"),
            row(4, "x", "update", "a", "a"),
            row(5, "y", "update", "b", "a"),
        ]
    )
    assert [(c.name, c.op, c.resource_version) for c in backlog.take()] == [
        ("z", "put", 3),
        ("x", "put", 4),
        ("y", "delete", 5),
    ]


def test_take_empties_the_backlog() -> None:
    """After take() the backlog holds nothing until new rows are added."""
    backlog = NodeBacklog("a")
    backlog.add([row(1, "d", "create", "a", None)])
    assert len(backlog.take()) == 1
    assert len(backlog) == 0
    assert backlog.take() == []


# -- change_batches --------------------------------------------------------------


def puts(count: int, start: int = 1, blob: int = 0) -> list[Change]:
    """``count`` put changes with consecutive revisions and bodies padded by ``blob`` bytes."""
    return [
        Change("put", "Device", "default", f"d{i}", i, {"n": i, "pad": "x" * blob})
        for i in range(start, start + count)
    ]


def test_empty_backlog_is_one_empty_frame_carrying_through() -> None:
    """No owed changes still produce one frame, so the edge records the revision read up to."""
    assert change_batches([], through=42) == [Changes(revision=42, items=())]


def test_small_backlog_is_one_frame_carrying_through() -> None:
    """Changes that fit one frame go in one frame carrying ``through``."""
    changes = puts(3)
    assert change_batches(changes, through=10) == [Changes(revision=10, items=tuple(changes))]


def test_batches_split_by_item_count() -> None:
    """At most max_items changes go in one frame; each full frame carries its newest revision."""
    changes = puts(7)
    frames = change_batches(changes, through=20, max_items=3)
    assert [len(f.items) for f in frames] == [3, 3, 1]
    assert [f.revision for f in frames] == [3, 6, 20]
    assert [c for f in frames for c in f.items] == changes


def test_batches_split_by_byte_size() -> None:
    """A frame's objects stay under max_bytes; a single object larger than it still goes alone."""
    changes = puts(5, blob=400)
    size = len(json.dumps(changes[0].object, separators=(",", ":")))
    frames = change_batches(changes, through=9, max_bytes=2 * size + 1)
    assert [len(f.items) for f in frames] == [2, 2, 1]
    assert [f.revision for f in frames] == [2, 4, 9]

    huge = puts(2, blob=5000)
    frames = change_batches(huge, through=9, max_bytes=100)
    assert [len(f.items) for f in frames] == [1, 1]
    assert [f.revision for f in frames] == [1, 9]


def test_batches_count_deletes() -> None:
    """Deletes (which carry no object) still count towards a frame's size."""
    deletes = [Change("delete", "Device", "default", f"d{i}", i) for i in range(1, 11)]
    frames = change_batches(deletes, through=10, max_bytes=64 * 3)
    assert [len(f.items) for f in frames] == [3, 3, 3, 1]
    assert all(len(f.encode()) < 1024 for f in frames)


def test_batches_round_trip_on_the_wire() -> None:
    """Every batch frame is a valid changes message."""
    changes = [*puts(5, blob=50), Change("delete", "Device", "default", "gone", 6)]
    for message in change_batches(changes, through=6, max_items=2):
        assert decode(message.encode()) == message


# -- snapshot_frames -------------------------------------------------------------


def test_snapshot_of_nothing_is_one_final_empty_frame() -> None:
    """An edge owed no objects still gets one final snapshot frame, which empties its cache."""
    (only,) = snapshot_frames([], revision=12)
    assert only.final
    assert only.items == ()
    assert only.revision == 12


def test_snapshot_frames_mark_only_the_last_final() -> None:
    """A snapshot split over frames is final only on its last frame, all at one revision."""
    objects = [device(f"d{i}", "a", i) for i in range(1, 8)] + [model("m", 8)]
    frames = snapshot_frames(objects, revision=30, max_items=3)
    assert [len(f.items) for f in frames] == [3, 3, 2]
    assert [f.final for f in frames] == [False, False, True]
    assert {f.revision for f in frames} == {30}
    items = [c for f in frames for c in f.items]
    assert all(c.op == "put" for c in items)
    assert [c.object for c in items] == objects
    assert items[0] == Change("put", "Device", "default", "d1", 1, objects[0])
    assert items[-1].key == ("DeviceModel", "default", "m")
    assert items[-1].resource_version == 8


def test_snapshot_frames_split_by_size() -> None:
    """Large objects split a snapshot over several frames by byte size."""
    objects = [{**device(f"d{i}", "a", i), "pad": "x" * 1000} for i in range(1, 5)]
    frames = snapshot_frames(objects, revision=4, max_bytes=2500)
    assert [len(f.items) for f in frames] == [2, 2]
    assert [f.final for f in frames] == [False, True]


def test_snapshot_of_cluster_scoped_object_has_empty_namespace() -> None:
    """An object without a namespace is snapshotted with namespace ""."""
    node = {"kind": "Node", "metadata": {"name": "edge-1", "resourceVersion": "3"}}
    (only,) = snapshot_frames([node], revision=3)
    assert only.items[0].key == ("Node", "", "edge-1")


def test_snapshot_frames_round_trip_on_the_wire() -> None:
    """Every snapshot frame is a valid snapshot message."""
    objects = [device(f"d{i}", "a", i) for i in range(1, 6)]
    for message in snapshot_frames(objects, revision=5, max_items=2):
        assert decode(message.encode()) == message


# -- the resume guarantee, as a property -----------------------------------------

NODES = ("a", "b", "c")
DEVICES = ("d0", "d1", "d2", "d3")
MODELS = ("m0", "m1")

writes = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(DEVICES), st.sampled_from((*NODES, None))),
        st.tuples(st.just("delete"), st.sampled_from(DEVICES), st.none()),
        st.tuples(st.just("put"), st.sampled_from(MODELS), st.just(ALL_NODES)),
        st.tuples(st.just("delete"), st.sampled_from(MODELS), st.none()),
    ),
    max_size=40,
)


@dataclass
class Hub:
    """A model of the hub's store: objects with their routes, and the change log it writes."""

    objects: dict[Key, tuple[str | None, dict[str, Any]]] = field(default_factory=dict)
    rows: list[ChangeRow] = field(default_factory=list)

    def write(self, what: str, name: str, route: str | None) -> None:
        kind = "DeviceModel" if name in MODELS else "Device"
        key = (kind, "default", name)
        revision = len(self.rows) + 1
        current = self.objects.get(key)
        if what == "delete":
            if current is None:
                return
            old_route, body = current
            del self.objects[key]
            self.rows.append(
                ChangeRow(revision, kind, "default", name, "delete", old_route, old_route, body)
            )
            return
        body = model(name, revision) if kind == "DeviceModel" else device(name, route, revision)
        op: Literal["create", "update"] = "create" if current is None else "update"
        prev = None if current is None else current[0]
        self.objects[key] = (route, body)
        self.rows.append(ChangeRow(revision, kind, "default", name, op, route, prev, body))

    def routed_to(self, node: str) -> dict[Key, dict[str, Any]]:
        """What ``node`` should hold now: every object routed to it or to every node."""
        return {k: body for k, (route, body) in self.objects.items() if route in (node, ALL_NODES)}


def replay(history: list[tuple[str, str, str | None]]) -> Hub:
    hub = Hub()
    for what, name, route in history:
        hub.write(what, name, route)
    return hub


def edge_at(hub: Hub, node: str, revision: int) -> dict[Key, dict[str, Any]]:
    """An edge cache that applied every row up to ``revision`` one by one."""
    cache: dict[Key, dict[str, Any]] = {}
    for r in hub.rows[:revision]:
        if r.touches(node):
            apply(cache, [r.change_for(node)])
    return cache


def owed(hub: Hub, node: str, after: int) -> list[Change]:
    backlog = NodeBacklog(node)
    backlog.add(r for r in hub.rows if r.revision > after)
    return backlog.take()


@settings(max_examples=200, deadline=None)
@given(writes, st.data())
def test_resuming_from_any_revision_converges(
    history: list[tuple[str, str, str | None]], data: st.DataObject
) -> None:
    """An edge at any revision that applies its backlog holds exactly what is routed to it."""
    hub = replay(history)
    head = len(hub.rows)
    node = data.draw(st.sampled_from(NODES), label="node")
    start = data.draw(st.integers(0, head), label="edge revision")

    # the edge at ``start`` holds what a hub stopped at ``start`` routes to it
    prefix = Hub()
    for r in hub.rows[:start]:
        prefix.objects.pop(r.key, None)
        if r.op != "delete":
            prefix.objects[r.key] = (r.route, r.body)
    cache = edge_at(hub, node, start)
    assert cache == prefix.routed_to(node)

    changes = owed(hub, node, start)
    revisions = [c.resource_version for c in changes]
    assert revisions == sorted(set(revisions))
    assert all(r > start for r in revisions)
    apply(cache, changes)
    assert cache == hub.routed_to(node)


@settings(max_examples=200, deadline=None)
@given(writes, st.data())
def test_resuming_after_a_partial_batch_converges(
    history: list[tuple[str, str, str | None]], data: st.DataObject
) -> None:
    """An edge that stops after any batch frame and resumes from that frame's revision converges."""
    hub = replay(history)
    head = len(hub.rows)
    node = data.draw(st.sampled_from(NODES), label="node")
    start = data.draw(st.integers(0, head), label="edge revision")
    max_items = data.draw(st.integers(1, 4), label="max_items")
    max_bytes = data.draw(st.integers(1, 1000), label="max_bytes")

    cache = edge_at(hub, node, start)
    frames = change_batches(owed(hub, node, start), head, max_items, max_bytes)
    assert frames[-1].revision == head
    assert all(len(f.items) <= max_items for f in frames)
    kept = data.draw(st.integers(0, len(frames)), label="frames applied")

    recorded = start
    for f in frames[:kept]:
        apply(cache, f.items)
        assert f.revision >= recorded
        recorded = f.revision

    apply(cache, owed(hub, node, recorded))
    assert cache == hub.routed_to(node)


@settings(max_examples=100, deadline=None)
@given(writes, st.data())
def test_resuming_after_a_partial_batch_while_the_hub_keeps_writing(
    history: list[tuple[str, str, str | None]], data: st.DataObject
) -> None:
    """Writes that land after the batch was read are owed on resume as well."""
    split = data.draw(st.integers(0, len(history)), label="read after write")
    hub = replay(history[:split])
    through = len(hub.rows)
    node = data.draw(st.sampled_from(NODES), label="node")
    frames = change_batches(owed(hub, node, 0), through, max_items=2)
    kept = data.draw(st.integers(0, len(frames)), label="frames applied")
    cache: dict[Key, dict[str, Any]] = {}
    recorded = 0
    for f in frames[:kept]:
        apply(cache, f.items)
        recorded = f.revision

    for what, name, route in history[split:]:
        hub.write(what, name, route)
    apply(cache, owed(hub, node, recorded))
    assert cache == hub.routed_to(node)


# -- OutboxCursor ----------------------------------------------------------------


def test_cursor_starts_sent_at_acked() -> None:
    """A new cursor has sent nothing beyond what the hub already acked."""
    cursor = OutboxCursor(acked=17)
    assert cursor.sent == 17
    assert cursor.can_send


def test_window_limits_frames_in_flight() -> None:
    """At most ``window`` report frames are unacknowledged at once."""
    cursor = OutboxCursor(acked=0, window=3)
    for last in (2, 5, 6):
        assert cursor.can_send
        cursor.sending(last)
    assert not cursor.can_send
    assert cursor.sent == 6


def test_cumulative_ack_frees_the_window() -> None:
    """An ack frees every frame up to its seq, including a frame it covers in part."""
    cursor = OutboxCursor(acked=0, window=3)
    for last in (2, 5, 6):
        cursor.sending(last)
    assert cursor.acknowledged(2)
    assert cursor.can_send
    cursor.sending(9)
    assert not cursor.can_send
    assert cursor.acknowledged(6)  # frees the frames ending at 5 and 6 at once
    assert cursor.acked == 6
    cursor.sending(10)
    cursor.sending(11)
    assert not cursor.can_send
    assert cursor.acknowledged(11)
    assert cursor.can_send


def test_ack_inside_a_frame_keeps_that_frame_in_flight() -> None:
    """An ack in the middle of a frame frees the frames before it but not that frame."""
    cursor = OutboxCursor(acked=0, window=2)
    cursor.sending(4)
    cursor.sending(8)
    assert cursor.acknowledged(6)
    assert cursor.acked == 6
    assert cursor.can_send
    cursor.sending(9)
    assert not cursor.can_send


def test_stale_acks_return_false() -> None:
    """An ack at or below what was already acked says nothing new and changes nothing."""
    cursor = OutboxCursor(acked=5, window=1)
    cursor.sending(7)
    assert not cursor.acknowledged(5)
    assert not cursor.acknowledged(3)
    assert cursor.acked == 5
    assert not cursor.can_send
    assert cursor.acknowledged(7)
    assert not cursor.acknowledged(7)


def test_ack_beyond_sent_raises() -> None:
    """An ack for a seq that was never sent is a peer error, not a silent jump."""
    cursor = OutboxCursor(acked=0)
    cursor.sending(3)
    with pytest.raises(ValueError):
        cursor.acknowledged(4)
    assert cursor.acked == 0


def test_sending_a_seq_not_above_sent_raises() -> None:
    """Sending the same or an older seq again is a programming error."""
    cursor = OutboxCursor(acked=10)
    with pytest.raises(ValueError):
        cursor.sending(10)
    with pytest.raises(ValueError):
        cursor.sending(4)
    cursor.sending(12)
    with pytest.raises(ValueError):
        cursor.sending(12)
    assert cursor.sent == 12
