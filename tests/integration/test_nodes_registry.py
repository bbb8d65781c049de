"""Node registration, reports, leases and readiness on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select, text, update

from cloudhub.groupwriter import GroupWriter
from cloudhub.nodes import NodeRegistry
from cloudhub.replicas import ReplicaBook
from cloudhub.schema import node_leases, node_sync
from cloudhub.store import Store, Tx, rfc3339
from edgeward import storable
from edgeward.errors import ProtocolError
from edgeward.kinds import DEVICE, DEVICE_MODEL, NODE
from edgeward.protocol import (
    MAX_SEQ,
    TOPIC_DEVICE_STATE,
    TOPIC_NODE_STATUS,
    TOPIC_TWIN_REPORTED,
    TOPIC_UPLOAD,
    ReportItem,
)
from tests.support.clock import T0, ManualClock
from tests.support.procs import wait_for

GRACE = 40.0
INFO = {"architecture": "arm64", "osImage": "Debian GNU/Linux 12", "agentVersion": "0.1.0"}
CAPACITY = {"cpu": "4", "memory": "3906Mi", "disk": "29Gi"}


@pytest.fixture
def registry(store: Store) -> NodeRegistry:
    return NodeRegistry(store, grace_period=GRACE)


def status_item(seq: int, capacity: dict[str, str] | None = None, cpu: float = 12.5) -> ReportItem:
    body: dict[str, Any] = {"usage": {"cpuPercent": cpu, "memoryPercent": 41.0}}
    if capacity is not None:
        body["capacity"] = capacity
    return ReportItem(seq=seq, topic=TOPIC_NODE_STATUS, key="node", body=body)


def ready(node: dict[str, Any]) -> dict[str, Any]:
    conds = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert len(conds) == 1, node["status"]["conditions"]
    return conds[0]


def get_node(store: Store, name: str = "edge-a") -> dict[str, Any]:
    return store.get(NODE, None, name)


def test_register_creates_a_ready_node(store: Store, registry: NodeRegistry) -> None:
    """A node's first hello creates its Node object, Ready, with the node's info."""
    assert registry.register("edge-a", INFO) == 0
    node = get_node(store)
    assert node["apiVersion"] == "v1" and node["kind"] == "Node"
    assert node["metadata"]["name"] == "edge-a"
    assert "namespace" not in node["metadata"]
    assert node["status"]["nodeInfo"] == INFO
    cond = ready(node)
    assert cond["status"] == "True"
    assert cond["reason"] == "EdgecoreReady"
    assert cond["lastTransitionTime"] == rfc3339(T0)
    assert node["status"]["lastHeartbeatTime"] == rfc3339(T0)
    assert node["status"]["sync"] == {"ackedRevision": 0, "reportSeq": 0}
    assert store.head() == 1
    # Node objects are the hub's records; they are never synced down to an edge.
    assert store.changes_for_node("edge-a", 0) == []
    items, _ = store.list(NODE)
    assert [n["metadata"]["name"] for n in items] == ["edge-a"]
    assert items[0]["status"]["lastHeartbeatTime"] == rfc3339(T0)


def test_register_again_refreshes_without_churn(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """A reconnecting node keeps its Node; only a real change (new agent) makes a new revision."""
    registry.register("edge-a", INFO)
    uid = get_node(store)["metadata"]["uid"]
    assert registry.record_reports("edge-a", (status_item(1), status_item(2)), 0).high == 2
    head = store.head()
    clock.now += 5
    assert registry.register("edge-a", INFO) == 2
    assert store.head() == head
    node = get_node(store)
    assert node["metadata"]["uid"] == uid
    assert node["status"]["lastHeartbeatTime"] == rfc3339(T0 + 5)
    assert ready(node)["lastTransitionTime"] == rfc3339(T0)
    clock.now += 5
    upgraded = {**INFO, "agentVersion": "0.2.0"}
    assert registry.register("edge-a", upgraded) == 2
    assert store.head() == head + 1
    assert get_node(store)["status"]["nodeInfo"] == upgraded


def test_reports_store_capacity_usage_and_heartbeat(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """Node status reports put capacity on the Node and usage plus heartbeat in its lease."""
    registry.register("edge-a", INFO)
    head = store.head()
    clock.now += 10
    high, rejected = registry.record_reports("edge-a", (status_item(1, CAPACITY, cpu=50.0),), 7)
    assert (high, rejected) == (1, ())
    node = get_node(store)
    assert node["status"]["capacity"] == CAPACITY
    assert node["status"]["nodeInfo"] == INFO
    assert node["status"]["usage"] == {"cpuPercent": 50.0, "memoryPercent": 41.0}
    assert node["status"]["lastHeartbeatTime"] == rfc3339(T0 + 10)
    assert ready(node)["lastHeartbeatTime"] == rfc3339(T0 + 10)
    assert node["status"]["sync"] == {"ackedRevision": 7, "reportSeq": 1}
    assert store.head() == head + 1  # the capacity change
    # The capacity change is logged for watchers but not routed to any edge.
    (row,) = store.changes_after(head)
    assert row.kind == "Node" and row.route is None and row.prev_route is None
    assert store.changes_for_node("edge-a", head) == []

    # Heartbeats with fresh usage but the same capacity do not make new revisions.
    clock.now += 10
    assert registry.record_reports("edge-a", (status_item(2, CAPACITY, cpu=75.0),), 7).high == 2
    assert registry.record_reports("edge-a", (status_item(3, cpu=80.0),), 8).high == 3
    assert store.head() == head + 1
    node = get_node(store)
    assert node["status"]["usage"]["cpuPercent"] == 80.0
    assert node["status"]["capacity"] == CAPACITY
    assert node["status"]["lastHeartbeatTime"] == rfc3339(T0 + 20)
    assert node["status"]["sync"] == {"ackedRevision": 8, "reportSeq": 3}


def test_changed_outbox_counts_are_written_while_heartbeats_are_absorbed(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """A connected node's outbox drop counts change rarely and are kept on the Node: a report
    that changes them is written even when the node is Ready, and its repeats are absorbed;
    after the node registers again, the stored counts are what its heartbeats are held to."""

    def with_outbox(seq: int, dropped: dict[str, int]) -> ReportItem:
        item = status_item(seq, CAPACITY)
        body = {**item.body, "outbox": {"quotaBytes": 1, "dropped": dropped}}
        return ReportItem(seq=seq, topic=item.topic, key=item.key, body=body)

    registry.register("edge-a", INFO)
    registry.record_reports("edge-a", (with_outbox(1, {}),), 0)
    head = store.head()
    registry.record_reports("edge-a", (with_outbox(2, {}),), 0)
    assert store.head() == head  # the same counts: absorbed
    registry.record_reports("edge-a", (with_outbox(3, {"expired": 4}),), 0)
    assert store.head() == head + 1
    assert get_node(store)["status"]["outbox"]["dropped"] == {"expired": 4}
    registry.record_reports("edge-a", (with_outbox(4, {"expired": 4}),), 0)
    assert store.head() == head + 1

    registry.forget("edge-a")  # another process, or a restart: only the stored Node remains
    registry.register("edge-a", INFO)
    head = store.head()
    registry.record_reports("edge-a", (with_outbox(5, {"expired": 4}),), 0)
    assert store.head() == head
    registry.record_reports("edge-a", (with_outbox(6, {"expired": 5}),), 0)
    assert get_node(store)["status"]["outbox"]["dropped"] == {"expired": 5}


def test_replayed_reports_are_deduplicated(store: Store, registry: NodeRegistry) -> None:
    """An edge that resends rows the hub already holds gets the same ack and changes nothing."""
    registry.register("edge-a", INFO)
    items = (status_item(1, CAPACITY, cpu=10.0), status_item(2, cpu=20.0))
    assert registry.record_reports("edge-a", items, 0).high == 2
    head, node = store.head(), get_node(store)
    assert registry.record_reports("edge-a", items, 0).high == 2
    assert store.head() == head
    assert get_node(store) == node
    # A replay of older rows alongside new ones applies only the new ones.
    bigger = {**CAPACITY, "cpu": "8"}
    mixed = (status_item(2, {"cpu": "1"}, cpu=99.0), status_item(3, bigger, cpu=30.0))
    assert registry.record_reports("edge-a", mixed, 0).high == 3
    node = get_node(store)
    assert node["status"]["capacity"] == bigger
    assert node["status"]["usage"]["cpuPercent"] == 30.0
    assert store.head() == head + 1
    # A reconnect learns the persisted high seq.
    assert registry.register("edge-a", INFO) == 3


def test_unknown_topics_are_dropped_but_acknowledged(store: Store, registry: NodeRegistry) -> None:
    """A report row of a kind this hub does not know is acked (so the edge can delete it) and
    named as rejected, with the reason."""
    registry.register("edge-a", INFO)
    head, node = store.head(), get_node(store)
    items = (
        ReportItem(seq=1, topic="app/status", key="nginx", body={"phase": "Running"}),
        ReportItem(seq=2, topic="no/such/topic", key=None, body={"x": 1}),
    )
    high, rejected = registry.record_reports("edge-a", items, 0)
    assert high == 2
    assert [(r.seq, "unknown topic" in r.reason) for r in rejected] == [(1, True), (2, True)]
    assert store.head() == head
    after = get_node(store)
    assert after["status"]["sync"]["reportSeq"] == 2
    assert {k: v for k, v in after["status"].items() if k != "sync"} == {
        k: v for k, v in node["status"].items() if k != "sync"
    }
    with store.engine.connect() as conn:
        seq = conn.execute(select(node_sync.c.report_seq).where(node_sync.c.node == "edge-a"))
        assert seq.scalar_one() == 2


def test_silent_node_goes_not_ready_once(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """A node silent past the grace period turns Ready=Unknown exactly once; others stay Ready."""
    registry.register("edge-a", INFO)
    registry.register("edge-b", INFO)
    clock.now = T0 + GRACE
    assert registry.expire() == []  # silent for exactly the grace period: not yet
    registry.record_reports("edge-b", (status_item(1),), 0)  # edge-b keeps talking
    head = store.head()
    clock.now = T0 + GRACE + 1
    assert registry.expire() == ["edge-a"]
    assert store.head() == head + 1
    node = get_node(store, "edge-a")
    cond = ready(node)
    assert cond["status"] == "Unknown"
    assert cond["reason"] == "NodeStatusUnknown"
    assert cond["message"]
    assert cond["lastTransitionTime"] == rfc3339(T0 + GRACE + 1)
    assert node["status"]["lastHeartbeatTime"] == rfc3339(T0)
    assert node["status"]["nodeInfo"] == INFO
    assert ready(get_node(store, "edge-b"))["status"] == "True"
    (row,) = store.changes_after(head)
    assert (row.kind, row.name, row.op) == ("Node", "edge-a", "update")
    # Checking again changes nothing, however long the node stays silent.
    assert registry.expire() == []
    clock.now += 3 * GRACE
    assert registry.expire() == ["edge-b"]
    assert registry.expire() == []
    assert store.head() == head + 2
    assert ready(get_node(store, "edge-a")) == cond


def test_node_that_reports_again_is_ready_again(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """A NotReady node that is heard from again turns Ready with a new transition time."""
    registry.register("edge-a", INFO)
    registry.record_reports("edge-a", (status_item(1, CAPACITY),), 0)
    clock.now = T0 + GRACE + 5
    assert registry.expire() == ["edge-a"]
    head = store.head()
    clock.now = T0 + 100
    assert registry.record_reports("edge-a", (status_item(2, CAPACITY, cpu=3.0),), 0).high == 2
    node = get_node(store)
    cond = ready(node)
    assert cond["status"] == "True"
    assert cond["reason"] == "EdgecoreReady"
    assert cond["lastTransitionTime"] == rfc3339(T0 + 100)
    assert node["status"]["lastHeartbeatTime"] == rfc3339(T0 + 100)
    assert node["status"]["capacity"] == CAPACITY
    assert node["status"]["usage"]["cpuPercent"] == 3.0
    assert store.head() == head + 1
    assert registry.expire() == []
    # A replayed report also counts as contact after another silence.
    clock.now = T0 + 100 + GRACE + 1
    assert registry.expire() == ["edge-a"]
    clock.now += 1
    assert registry.record_reports("edge-a", (status_item(2),), 0).high == 2
    assert ready(get_node(store))["status"] == "True"
    assert ready(get_node(store))["lastTransitionTime"] == rfc3339(clock.now)


def test_register_after_expiry_makes_node_ready(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """A node that reconnects after being marked NotReady is Ready again, keeping its seq."""
    registry.register("edge-a", INFO)
    registry.record_reports("edge-a", (status_item(4),), 0)
    clock.now = T0 + GRACE + 1
    assert registry.expire() == ["edge-a"]
    clock.now = T0 + 200
    assert registry.register("edge-a", INFO) == 4
    node = get_node(store)
    assert ready(node)["status"] == "True"
    assert ready(node)["lastTransitionTime"] == rfc3339(T0 + 200)
    assert [c["type"] for c in node["status"]["conditions"]] == ["Ready"]


def stored_lease(store: Store, name: str = "edge-a") -> tuple[float, str, int, int]:
    """(heartbeat, usage, report_seq, acked_revision) as the database holds them."""
    with store.engine.connect() as conn:
        row = conn.execute(
            select(
                node_leases.c.heartbeat,
                node_leases.c.usage,
                node_sync.c.report_seq,
                node_sync.c.acked_revision,
            )
            .join(node_sync, node_sync.c.node == node_leases.c.node)
            .where(node_leases.c.node == name)
        ).one()
    return row.heartbeat, json.loads(row.usage)["cpuPercent"], row.report_seq, row.acked_revision


def test_heartbeats_that_change_nothing_wait_for_the_flush(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """A plain heartbeat costs no transaction, yet reads show it at once and a flush keeps it."""
    registry.register("edge-a", INFO)
    registry.record_reports("edge-a", (status_item(1, CAPACITY, cpu=10.0),), 3)
    written = stored_lease(store)
    assert written == (T0, 10.0, 1, 3)
    head = store.head()
    clock.now += 30
    assert registry.record_reports("edge-a", (status_item(2, CAPACITY, cpu=20.0),), 4).high == 2
    clock.now += 30
    assert registry.record_reports("edge-a", (status_item(3, cpu=30.0),), 5).high == 3
    assert stored_lease(store) == written  # nothing written yet
    node = get_node(store)
    assert node["status"]["lastHeartbeatTime"] == rfc3339(T0 + 60)
    assert node["status"]["usage"]["cpuPercent"] == 30.0
    assert node["status"]["sync"] == {"ackedRevision": 5, "reportSeq": 3}
    # A reconnect learns the seq the hub holds, flushed or not.
    assert registry.register("edge-a", INFO) == 3
    assert registry.flush() == 1
    assert stored_lease(store) == (T0 + 60, 30.0, 3, 5)
    assert registry.flush() == 0  # nothing changed since
    assert store.head() == head


def test_a_changed_capacity_is_written_at_once(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """Only what an operator watches for makes a transaction: a new capacity is a revision."""
    registry.register("edge-a", INFO)
    registry.record_reports("edge-a", (status_item(1, CAPACITY),), 0)
    head = store.head()
    clock.now += 30
    bigger = {**CAPACITY, "cpu": "8"}
    assert registry.record_reports("edge-a", (status_item(2, bigger, cpu=5.0),), 0).high == 2
    assert store.head() == head + 1
    assert stored_lease(store)[:3] == (T0 + 30, 5.0, 2)
    assert get_node(store)["status"]["capacity"] == bigger


def test_a_flush_never_moves_a_lease_back(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """A transaction that raced a flush keeps the newer seq and heartbeat it wrote."""
    registry.register("edge-a", INFO)
    registry.record_reports("edge-a", (status_item(1, CAPACITY),), 0)
    clock.now += 10
    registry.record_reports("edge-a", (status_item(2, CAPACITY),), 0)  # live only
    with store.engine.begin() as conn:  # as if another transaction wrote ahead meanwhile
        conn.execute(update(node_sync).values(report_seq=9))
        conn.execute(update(node_leases).values(heartbeat=T0 + 50))
    assert registry.flush() == 1
    assert stored_lease(store)[0] == T0 + 50
    assert stored_lease(store)[2] == 9


def test_a_heartbeat_after_a_flush_is_not_expired(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """A node heard from after the last flush stays Ready even though its stored lease is old."""
    registry.register("edge-a", INFO)
    clock.now = T0 + GRACE
    registry.record_reports("edge-a", (status_item(1),), 0)  # live, not flushed
    clock.now = T0 + GRACE + 1
    registry.flush = lambda: 0  # type: ignore[method-assign]  # the flush lost the race
    assert registry.expire() == []
    assert ready(get_node(store))["status"] == "True"


def test_a_frame_writes_each_device_once(store: Store, registry: NodeRegistry) -> None:
    """Twin rows carry a device's whole state: within a frame only the last one is written."""
    store.create(
        DEVICE_MODEL,
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": "thermo", "namespace": "default"},
            "spec": {"properties": [{"name": "temp", "type": "INT"}]},
        },
    )
    store.create(
        DEVICE,
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": "d1", "namespace": "default"},
            "spec": {"deviceModelRef": {"name": "thermo"}, "nodeName": "edge-a"},
        },
    )
    registry.register("edge-a", INFO)

    def twin_row(seq: int, value: str, twins: Any = None) -> ReportItem:
        reported = {"reported": {"value": value, "timestamp": 1000 + seq}, "type": "int"}
        body = {"device": "default/d1", "twins": {"temp": reported} if twins is None else twins}
        return ReportItem(seq=seq, topic=TOPIC_TWIN_REPORTED, key=None, body=body)

    head = store.head()
    assert registry.record_reports("edge-a", (twin_row(1, "1"), twin_row(2, "2")), 0).high == 2
    assert store.head() == head + 1
    device = store.get(DEVICE, "default", "d1")
    assert device["status"]["twins"][0]["reported"]["value"] == "2"
    # An unreadable later row replaces nothing: the earlier one is still written.
    assert registry.record_reports("edge-a", (twin_row(3, "3"), twin_row(4, "4", [])), 0).high == 4
    device = store.get(DEVICE, "default", "d1")
    assert device["status"]["twins"][0]["reported"]["value"] == "3"


def test_after_a_hub_restart_unchanged_heartbeats_stay_in_memory(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """A hello tells the new hub process the stored capacity: the same one is not rewritten."""
    registry.register("edge-a", INFO)
    registry.record_reports("edge-a", (status_item(1, CAPACITY, cpu=10.0),), 0)
    restarted = NodeRegistry(store, grace_period=GRACE)
    clock.now += 5
    assert restarted.register("edge-a", INFO) == 1
    written = stored_lease(store)
    clock.now += 30
    assert restarted.record_reports("edge-a", (status_item(2, CAPACITY, cpu=20.0),), 0).high == 2
    assert stored_lease(store) == written
    assert get_node(store)["status"]["usage"]["cpuPercent"] == 20.0


def test_a_restarted_hub_gives_every_node_a_grace_period(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """Nodes silent while the hub was down are not NotReady before they could reconnect,
    nor while the others are still reconnecting: the restarted hub is taking over the old
    process's nodes (cloudhub/takeover.py)."""
    registry.register("edge-a", INFO)
    registry.register("edge-b", INFO)
    clock.now = T0 + 600  # the hub was down for ten minutes
    restarted = NodeRegistry(store, grace_period=GRACE)
    assert restarted.expire() == []
    clock.now += GRACE
    restarted.register("edge-b", INFO)  # edge-b reconnected meanwhile
    clock.now += 1
    assert restarted.expire() == []
    clock.now += GRACE + 1  # a grace period since the last node came back
    restarted.register("edge-b", INFO)  # it goes on reporting
    assert restarted.expire() == ["edge-a"]
    assert ready(get_node(store, "edge-b"))["status"] == "True"


# -- rows the hub refuses, positions it cannot hold, leases it cannot write -------------


def bound_device(store: Store, name: str, node: str, **spec: Any) -> None:
    store.create(
        DEVICE,
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, **spec},
        },
    )


def twin_row(seq: int, device: str, **twin: Any) -> ReportItem:
    twin = twin or {"reported": {"value": "21", "timestamp": 1000 + seq}, "type": "int"}
    body = {"device": f"default/{device}", "twins": {"temp": twin}}
    return ReportItem(seq=seq, topic=TOPIC_TWIN_REPORTED, key=f"twin/default/{device}", body=body)


def state_row(seq: int, device: str, state: str = "online") -> ReportItem:
    body = {"device": f"default/{device}", "state": state, "lastOnlineTime": "2026-01-01T00:00:00Z"}
    return ReportItem(seq=seq, topic=TOPIC_DEVICE_STATE, key=f"state/default/{device}", body=body)


def test_rows_the_hub_refuses_are_rejected_alone(store: Store, registry: NodeRegistry) -> None:
    """Each row the hub will not take comes back as rejected with its reason; every other row
    of the frame is stored, and the frame is acknowledged whole."""
    registry.register("edge-a", INFO)
    for name, node in (("d1", "edge-a"), ("d2", "edge-b"), ("d3", "edge-a")):
        bound_device(store, name, node)
    items = (
        status_item(1, CAPACITY),
        twin_row(2, "d2"),  # bound to another node
        twin_row(3, "d1", reported={"value": "21", "timestamp": 2**64}),
        state_row(4, "d1"),
        ReportItem(5, TOPIC_NODE_STATUS, "node-status", {"usage": {"cpu": "\ud800"}}),
        ReportItem(6, TOPIC_TWIN_REPORTED, None, {"device": "Default/D!", "twins": {}}),
        twin_row(7, "d3"),
        state_row(8, "d3", state=""),
    )
    high, rejected = registry.record_reports("edge-a", items, 0)
    assert high == 8
    reasons = {r.seq: r.reason for r in rejected}
    assert sorted(reasons) == [2, 3, 5, 6, 8]
    assert "not bound to edge-a" in reasons[2]
    assert "timestamp" in reasons[3] and "int64" in reasons[3]
    assert "usage" in reasons[5] and "Unicode" in reasons[5]
    assert "<namespace>/<name>" in reasons[6]
    assert "state" in reasons[8]
    node = get_node(store)
    assert node["status"]["capacity"] == CAPACITY
    assert node["status"]["usage"] == status_item(1).body["usage"]
    assert node["status"]["sync"]["reportSeq"] == 8
    d1 = store.get(DEVICE, "default", "d1")["status"]
    assert d1["state"] == "online" and "twins" not in d1
    assert store.get(DEVICE, "default", "d2")["status"] == {}
    d3 = store.get(DEVICE, "default", "d3")["status"]
    assert d3["twins"][0]["reported"]["value"] == "21" and "state" not in d3
    assert store.list(NODE)[0]  # everything stored can be served


def test_a_row_the_store_refuses_is_rejected_alone(
    store: Store, registry: NodeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A row whose handler fails with anything but a refusal (here: a twin report within the
    row limit that would take its Device past MAX_OBJECT_BYTES, which already holds a large
    spec and status) is rolled back alone, logged with its traceback once, and rejected;
    the rest of the frame is stored."""
    registry.register("edge-a", INFO)
    bound_device(store, "big", "edge-a", blob="x" * (storable.MAX_SPEC_BYTES - 1000))
    with store.writing() as tx:  # what no report can write today: kept beside the twins
        tx.replace_status(DEVICE, "default", "big", {"note": "n" * 1_500_000})
    twins = {
        f"k{i:04d}" + "k" * 123: {
            "reported": {"value": "r" * 512, "timestamp": 1},
            "observedDesired": {"value": "o" * 512, "timestamp": 1, "version": {"cloud": 1}},
        }
        for i in range(600)
    }
    hostile = ReportItem(2, TOPIC_TWIN_REPORTED, None, {"device": "default/big", "twins": twins})
    assert len(storable.dumps(hostile.body)) < storable.MAX_REPORT_BYTES
    items = (status_item(1, CAPACITY), hostile, state_row(3, "big"))
    with caplog.at_level("WARNING"):
        high, rejected = registry.record_reports("edge-a", items, 0)
    assert high == 3
    assert [r.seq for r in rejected] == [2]
    assert str(storable.MAX_OBJECT_BYTES) in rejected[0].reason
    failures = [r for r in caplog.records if "report row 2" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert get_node(store)["status"]["capacity"] == CAPACITY
    status = store.get(DEVICE, "default", "big")["status"]
    assert status["state"] == "online" and "twins" not in status


def test_a_row_over_the_row_limit_is_refused_with_its_size(
    store: Store, registry: NodeRegistry
) -> None:
    """A report row whose body is over MAX_REPORT_BYTES (an upload, which nothing else
    bounds) is rejected with its size; the rows beside it are stored."""
    registry.register("edge-a", INFO)
    bound_device(store, "cam", "edge-a")
    upload = {"topic": "$hw/events/upload/cam", "payload": "é" * (storable.MAX_REPORT_BYTES // 2)}
    items = (
        ReportItem(1, TOPIC_UPLOAD, None, {"topic": "$hw/events/upload/cam", "payload": "ok"}),
        ReportItem(2, TOPIC_UPLOAD, None, upload),  # half as many characters as bytes
        state_row(3, "cam"),
    )
    high, rejected = registry.record_reports("edge-a", items, 0)
    assert high == 3
    size = len(storable.dumps(upload).encode())
    assert [(r.seq, r.reason) for r in rejected] == [
        (2, f"upload: the body is {size} bytes, more than {storable.MAX_REPORT_BYTES}")
    ]
    assert store.get(DEVICE, "default", "cam")["status"]["state"] == "online"


def test_positions_no_column_can_hold_are_refused(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """A report seq past MAX_SEQ or an acked revision outside int64 is refused before anything
    is stored or kept in memory: one such position would poison the node for good."""
    registry.register("edge-a", INFO)
    registry.record_reports("edge-a", (status_item(1, CAPACITY),), 0)
    assert registry.flush() == 0
    stored, head = stored_lease(store), store.head()
    clock.now += 5
    for items, acked in (
        ((status_item(2), status_item(MAX_SEQ + 1)), 0),
        ((status_item(2, CAPACITY),), 2**64),  # absorbed in memory but for this check
        ((status_item(2, {"cpu": "64"}),), -1),  # needs a transaction
        ((status_item(2, {"cpu": "64"}),), 2**63),
    ):
        with pytest.raises(ProtocolError):
            registry.record_reports("edge-a", items, acked)
        with pytest.raises(ProtocolError), store.writing() as tx:
            registry.record_reports_in(tx, "edge-a", items, acked)
    assert registry.flush() == 0
    assert stored_lease(store) == stored and store.head() == head
    assert get_node(store)["status"]["sync"] == {"ackedRevision": 0, "reportSeq": 1}


def test_a_lease_that_cannot_be_written_stops_neither_the_flush_nor_expiry(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """One live lease the database refuses (the 2^64 revision a hostile hello once got in) is
    dropped and logged; the other leases are written and silent nodes still go NotReady."""
    for name in ("edge-a", "edge-b", "edge-c"):
        registry.register(name, INFO)
    clock.now = T0 + GRACE
    registry.record_reports("edge-b", (status_item(1, cpu=20.0),), 4)  # absorbed: live only
    assert registry.leases.record_contact("edge-c", clock.now, 1, 2**64, None)
    clock.now = T0 + GRACE + 1
    expired = registry.expire()
    # edge-a is silent; what this hub held for edge-c cannot be stored, so it counts as
    # silent until it reports again (through a transaction, which checks what it says)
    assert expired == ["edge-a", "edge-c"]
    assert stored_lease(store, "edge-b") == (T0 + GRACE, 20.0, 1, 4)
    assert ready(get_node(store, "edge-b"))["status"] == "True"
    assert ready(get_node(store, "edge-a"))["status"] == "Unknown"
    assert registry.flush() == 0  # the bad lease is not retried forever


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_expiry_goes_on_when_the_flush_fails(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """A flush whose commit fails keeps its leases for the next one and does not stop the
    expiry check: a silent node is still marked NotReady."""
    registry.register("edge-a", INFO)
    registry.register("edge-b", INFO)
    with store.engine.begin() as conn:  # any heartbeat write fails at COMMIT
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$"
        )
        conn.exec_driver_sql(
            "CREATE CONSTRAINT TRIGGER refuse_beats AFTER UPDATE ON node_leases "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            "WHEN (NEW.heartbeat <> OLD.heartbeat) EXECUTE FUNCTION refuse()"
        )
    clock.now = T0 + GRACE
    registry.record_reports("edge-b", (status_item(1),), 0)  # absorbed: live only
    clock.now = T0 + GRACE + 1
    assert registry.expire() == ["edge-a"]
    assert ready(get_node(store, "edge-b"))["status"] == "True"
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse_beats ON node_leases")
    assert registry.flush() == 1  # kept for the next flush
    assert stored_lease(store, "edge-b")[0] == T0 + GRACE


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_lease_flush_and_a_group_batch_never_deadlock(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """A lease flush running while a group batch (here: another hub replica's) updates the
    same nodes' rows in the opposite order waits for the batch instead of deadlocking."""
    registry.register("n1", INFO)
    registry.register("n2", INFO)
    clock.now += 5
    for name in ("n1", "n2"):
        registry.record_reports(name, (status_item(1, cpu=5.0),), 0)  # live leases, n1 first
    holding = threading.Event()

    def lock_waiters() -> int:
        # a transaction of its own per look: PostgreSQL keeps pg_stat_activity as it first
        # read it until the transaction ends, so polling in one transaction could never see
        # the flush start waiting if the first look came before it did
        with store.engine.connect() as conn:
            return int(conn.execute(text(_LOCK_WAITERS)).scalar_one())

    def flush_waits(tx: Tx) -> None:
        holding.set()  # n2's rows are locked; the flush starts and must wait for a lock
        wait_for(lambda: lock_waiters() > 0, 20, "the flush to wait on a lock")

    def batch() -> list[Any]:
        async def jobs() -> list[Any]:
            writer = GroupWriter(store)
            runner = asyncio.create_task(writer.run())
            try:
                report = (status_item(2, cpu=9.0),)
                return await asyncio.gather(
                    writer.submit(lambda tx: registry.record_reports_in(tx, "n2", report, 0)),
                    writer.submit(flush_waits),
                    writer.submit(lambda tx: registry.record_reports_in(tx, "n1", report, 0)),
                    return_exceptions=True,
                )
            finally:
                runner.cancel()

        return asyncio.run(jobs())

    with ThreadPoolExecutor(1) as pool:
        batch_done = pool.submit(batch)
        assert holding.wait(20)
        flushed = registry.flush()
        outcomes = batch_done.result(60)
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    assert flushed == 2
    assert stored_lease(store, "n1")[2:] == (2, 0) and stored_lease(store, "n2")[2:] == (2, 0)


_LOCK_WAITERS = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def test_the_flush_shares_a_group_batch(store: Store, registry: NodeRegistry) -> None:
    """Given a group writer, the lease flush is one of its jobs: it commits with the batch it
    joins, after taking the batch's revision lock, instead of a transaction of its own."""
    commits: list[int] = []
    store.on_commit(commits.append)
    registry.register("edge-a", INFO)
    registry.record_reports("edge-a", (status_item(1, CAPACITY),), 0)
    registry.record_reports("edge-a", (status_item(2, CAPACITY, cpu=77.0),), 0)

    async def scenario() -> int:
        writer = GroupWriter(store)
        registry.writer = writer
        runner = asyncio.create_task(writer.run())
        try:
            flushed, _ = await asyncio.gather(
                registry.flush_async(),
                writer.submit(lambda tx: registry.register_in(tx, "edge-b", INFO)),
            )
            return flushed
        finally:
            runner.cancel()

    before = len(commits)
    assert asyncio.run(scenario()) == 1
    assert len(commits) == before + 1  # edge-b's revision and the flush: one commit
    assert stored_lease(store)[1:3] == (77.0, 2)


def outage_item(seq: int, at: float, **fields: Any) -> ReportItem:
    body = {"start": at, "end": at + 600, "restarts": 1, "buffered": 41_220, **fields}
    return ReportItem(seq=seq, topic="node/outage", key=f"outage/{at}", body=body)


def test_outage_reports_are_kept_on_the_node_newest_first(
    store: Store, registry: NodeRegistry
) -> None:
    registry.register("edge-a", INFO)
    items = tuple(outage_item(seq, T0 + 1000 * seq) for seq in range(1, 8))
    assert registry.record_reports("edge-a", items, 0) == (7, ())
    outages = get_node(store)["status"]["outages"]
    assert len(outages) == 5
    assert [o["start"] for o in outages] == [rfc3339(T0 + 1000 * s) for s in (7, 6, 5, 4, 3)]
    assert outages[0] == {
        "start": rfc3339(T0 + 7000),
        "end": rfc3339(T0 + 7600),
        "restarts": 1,
        "buffered": 41_220,
        "coalesced": 0,
        "expired": 0,
        "dropped": 0,
        "servedLocally": 0,
        "durationSeconds": 600.0,
    }
    # the same outage again (a replay under a new seq) replaces itself, nothing more
    registry.record_reports("edge-a", (outage_item(8, T0 + 7000, buffered=5),), 0)
    outages = get_node(store)["status"]["outages"]
    assert len(outages) == 5 and outages[0]["buffered"] == 5


@pytest.mark.parametrize(
    "fields",
    [
        {"start": "yesterday"},
        {"end": T0 - 1},  # before its start
        {"start": True},
        {"start": float("inf")},
        {"restarts": -1},
        {"buffered": 2**63},
        {"dropped": 1.5},
        {"coalesced": "many"},
    ],
)
def test_an_outage_report_that_cannot_be_kept_is_refused_and_the_rest_go_on(
    store: Store, registry: NodeRegistry, fields: dict[str, Any]
) -> None:
    registry.register("edge-a", INFO)
    bad = outage_item(1, T0, **fields)
    high, rejected = registry.record_reports("edge-a", (bad, outage_item(2, T0 + 5)), 0)
    assert high == 2 and [r.seq for r in rejected] == [1]
    assert "node/outage" in rejected[0].reason
    assert [o["start"] for o in get_node(store)["status"]["outages"]] == [rfc3339(T0 + 5)]


def test_a_live_replicas_lagging_flush_does_not_expire_its_nodes(
    store: Store, clock: ManualClock
) -> None:
    """The leader counts a node of another live replica silent from what that replica has
    written (``hub_replicas.flushed``), not from the replica's sign of life: a replica
    whose lease flushes lag under load keeps its connected nodes Ready, and a node it has
    truly not heard from is still expired once its flushes show it."""
    serving = NodeRegistry(store, grace_period=GRACE, replica="serving")
    leader = NodeRegistry(store, grace_period=GRACE, replica="leader")
    book = ReplicaBook(store.engine, "serving", clock=clock)
    serving.register("edge-a", INFO)  # contact T0, written
    serving.register("edge-b", INFO)
    assert serving.flush() == 0 and serving.flushed_through == T0
    clock.now = T0 + GRACE + 10
    # edge-a is heard now; the flush that would write it is late
    assert serving.absorb("edge-a", (status_item(1),), 0) == 1
    book.refresh(2, False, serving.flushed_through)
    assert leader.mark_silent() == [], "a lagging flush made connected nodes NotReady"
    clock.now = T0 + GRACE + 40
    assert serving.flush() == 1  # edge-a's contact at T0 + 50 is written; edge-b has none
    book.refresh(2, False, serving.flushed_through)
    assert leader.mark_silent() == ["edge-b"]
    assert ready(get_node(store, "edge-a"))["status"] == "True"


def test_a_gone_replicas_nodes_wait_while_the_others_take_them_over(
    store: Store, clock: ManualClock
) -> None:
    """A replica dies holding more nodes than the others can greet within the grace period:
    the leader does not mark them NotReady while they keep arriving elsewhere, and marks
    the ones that never do a grace period after the last one arrived. A node the dead
    replica itself had not heard from for a grace period is marked at once."""
    gone = NodeRegistry(store, grace_period=GRACE, replica="gone")
    survivor = NodeRegistry(store, grace_period=GRACE, replica="survivor")
    clock.now = T0 - GRACE - 20
    gone.register("edge-quiet", INFO)  # never heard from again
    clock.now = T0
    for name in ("edge-a", "edge-b", "edge-c", "edge-d"):
        gone.register(name, INFO)
    gone.flush()
    ReplicaBook(store.engine, "gone", clock=clock).refresh(5, False, gone.flushed_through)
    leader = NodeRegistry(store, grace_period=GRACE, replica="leader")
    leader.watching_since = T0 - GRACE - 30  # it led before the death
    clock.now = T0 + 15  # "gone" died at T0
    assert leader.mark_silent() == ["edge-quiet"]
    survivor_book = ReplicaBook(store.engine, "survivor", clock=clock)
    taken: list[str] = []

    def survivor_lives() -> None:  # its nodes report, it flushes and says it lives
        for name in taken:
            survivor.register(name, INFO)
        survivor.flush()
        survivor_book.refresh(len(taken), False, survivor.flushed_through)

    for offset, name in ((30, "edge-a"), (60, "edge-b")):
        clock.now = T0 + offset
        taken.append(name)
        survivor_lives()
        assert leader.mark_silent() == []
        clock.now += 15
        survivor_lives()
        assert leader.mark_silent() == [], f"NotReady while the takeover went on ({name})"
    clock.now = T0 + 60 + GRACE + 1  # the last arrival was a grace period ago
    survivor_lives()
    assert leader.mark_silent() == ["edge-c", "edge-d"]
    for name in ("edge-a", "edge-b"):
        assert ready(get_node(store, name))["status"] == "True"
    clock.now += 30
    survivor_lives()
    assert leader.mark_silent() == []


def test_a_new_leader_counts_a_takeover_from_the_gone_replicas_last_sign_of_life(
    store: Store, clock: ManualClock
) -> None:
    """A leader that did not see a takeover begin knows only the gone replica's row: the
    nodes nobody took over are marked a grace period after its death, as before."""
    gone = NodeRegistry(store, grace_period=GRACE, replica="gone")
    for name in ("edge-a", "edge-b"):
        gone.register(name, INFO)
    gone.flush()
    ReplicaBook(store.engine, "gone", clock=clock).refresh(2, False, gone.flushed_through)
    leader = NodeRegistry(store, grace_period=GRACE, replica="leader")
    leader.watching_since = T0 - GRACE
    clock.now = T0 + GRACE - 1
    assert leader.mark_silent() == []
    leader.takeovers.forget()  # leadership went elsewhere and came back
    clock.now = T0 + GRACE + 1
    assert leader.mark_silent() == ["edge-a", "edge-b"]
