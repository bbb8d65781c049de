"""Hub → edge desired-state sync with real cloudhub and edgecore processes and SQLite files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from cloudhub.store import rfc3339
from tests.support.procs import Edge, Hub, wait_for

DEVICES = "/api/v1/namespaces/default/devices"


def device(name: str, node: str | None, **desired: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "deviceModelRef": {"name": "thermostat"},
        "properties": [{"name": k, "desired": {"value": v}} for k, v in desired.items()],
    }
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name},
        "spec": spec,
    }


def create(hub: Hub, obj: dict[str, Any]) -> dict[str, Any]:
    status, body = hub.request("POST", DEVICES, obj)
    assert status == 201, body
    return body


def put(hub: Hub, obj: dict[str, Any]) -> dict[str, Any]:
    status, body = hub.request("PUT", f"{DEVICES}/{obj['metadata']['name']}", obj)
    assert status == 200, body
    return body


def hub_view(hub: Hub, node: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The devices the hub binds to ``node``, as the edge cache should hold them."""
    status, body = hub.request("GET", "/api/v1/devices")
    assert status == 200, body
    return {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in body["items"]
        if d["spec"].get("nodeName") == node
    }


def desired(obj: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["desired"]["value"] for p in obj["spec"].get("properties", [])}


def desired_state(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[Any, Any]:
    """What the edge must hold of each object: everything but status (what the edge itself
    reported, which the hub does not echo back) and the revision it was written at."""
    return {
        key: {
            **{k: v for k, v in obj.items() if k != "status"},
            "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"},
        }
        for key, obj in objects.items()
    }


def converged(hub: Hub, edge: Edge) -> bool:
    return desired_state(edge.cached()) == desired_state(hub_view(hub, edge.node))


def test_apply_update_delete_reach_the_edge_cache(hub: Hub, start_edge) -> None:
    """A device created, updated and deleted on the hub shows up, changes and vanishes in the
    edge's SQLite cache."""
    edge = start_edge("edge1")
    create(hub, device("thermo", "edge1", target="21"))
    wait_for(
        lambda: desired(edge.cached()[("default", "thermo")]) == {"target": "21"},
        10,
        "the device to reach the edge",
    )

    put(hub, device("thermo", "edge1", target="23"))
    wait_for(
        lambda: desired(edge.cached()[("default", "thermo")]) == {"target": "23"},
        10,
        "the update to reach the edge",
    )
    assert converged(hub, edge)

    status, _ = hub.request("DELETE", f"{DEVICES}/thermo")
    assert status == 200
    wait_for(lambda: ("default", "thermo") not in edge.cached(), 10, "the delete to reach the edge")
    assert edge.revision() >= hub.request("GET", "/healthz")[1]["revision"] - 1


def test_device_rebound_moves_between_node_caches(hub: Hub, start_edge) -> None:
    """Re-binding a device to another node removes it from the first node's cache and adds it
    to the second's; devices of other nodes never reach a cache."""
    a = start_edge("edge-a")
    b = start_edge("edge-b")
    create(hub, device("mover", "edge-a", target="1"))
    create(hub, device("stay-b", "edge-b", target="2"))
    create(hub, device("unbound", None, target="3"))
    wait_for(
        lambda: converged(hub, a) and converged(hub, b) and len(a.cached()) == 1,
        10,
        "both caches to converge",
    )
    assert set(a.cached()) == {("default", "mover")}
    assert set(b.cached()) == {("default", "stay-b")}

    put(hub, device("mover", "edge-b", target="1"))
    wait_for(
        lambda: set(b.cached()) == {("default", "mover"), ("default", "stay-b")},
        10,
        "the device to enter edge-b",
    )
    wait_for(lambda: a.cached() == {}, 10, "the device to leave edge-a")
    assert converged(hub, a) and converged(hub, b)


def test_device_models_reach_every_node(hub: Hub, start_edge) -> None:
    """A DeviceModel is cached by every node, so twin types are known wherever a device lands."""
    a = start_edge("edge-a")
    b = start_edge("edge-b")
    model = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "thermostat"},
        "spec": {"properties": [{"name": "target", "type": "INT", "accessMode": "ReadWrite"}]},
    }
    status, body = hub.request("POST", "/api/v1/namespaces/default/devicemodels", model)
    assert status == 201, body
    for edge in (a, b):
        wait_for(
            lambda e=edge: ("default", "thermostat") in e.cached("DeviceModel"),
            10,
            f"the model to reach {edge.node}",
        )


def test_edge_restart_resumes_from_its_revision(hub: Hub, start_edge) -> None:
    """A restarted edge resumes from its last applied revision (no snapshot) and receives the
    changes made while it was down."""
    edge = start_edge("edge1")
    create(hub, device("one", "edge1", target="1"))
    wait_for(lambda: converged(hub, edge) and edge.cached(), 10, "the first device")
    edge.kill()
    applied = edge.revision()
    assert applied > 0

    put(hub, device("one", "edge1", target="2"))
    create(hub, device("two", "edge1", target="3"))
    edge.start()
    wait_for(
        lambda: converged(hub, edge) and len(edge.cached()) == 2,
        10,
        "the changes made while the edge was down",
    )
    assert "connected from" in hub.log()
    assert f"at revision {applied} " in hub.log(), "the edge did not resume from its revision"
    assert "snapshot" not in edge.log()


def test_hub_killed_edges_reconnect_and_nothing_acknowledged_is_lost(hub: Hub, start_edge) -> None:
    """After a kill -9 of the hub, edges reconnect by themselves and catch up; every write the
    hub acknowledged before the crash is still there and reaches the edge."""
    a = start_edge("edge-a")
    b = start_edge("edge-b")
    for i in range(20):
        create(hub, device(f"d{i}", "edge-a" if i % 2 else "edge-b", target=str(i)))
    acknowledged = {**hub_view(hub, "edge-a"), **hub_view(hub, "edge-b")}
    hub.kill()
    hub.start()

    after = {**hub_view(hub, "edge-a"), **hub_view(hub, "edge-b")}
    assert desired_state(after) == desired_state(acknowledged)
    put(hub, device("d0", "edge-b", target="changed-after-restart"))
    wait_for(
        lambda: converged(hub, a) and converged(hub, b),
        20,
        "edges to reconnect to the restarted hub and catch up",
    )
    assert desired(b.cached()[("default", "d0")]) == {"target": "changed-after-restart"}
    assert "reconnecting in" in a.log()


def test_many_changes_while_disconnected_converge_exactly(hub: Hub, start_edge) -> None:
    """200 changes to one node while it is down (updates, deletes, re-binds, re-creates) leave
    its cache equal to the hub's view after it reconnects."""
    edge = start_edge("edge1")
    for i in range(10):
        create(hub, device(f"d{i}", "edge1", target="0"))
    wait_for(lambda: len(edge.cached()) == 10, 10, "the initial devices")
    edge.kill()

    changes = 0
    round_ = 0
    while changes < 200:
        round_ += 1
        for i in range(10):
            name = f"d{i}"
            if changes >= 200:
                break
            if i == 3 and round_ % 5 == 0:
                assert hub.request("DELETE", f"{DEVICES}/{name}")[0] == 200
                create(hub, device(name, "edge1", target=f"recreated-{round_}"))
                changes += 2
            elif i == 7 and round_ % 4 == 0:
                put(hub, device(name, "elsewhere" if round_ % 8 else "edge1", target=str(round_)))
                changes += 1
            else:
                put(hub, device(name, "edge1", target=f"r{round_}"))
                changes += 1
    assert hub.request("DELETE", f"{DEVICES}/d9")[0] == 200
    edge.start()
    wait_for(lambda: converged(hub, edge) and edge.cached(), 20, "the cache to converge")
    assert ("default", "d9") not in edge.cached()
    assert "snapshot" not in edge.log()


def test_edge_behind_the_compacted_log_gets_a_snapshot(hub: Hub, start_edge) -> None:
    """An edge whose revision is older than the hub's change log is resynced from a snapshot,
    including the deletions it missed."""
    from cloudhub.db import open_engine
    from cloudhub.store import Store

    edge = start_edge("edge1")
    for i in range(5):
        create(hub, device(f"d{i}", "edge1", target="0"))
    wait_for(lambda: len(edge.cached()) == 5, 10, "the initial devices")
    edge.kill()
    for i in range(3):
        assert hub.request("DELETE", f"{DEVICES}/d{i}")[0] == 200
    put(hub, device("d4", "edge1", target="new"))
    engine = open_engine(f"sqlite:///{hub.data_dir / 'hub.db'}")
    try:
        Store(engine).compact(0)
    finally:
        engine.dispose()

    edge.start()
    wait_for(
        lambda: converged(hub, edge) and len(edge.cached()) == 2,
        10,
        "the snapshot to replace the cache",
    )
    assert "applied a snapshot" in edge.log()


def test_node_ready_then_not_ready_then_ready(hub: Hub, start_edge) -> None:
    """A node is Ready with a heartbeat and psutil capacity/usage while edgecore runs,
    NotReady once silent for the grace period, and Ready again when it comes back."""

    def node() -> dict[str, Any]:
        status, body = hub.request("GET", "/api/v1/nodes/edge1")
        assert status == 200, body
        return body

    def ready() -> str:
        conds = node()["status"].get("conditions", [])
        return next(c["status"] for c in conds if c["type"] == "Ready")

    edge = start_edge("edge1")
    wait_for(lambda: node()["status"].get("usage"), 10, "a status report")
    status = node()["status"]
    assert ready() == "True"
    assert status["capacity"]["cpu"] >= 1
    assert status["capacity"]["memoryBytes"] > status["usage"]["memoryBytes"] > 0
    assert status["capacity"]["diskBytes"] > 0
    assert status["lastHeartbeatTime"].endswith("Z")
    assert status["nodeInfo"]["agentVersion"]

    edge.kill()
    wait_for(lambda: ready() == "Unknown", 15, "the node to go NotReady")
    edge.start()
    wait_for(lambda: ready() == "True", 15, "the node to be Ready again")


def test_heartbeats_make_no_revisions_and_outlive_a_clean_hub_stop(tmp_path: Path) -> None:
    """Heartbeats show at once in the API without new revisions, and the last one shown is
    the one the database holds after the hub stops (they are written in bulk, not each)."""
    hub = Hub(tmp_path / "hub", "--node-grace-period", "40")  # leases flushed every 5 s
    hub.start()
    edge = Edge(tmp_path / "edge1", "edge1", hub.edge, "--status-interval", "0.2", "--no-mqtt")
    edge.start()
    try:

        def node() -> dict[str, Any]:
            status, body = hub.request("GET", "/api/v1/nodes/edge1")
            assert status == 200, body
            return body

        first = wait_for(lambda: node()["status"].get("usage") and node(), 10, "a report")
        wait_for(
            lambda: node()["status"]["lastHeartbeatTime"] > first["status"]["lastHeartbeatTime"],
            10,
            "a later heartbeat",
        )
        later = node()
        assert later["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        edge.kill()
        shown = node()["status"]
        assert hub.stop() == 0
        db = sqlite3.connect(tmp_path / "hub" / "hub.db")
        beat, usage = db.execute(
            "SELECT heartbeat, usage FROM node_leases WHERE node = 'edge1'"
        ).fetchone()
        db.close()
        assert rfc3339(beat) == shown["lastHeartbeatTime"]
        assert json.loads(usage) == shown["usage"]
    finally:
        edge.kill()
        hub.kill()


def test_edge_keeps_its_cache_while_the_hub_is_down(hub: Hub, start_edge, tmp_path: Path) -> None:
    """With the hub gone, the edge keeps running on its cache and keeps retrying."""
    edge = start_edge("edge1")
    create(hub, device("thermo", "edge1", target="21"))
    wait_for(lambda: edge.cached(), 10, "the device")
    hub.kill()
    wait_for(lambda: edge.log().count("reconnecting in") >= 2, 20, "retries")
    assert edge.running
    assert desired(edge.cached()[("default", "thermo")]) == {"target": "21"}
