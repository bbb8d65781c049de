"""Node registration, reports, leases and readiness on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select, update

from cloudhub.nodes import NodeRegistry
from cloudhub.schema import node_leases, node_sync
from cloudhub.store import Store, rfc3339
from edgeward.kinds import DEVICE, DEVICE_MODEL, NODE
from edgeward.protocol import TOPIC_NODE_STATUS, TOPIC_TWIN_REPORTED, ReportItem
from tests.support.clock import T0, ManualClock

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
    assert registry.record_reports("edge-a", (status_item(1), status_item(2)), 0) == 2
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
    high = registry.record_reports("edge-a", (status_item(1, CAPACITY, cpu=50.0),), 7)
    assert high == 1
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
    assert registry.record_reports("edge-a", (status_item(2, CAPACITY, cpu=75.0),), 7) == 2
    assert registry.record_reports("edge-a", (status_item(3, cpu=80.0),), 8) == 3
    assert store.head() == head + 1
    node = get_node(store)
    assert node["status"]["usage"]["cpuPercent"] == 80.0
    assert node["status"]["capacity"] == CAPACITY
    assert node["status"]["lastHeartbeatTime"] == rfc3339(T0 + 20)
    assert node["status"]["sync"] == {"ackedRevision": 8, "reportSeq": 3}


def test_replayed_reports_are_deduplicated(store: Store, registry: NodeRegistry) -> None:
    """An edge that resends rows the hub already holds gets the same ack and changes nothing."""
    registry.register("edge-a", INFO)
    items = (status_item(1, CAPACITY, cpu=10.0), status_item(2, cpu=20.0))
    assert registry.record_reports("edge-a", items, 0) == 2
    head, node = store.head(), get_node(store)
    assert registry.record_reports("edge-a", items, 0) == 2
    assert store.head() == head
    assert get_node(store) == node
    # A replay of older rows alongside new ones applies only the new ones.
    bigger = {**CAPACITY, "cpu": "8"}
    mixed = (status_item(2, {"cpu": "1"}, cpu=99.0), status_item(3, bigger, cpu=30.0))
    assert registry.record_reports("edge-a", mixed, 0) == 3
    node = get_node(store)
    assert node["status"]["capacity"] == bigger
    assert node["status"]["usage"]["cpuPercent"] == 30.0
    assert store.head() == head + 1
    # A reconnect learns the persisted high seq.
    assert registry.register("edge-a", INFO) == 3


def test_unknown_topics_are_dropped_but_acknowledged(store: Store, registry: NodeRegistry) -> None:
    """A report row of a kind this hub does not know is acked (so the edge can delete it)."""
    registry.register("edge-a", INFO)
    head, node = store.head(), get_node(store)
    items = (
        ReportItem(seq=1, topic="app/status", key="nginx", body={"phase": "Running"}),
        ReportItem(seq=2, topic="no/such/topic", key=None, body={"x": 1}),
    )
    assert registry.record_reports("edge-a", items, 0) == 2
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
    assert registry.record_reports("edge-a", (status_item(2, CAPACITY, cpu=3.0),), 0) == 2
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
    assert registry.record_reports("edge-a", (status_item(2),), 0) == 2
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
    assert registry.record_reports("edge-a", (status_item(2, CAPACITY, cpu=20.0),), 4) == 2
    clock.now += 30
    assert registry.record_reports("edge-a", (status_item(3, cpu=30.0),), 5) == 3
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
    assert registry.record_reports("edge-a", (status_item(2, bigger, cpu=5.0),), 0) == 2
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
    assert registry.record_reports("edge-a", (twin_row(1, "1"), twin_row(2, "2")), 0) == 2
    assert store.head() == head + 1
    device = store.get(DEVICE, "default", "d1")
    assert device["status"]["twins"][0]["reported"]["value"] == "2"
    # An unreadable later row replaces nothing: the earlier one is still written.
    assert registry.record_reports("edge-a", (twin_row(3, "3"), twin_row(4, "4", [])), 0) == 4
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
    assert restarted.record_reports("edge-a", (status_item(2, CAPACITY, cpu=20.0),), 0) == 2
    assert stored_lease(store) == written
    assert get_node(store)["status"]["usage"]["cpuPercent"] == 20.0


def test_a_restarted_hub_gives_every_node_a_grace_period(
    store: Store, registry: NodeRegistry, clock: ManualClock
) -> None:
    """Nodes silent while the hub was down are not NotReady before they could reconnect."""
    registry.register("edge-a", INFO)
    registry.register("edge-b", INFO)
    clock.now = T0 + 600  # the hub was down for ten minutes
    restarted = NodeRegistry(store, grace_period=GRACE)
    clock.now += GRACE
    assert restarted.expire() == []
    restarted.register("edge-b", INFO)  # edge-b reconnected meanwhile
    clock.now += 1
    assert restarted.expire() == ["edge-a"]
    assert ready(get_node(store, "edge-b"))["status"] == "True"
