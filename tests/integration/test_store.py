"""The hub's store on a real SQLite file and a real PostgreSQL database.

Every test runs twice through the ``database_url`` fixture: once on a fresh
SQLite file, once on a fresh database in the session's PostgreSQL cluster.
"""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select, update

from cloudhub.schema import changes, node_leases, node_sync, objects, revision
from cloudhub.store import Store, rfc3339
from edgeward import storable
from edgeward.errors import AlreadyExists, Conflict, InvalidObject, NotFound
from edgeward.kinds import ALL_NODES, CORE_API, DEVICE, DEVICE_MODEL, DEVICES_API, NODE
from tests.support.clock import T0, ManualClock


def device(
    name: str, namespace: str = "default", node: str | None = None, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"deviceModelRef": {"name": "thermometer"}, **spec}
    if node is not None:
        body["nodeName"] = node
    return {
        "apiVersion": DEVICES_API,
        "kind": "Device",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def model(name: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": DEVICES_API,
        "kind": "DeviceModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"properties": [{"name": "temp", "type": "INT", "accessMode": "ReadOnly"}]},
    }


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": CORE_API, "kind": "Node", "metadata": {"name": name}, "spec": {}}


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def change_log(store: Store) -> list[Any]:
    return store.changes_after(0, limit=1_000_000)


# -- basic object life cycle ----------------------------------------------------


def test_create_get_list_replace_delete(store: Store, clock: ManualClock) -> None:
    """An object written through the store reads back, lists, changes and goes away as written."""
    created = store.create(DEVICE, device("thermo-1", node="edge-a", mode="fast"))
    meta = created["metadata"]
    assert meta["name"] == "thermo-1" and meta["namespace"] == "default"
    assert meta["uid"] and meta["creationTimestamp"] == rfc3339(T0)
    assert meta["resourceVersion"] == "1"
    assert created["status"] == {}
    assert created["spec"] == {
        "deviceModelRef": {"name": "thermometer"},
        "nodeName": "edge-a",
        "mode": "fast",
    }
    assert store.get(DEVICE, "default", "thermo-1") == created

    store.create(DEVICE, device("thermo-0", namespace="plant-2"))
    items, head = store.list(DEVICE, "default")
    assert head == 2
    assert [o["metadata"]["name"] for o in items] == ["thermo-1"]
    every, _ = store.list(DEVICE)
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in every] == [
        ("default", "thermo-1"),
        ("plant-2", "thermo-0"),
    ]

    clock.now += 60
    replaced = store.replace(DEVICE, device("thermo-1", node="edge-a", mode="slow"), rv(created))
    assert replaced["spec"]["mode"] == "slow"
    assert replaced["metadata"]["resourceVersion"] == "3"
    assert store.get(DEVICE, "default", "thermo-1") == replaced

    deleted = store.delete(DEVICE, "default", "thermo-1", expected_rv=3)
    assert deleted["metadata"]["resourceVersion"] == "4"
    assert deleted["spec"]["mode"] == "slow"
    with pytest.raises(NotFound):
        store.get(DEVICE, "default", "thermo-1")
    assert store.head() == 4
    assert [o["metadata"]["name"] for o in store.list(DEVICE)[0]] == ["thermo-0"]


def test_revision_counts_writes_and_is_resource_version(store: Store) -> None:
    """Each object write takes the next global revision, which becomes its resourceVersion."""
    assert store.head() == 0
    expected = 0
    for i in range(3):
        obj = store.create(DEVICE, device(f"d{i}"))
        expected += 1
        assert store.head() == expected == rv(obj)
    obj = store.create(DEVICE_MODEL, model("thermometer"))
    expected += 1
    assert rv(obj) == store.head() == expected
    obj = store.create(NODE, node("edge-a"))
    expected += 1
    assert rv(obj) == store.head() == expected

    # Several writes in one transaction take consecutive revisions.
    with store.writing() as tx:
        a = tx.create(DEVICE, device("batch-a"))
        b = tx.replace(DEVICE, device("d0", mode="x"))
        c = tx.delete(DEVICE, "default", "d1")
    assert [rv(a), rv(b), rv(c)] == [expected + 1, expected + 2, expected + 3]
    assert store.head() == expected + 3
    log = change_log(store)
    assert [r.revision for r in log] == list(range(1, expected + 4))
    assert [r.op for r in log[-3:]] == ["create", "update", "delete"]
    for row in log:
        assert row.body["metadata"]["resourceVersion"] == str(row.revision)


def test_replace_that_changes_nothing_keeps_revision(store: Store) -> None:
    """Re-applying an unchanged object is not a write: no new revision, no change-log row."""
    created = store.create(DEVICE, device("thermo-1", node="edge-a"))
    same = store.replace(DEVICE, device("thermo-1", node="edge-a"))
    assert same == created
    again = store.replace(DEVICE, device("thermo-1", node="edge-a"), expected_rv=rv(created))
    assert again == created
    assert store.head() == 1
    assert len(change_log(store)) == 1
    with store.writing() as tx:
        tx.replace_status(DEVICE, "default", "thermo-1", {})
    assert store.head() == 1


def test_replace_keeps_status_uid_and_creation_time(store: Store, clock: ManualClock) -> None:
    """A replace writes metadata and spec only; status, uid and creationTimestamp survive it."""
    created = store.create(DEVICE, device("thermo-1", node="edge-a"))
    with store.writing() as tx:
        tx.replace_status(DEVICE, "default", "thermo-1", {"twins": [{"propertyName": "t"}]})
    clock.now += 3600
    sneaky = device("thermo-1", node="edge-a", mode="slow")
    sneaky["metadata"].update(uid="forged", creationTimestamp="1999-01-01T00:00:00Z")
    sneaky["metadata"]["labels"] = {"site": "north"}
    sneaky["status"] = {"twins": []}
    replaced = store.replace(DEVICE, sneaky)
    assert replaced["status"] == {"twins": [{"propertyName": "t"}]}
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
    assert replaced["metadata"]["creationTimestamp"] == rfc3339(T0)
    assert replaced["metadata"]["labels"] == {"site": "north"}
    assert replaced["spec"]["mode"] == "slow"
    assert store.get(DEVICE, "default", "thermo-1") == replaced


# -- refused writes -------------------------------------------------------------


def _snapshot(store: Store) -> tuple[int, list[Any], list[Any]]:
    items = [o for k in (DEVICE, DEVICE_MODEL, NODE) for o in store.list(k)[0]]
    return store.head(), items, change_log(store)


def test_stale_resource_version_is_a_conflict(store: Store) -> None:
    """A write carrying an old resourceVersion is refused and changes nothing."""
    first = store.create(DEVICE, device("thermo-1"))
    second = store.replace(DEVICE, device("thermo-1", mode="x"), expected_rv=rv(first))
    before = _snapshot(store)
    with pytest.raises(Conflict) as err:
        store.replace(DEVICE, device("thermo-1", mode="y"), expected_rv=rv(first))
    assert (err.value.expected, err.value.actual) == (rv(first), rv(second))
    with pytest.raises(Conflict):
        store.replace(DEVICE, device("thermo-1", mode="y"), expected_rv=rv(second) + 1)
    with pytest.raises(Conflict):
        store.delete(DEVICE, "default", "thermo-1", expected_rv=rv(first))
    # An unchanged object with a stale precondition is still refused.
    with pytest.raises(Conflict):
        store.replace(DEVICE, device("thermo-1", mode="x"), expected_rv=rv(first))
    assert _snapshot(store) == before


def test_missing_object_is_not_found(store: Store) -> None:
    """Reading, replacing or deleting an object that does not exist says NotFound."""
    store.create(DEVICE, device("thermo-1", namespace="plant-1"))
    before = _snapshot(store)
    with pytest.raises(NotFound):
        store.get(DEVICE, "default", "thermo-1")  # same name, other namespace
    with pytest.raises(NotFound):
        store.get(DEVICE_MODEL, "plant-1", "thermo-1")  # same name, other kind
    with pytest.raises(NotFound):
        store.replace(DEVICE, device("ghost"))
    with pytest.raises(NotFound):
        store.delete(DEVICE, "default", "ghost")
    with pytest.raises(NotFound), store.writing() as tx:
        tx.replace_status(DEVICE, "default", "ghost", {"x": 1})
    assert _snapshot(store) == before


def test_duplicate_create_already_exists(store: Store) -> None:
    """Creating a name that is taken is refused; the same name elsewhere is fine."""
    original = store.create(DEVICE, device("thermo-1", mode="a"))
    store.create(NODE, node("edge-a"))
    before = _snapshot(store)
    with pytest.raises(AlreadyExists):
        store.create(DEVICE, device("thermo-1", mode="b"))
    with pytest.raises(AlreadyExists):
        # Nodes are cluster-scoped: a namespace in the request does not make a new one.
        store.create(NODE, {**node("edge-a"), "metadata": {"name": "edge-a", "namespace": "x"}})
    assert _snapshot(store) == before
    assert store.get(DEVICE, "default", "thermo-1") == original
    store.create(DEVICE, device("thermo-1", namespace="plant-2"))
    store.create(DEVICE_MODEL, model("thermo-1"))
    assert store.head() == 4


def test_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    """A transaction that fails part-way commits none of its writes, not even the earlier ones."""
    store.create(DEVICE, device("thermo-1", mode="a"))
    seen: list[int] = []
    store.on_commit(seen.append)
    before = _snapshot(store)
    with pytest.raises(AlreadyExists), store.writing() as tx:
        tx.create(DEVICE, device("thermo-2"))
        tx.replace(DEVICE, device("thermo-1", mode="b"))
        tx.create(DEVICE, device("thermo-1"))
    with pytest.raises(RuntimeError), store.writing() as tx:
        tx.delete(DEVICE, "default", "thermo-1")
        raise RuntimeError("crash mid-transaction")
    assert _snapshot(store) == before
    assert seen == []
    # The store still works, and the next write takes the next revision.
    assert rv(store.create(DEVICE, device("thermo-2"))) == 2
    assert seen == [2]


def test_commit_listeners_learn_the_new_head(store: Store) -> None:
    """Listeners hear each committed head once, and nothing for a write that changed nothing."""
    seen: list[int] = []
    store.on_commit(seen.append)
    store.create(DEVICE, device("a"))
    with store.writing() as tx:
        tx.create(DEVICE, device("b"))
        tx.create(DEVICE, device("c"))
    store.replace(DEVICE, device("a"))  # no change
    with store.writing():
        pass
    assert seen == [1, 3]


# -- change log and routing -----------------------------------------------------


def test_changes_after_lists_every_write_in_order(store: Store) -> None:
    """The change log replays every write after a revision, oldest first, with its op."""
    store.create(DEVICE, device("a"))
    store.create(DEVICE_MODEL, model("m"))
    store.replace(DEVICE, device("a", mode="x"))
    store.delete(DEVICE, "default", "a")
    rows = store.changes_after(0)
    assert [(r.revision, r.kind, r.name, r.op) for r in rows] == [
        (1, "Device", "a", "create"),
        (2, "DeviceModel", "m", "create"),
        (3, "Device", "a", "update"),
        (4, "Device", "a", "delete"),
    ]
    assert rows[2].body["spec"]["mode"] == "x"
    assert rows[3].body["metadata"]["resourceVersion"] == "4"
    assert [r.revision for r in store.changes_after(2)] == [3, 4]
    assert [r.revision for r in store.changes_after(1, limit=2)] == [2, 3]
    assert store.changes_after(4) == []


def test_changes_for_node_follow_routing(store: Store) -> None:
    """Each node's change stream holds its devices, moves away from it and every model only."""
    store.create(DEVICE, device("thermo", node="edge-a"))  # 1
    store.create(DEVICE, device("other", node="edge-c"))  # 2
    store.create(DEVICE, device("loose"))  # 3
    store.create(DEVICE_MODEL, model("thermometer"))  # 4
    store.create(NODE, node("edge-a"))  # 5
    store.replace(DEVICE, device("thermo", node="edge-b"))  # 6: re-bound a -> b
    with store.writing() as tx:  # 7: status-only, reported by the edge
        tx.replace_status(DEVICE, "default", "thermo", {"twins": [{"propertyName": "t"}]})
    with store.writing() as tx:  # 8: a Node's status
        tx.replace_status(NODE, None, "edge-a", {"capacity": {"cpu": "4"}})
    store.delete(DEVICE, "default", "thermo")  # 9

    rows = {r.revision: r for r in change_log(store)}
    assert (rows[1].route, rows[1].prev_route) == ("edge-a", None)
    assert (rows[3].route, rows[3].prev_route) == (None, None)
    assert (rows[4].route, rows[4].prev_route) == (ALL_NODES, None)
    assert (rows[5].route, rows[5].prev_route) == (None, None)
    assert (rows[6].route, rows[6].prev_route) == ("edge-b", "edge-a")
    assert (rows[7].route, rows[7].prev_route) == (None, None)
    assert (rows[8].route, rows[8].prev_route) == (None, None)
    assert (rows[9].route, rows[9].prev_route) == ("edge-b", "edge-b")

    def revs(n: str, after: int = 0) -> list[int]:
        return [r.revision for r in store.changes_for_node(n, after)]

    assert revs("edge-a") == [1, 4, 6]
    assert revs("edge-b") == [4, 6, 9]
    assert revs("edge-c") == [2, 4]
    assert revs("edge-z") == [4]
    assert revs("edge-a", after=4) == [6]
    assert revs("edge-b", after=6) == [9]
    # What the re-bind means to each side: edge-a drops the device, edge-b gets it.
    six = rows[6]
    assert six.change_for("edge-a").op == "delete"
    put = six.change_for("edge-b")
    assert put.op == "put" and put.object is not None
    assert put.object["spec"]["nodeName"] == "edge-b"
    assert rows[9].change_for("edge-b").op == "delete"


def test_objects_for_node(store: Store) -> None:
    """A node's full desired state is its bound devices plus every model, in revision order."""
    store.create(DEVICE_MODEL, model("thermometer"))
    store.create(DEVICE, device("a1", node="edge-a"))
    store.create(DEVICE, device("b1", node="edge-b"))
    store.create(DEVICE, device("loose"))
    store.create(NODE, node("edge-a"))
    store.create(DEVICE, device("a2", namespace="plant-2", node="edge-a"))
    store.create(DEVICE_MODEL, model("camera", namespace="plant-2"))
    store.replace(DEVICE, device("b1", node="edge-a"))  # moves to edge-a
    store.create(DEVICE, device("b2", node="edge-b"))
    store.replace(DEVICE, device("a1", node="edge-b"))  # moves away from edge-a
    objs, head = store.objects_for_node("edge-a")
    assert head == store.head() == 10
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("DeviceModel", "thermometer"),
        ("Device", "a2"),
        ("DeviceModel", "camera"),
        ("Device", "b1"),
    ]
    assert [rv(o) for o in objs] == sorted(rv(o) for o in objs)
    objs_b, _ = store.objects_for_node("edge-b")
    assert [o["metadata"]["name"] for o in objs_b] == ["thermometer", "camera", "b2", "a1"]
    objs_z, _ = store.objects_for_node("edge-z")
    assert [o["metadata"]["name"] for o in objs_z] == ["thermometer", "camera"]


def test_compact_drops_old_rows_and_moves_the_bound(store: Store) -> None:
    """Compaction keeps the newest revisions of the log and reports where the log now starts."""
    for i in range(10):
        store.create(DEVICE, device(f"d{i}"))
    assert store.log_bounds() == (0, 10)
    assert store.compact(3) == 7
    assert store.log_bounds() == (7, 10)
    assert [r.revision for r in store.changes_after(0)] == [8, 9, 10]
    # Keeping more than is left does not move the bound back.
    assert store.compact(5) == 7
    assert store.log_bounds() == (7, 10)
    # Objects are untouched by compaction.
    assert len(store.list(DEVICE)[0]) == 10
    store.replace(DEVICE, device("d0", mode="x"))
    assert store.compact(0) == 11
    assert store.log_bounds() == (11, 11)
    assert store.changes_after(0) == []
    assert rv(store.create(DEVICE, device("late"))) == 12
    assert [r.revision for r in store.changes_after(0)] == [12]


def test_resume_view_is_the_log_or_a_snapshot(store: Store) -> None:
    """A reconnecting node resumes from the log while it holds every row after its revision;
    behind the compacted bound, or ahead of the head, it needs a snapshot."""
    for i in range(10):
        store.create(DEVICE, device(f"d{i}", node="edge-a" if i % 2 else "edge-b"))
    assert store.compact(4) == 6
    compacted, head, rows = store.resume_view("edge-a", 6)
    assert (compacted, head) == (6, 10)
    assert rows is not None and [r.revision for r in rows] == [8, 10]
    assert store.resume_view("edge-a", 10) == (6, 10, [])
    assert [r.revision for r in store.resume_view("edge-a", 6, limit=1)[2] or []] == [8]
    assert store.resume_view("edge-a", 5) == (6, 10, None)  # rows it missed are gone
    assert store.resume_view("edge-a", 11) == (6, 10, None)  # ahead: the hub was restored


def test_migrate_twice_is_harmless(engine: Engine) -> None:
    """Running the migrations again (a hub restart or upgrade) keeps every object and the head."""
    s = Store(engine)
    version = s.migrate()
    s.create(DEVICE, device("thermo-1"))
    s.compact(0)
    assert s.migrate() == version
    s2 = Store(engine)
    assert s2.migrate() == version
    assert s2.head() == 1
    assert s2.log_bounds() == (1, 1)
    assert s2.get(DEVICE, "default", "thermo-1")["metadata"]["resourceVersion"] == "1"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(revision)).scalar_one() == 1
    assert rv(s2.create(DEVICE, device("thermo-2"))) == 2


# -- concurrency ------------------------------------------------------------------


THREADS = 8
WRITES_PER_THREAD = 25
SHARED = 4


def test_concurrent_writers_are_serialized(store: Store, engine: Engine) -> None:
    """Concurrent writers never share or skip a revision and never lose an update."""
    for i in range(SHARED):
        store.create(DEVICE, device(f"shared-{i}", counter=0))
    base = store.head()
    errors: list[BaseException] = []
    conflicts = [0] * THREADS
    successes = [0] * THREADS
    increments = [0] * THREADS
    stop_reading = threading.Event()
    observed: list[tuple[int, dict[tuple[str, str], int]]] = []
    start = threading.Barrier(THREADS + 1)

    def writer(t: int) -> None:
        rnd = random.Random(t)
        try:
            start.wait()
            for i in range(WRITES_PER_THREAD):
                if i % 5 == 0:
                    store.create(DEVICE, device(f"own-{t}-{i}", node=f"edge-{t}"))
                    successes[t] += 1
                    continue
                name = f"shared-{rnd.randrange(SHARED)}"
                while True:
                    current = store.get(DEVICE, "default", name)
                    nxt = device(name, counter=current["spec"]["counter"] + 1)
                    try:
                        store.replace(DEVICE, nxt, expected_rv=rv(current))
                    except Conflict:
                        conflicts[t] += 1
                        continue
                    successes[t] += 1
                    increments[t] += 1
                    break
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def reader() -> None:
        try:
            start.wait()
            while not stop_reading.is_set():
                items, head = store.list(DEVICE)
                observed.append(
                    (
                        head,
                        {(o["metadata"]["namespace"], o["metadata"]["name"]): rv(o) for o in items},
                    )
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(THREADS)]
    read_thread = threading.Thread(target=reader)
    for th in [*threads, read_thread]:
        th.start()
    for th in threads:
        th.join(120)
    stop_reading.set()
    read_thread.join(60)
    assert not errors, errors
    assert not any(th.is_alive() for th in [*threads, read_thread])

    total = sum(successes)
    assert total == THREADS * WRITES_PER_THREAD
    head = store.head()
    assert head == base + total

    log = change_log(store)
    assert [r.revision for r in log] == list(range(1, head + 1))
    for r in log:
        assert r.body["metadata"]["resourceVersion"] == str(r.revision)
    with engine.connect() as conn:
        stored = conn.execute(select(objects.c.resource_version, objects.c.body)).all()
        assert conn.execute(select(func.max(changes.c.revision))).scalar_one() == head
    for stored_rv, _body in stored:
        assert stored_rv <= head

    # No lost updates: the shared counters add up to the successful increments.
    counters = sum(
        store.get(DEVICE, "default", f"shared-{i}")["spec"]["counter"] for i in range(SHARED)
    )
    assert counters == sum(increments)

    # Every list a reader saw is exactly the state at the head it reported.
    assert observed
    for seen_head, seen in observed:
        state: dict[tuple[str, str], int] = {}
        for r in log:
            if r.revision > seen_head:
                break
            if r.op == "delete":
                state.pop((r.namespace, r.name), None)
            else:
                state[(r.namespace, r.name)] = r.revision
        assert seen == state, f"list at head {seen_head} is not the state at that revision"


def test_reading_sees_one_revision(store: Store) -> None:
    """Inside one read transaction the head and the objects stay put while others write."""
    store.create(DEVICE, device("a"))
    with store.reading() as conn:
        head = conn.execute(select(revision.c.head)).scalar_one()
        store.create(DEVICE, device("b"))  # commits on another connection
        names = conn.execute(select(objects.c.name).where(objects.c.kind == "Device")).scalars()
        assert head == 1
        assert list(names) == ["a"]
        assert conn.execute(select(revision.c.head)).scalar_one() == 1
    assert store.head() == 2


def test_a_log_page_carries_the_bounds_it_was_read_at(store: Store) -> None:
    """A page of the change log says how far the log was compacted when it was read, so a
    reader resuming from an older position knows rows were dropped instead of skipping them."""
    for i in range(5):
        store.create(DEVICE, device(f"d{i}", node="edge-1"))
    page = store.log_page(0, node="edge-1")
    assert [r.revision for r in page.rows] == [1, 2, 3, 4, 5]
    assert (page.compacted, page.head) == (0, 5)
    assert page.complete_after(0)
    store.compact(keep=2)
    page = store.log_page(1)
    assert (page.compacted, page.head) == (3, 5)
    assert not page.complete_after(1)
    assert page.complete_after(3)
    assert [r.revision for r in page.rows] == [4, 5]


# -- what the store refuses to keep ---------------------------------------------


def test_an_object_the_api_could_not_serve_is_refused_by_the_store(store: Store) -> None:
    """Whatever entrance it came through, an object holding a lone surrogate is refused by the
    store (InvalidObject naming the field) and nothing is written, so listing never fails."""
    store.create(DEVICE, device("thermo-1"))
    before = _snapshot(store)
    bad = device("thermo-2", note="\ud800")
    with pytest.raises(InvalidObject) as info:
        store.create(DEVICE, bad)
    assert [c.field for c in info.value.causes] == ["spec.note"]
    assert "Unicode" in str(info.value)
    with pytest.raises(InvalidObject), store.writing() as tx:
        tx.replace_status(DEVICE, "default", "thermo-1", {"state": "\udcff"})
    with pytest.raises(InvalidObject), store.writing() as tx:
        tx.replace(DEVICE, device("thermo-1", tags={"\ud800": "x"}))
    assert _snapshot(store) == before
    assert len(store.list(DEVICE)[0]) == 1


def test_objects_past_the_size_limits_are_refused(store: Store) -> None:
    """A spec write over MAX_SPEC_BYTES (without status) and any write leaving an object over
    MAX_OBJECT_BYTES are refused with their sizes, and leave the store as it was."""
    store.create(DEVICE, device("thermo-1"))
    before = _snapshot(store)
    with pytest.raises(InvalidObject) as info:
        store.create(DEVICE, device("thermo-2", blob="x" * storable.MAX_SPEC_BYTES))
    assert "without its status" in str(info.value)
    assert str(storable.MAX_SPEC_BYTES) in str(info.value)
    huge_status = {"blob": "y" * storable.MAX_OBJECT_BYTES}
    with pytest.raises(InvalidObject) as info, store.writing() as tx:
        tx.replace_status(DEVICE, "default", "thermo-1", huge_status)
    assert str(storable.MAX_OBJECT_BYTES) in str(info.value)
    assert _snapshot(store) == before
    # a status that fits beside a spec that fits is written
    with store.writing() as tx:
        tx.replace_status(DEVICE, "default", "thermo-1", {"blob": "y" * storable.MAX_SPEC_BYTES})


def test_objects_are_stored_as_compact_utf8(store: Store) -> None:
    """Stored text is storable.dumps of the object: non-ASCII kept as UTF-8, not escaped."""
    created = store.create(DEVICE, device("thermo-1", note="Küche °C"))
    with store.engine.connect() as conn:
        text = conn.execute(select(objects.c.body)).scalar_one()
    assert text == storable.dumps(created)
    assert "Küche °C" in text


def test_an_object_stored_before_the_guard_can_still_be_deleted(store: Store) -> None:
    """An object stored with an escaped lone surrogate (as hubs did before they refused them)
    can be deleted, which is how an operator recovers from it."""
    store.create(DEVICE, device("thermo-1"))
    poisoned = json.dumps({**store.get(DEVICE, "default", "thermo-1"), "status": {"s": "\ud800"}})
    with store.engine.begin() as conn:
        conn.execute(update(objects).values(body=poisoned))
    store.delete(DEVICE, "default", "thermo-1")
    assert store.list(DEVICE)[0] == []
    assert change_log(store)[-1].op == "delete"


def test_deleting_a_node_deletes_its_positions_and_lease(store: Store) -> None:
    """A deleted Node's report seq, acked revision and lease go with it in the same
    transaction, so a node registering again under that name starts from seq 0."""
    store.create(NODE, node("edge-a"))
    store.create(NODE, node("edge-b"))
    with store.engine.begin() as conn:
        for name in ("edge-a", "edge-b"):
            conn.execute(insert(node_sync).values(node=name, report_seq=9, acked_revision=2))
            conn.execute(
                insert(node_leases).values(node=name, heartbeat=T0, ready=True, usage="{}")
            )
    store.delete(NODE, None, "edge-a")
    with store.engine.connect() as conn:
        assert conn.execute(select(node_sync.c.node)).scalars().all() == ["edge-b"]
        assert conn.execute(select(node_leases.c.node)).scalars().all() == ["edge-b"]
