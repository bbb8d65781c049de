"""Two secure hub replicas on one PostgreSQL behind HAProxy (docs/ha.md), as real processes:
the balancer passes TLS through on both ports, so the API's bearer tokens and the node's
client certificate reach the replicas, and an edge whose replica dies comes back through
the same address to the other one."""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.haproxy import Front, balanced
from tests.support.nodecerts import join
from tests.support.postgres import PostgresCluster
from tests.support.procs import Edge, Hub, set_desired, wait_for
from tests.support.replicas import running_replicas

NS = "/api/v1/namespaces/default"
NODE = "edge-ha"
#: generous: a replica's death is found by the edge's own link and HAProxy's checks
FAILOVER = 60.0


def model() -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "panel"},
        "spec": {"properties": [{"name": "target", "type": "INT", "accessMode": "ReadWrite"}]},
    }


def device(name: str, target: str) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name},
        "spec": {
            "nodeName": NODE,
            "deviceModelRef": {"name": "panel"},
            "properties": [{"name": "target", "desired": {"value": target}}],
        },
    }


def health(hub: Hub) -> dict[str, Any]:
    """The replica's own /healthz, straight to its port (no balancer, no token)."""
    ctx = ssl.create_default_context(cafile=str(hub.ca))
    with urllib.request.urlopen(hub.api + "/healthz", timeout=5, context=ctx) as resp:
        return json.loads(resp.read())


def holder(front: Front) -> Hub | None:
    """The replica the edge's session is on, by each live replica's edge session count."""
    live = [hub for hub in front.replicas if hub.running]
    holding = [hub for hub in live if health(hub)["edge"]["sessions"] == 1]
    return holding[0] if len(holding) == 1 else None


def holder_after_connect(front: Front) -> Hub:
    found: Hub = wait_for(lambda: holder(front), 30, "the edge's session on a replica")
    return found


def targets(edge: Edge) -> dict[str, str]:
    """Each device's desired target in the edge's cache."""
    return {
        name: next(p["desired"]["value"] for p in body["spec"]["properties"])
        for (_ns, name), body in edge.cached().items()
    }


def hub_targets(front: Front) -> dict[str, str]:
    status, body = front.request("GET", f"{NS}/devices")
    assert status == 200, body
    return {
        d["metadata"]["name"]: next(p["desired"]["value"] for p in d["spec"]["properties"])
        for d in body["items"]
    }


def test_an_edge_behind_the_balancer_moves_to_the_surviving_replica(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    """Through one HAProxy address: the API (TLS and the admin token end to end), a node
    joined and connected with its client certificate, desired values reaching it; after a
    kill -9 of the replica holding its session, the edge is back on the other replica,
    new values reach it, and every write answered before the kill is still there."""
    database = postgres.create_database("ha_balancer")
    with (
        running_replicas(tmp_path, database, 2, "--node-grace-period", "30", secure=True) as hubs,
        balanced(tmp_path, hubs) as front,
    ):
        assert front.request("GET", "/api/v1/nodes", token="")[0] == 401  # the hub's own auth
        assert front.request("POST", f"{NS}/devicemodels", model())[0] == 201

        join(front, NODE, tmp_path / NODE)  # the join API through the balancer, too
        edge = Edge(tmp_path / NODE, NODE, front.edge, "--status-interval", "0.5", "--no-mqtt")
        edge.start()
        try:
            before = holder_after_connect(front)
            answered: dict[str, str] = {}
            for index in range(4):
                name = f"panel-{index}"
                status, body = front.request("POST", f"{NS}/devices", device(name, "0"))
                assert status == 201, body
                set_desired(front, f"{NS}/devices/{name}", target=str(index + 10))
                answered[name] = str(index + 10)
            wait_for(lambda: targets(edge) == answered, 30, "desired values to reach the edge")

            before.kill()
            after = wait_for(
                lambda: (h := holder(front)) is not None and h is not before and h,
                FAILOVER,
                "the edge to reconnect through the balancer to the other replica",
            )
            assert after.running and edge.running
            assert hub_targets(front) == answered, "a write answered before the kill was lost"

            set_desired(front, f"{NS}/devices/panel-0", target="99")
            answered["panel-0"] = "99"
            wait_for(lambda: targets(edge) == answered, FAILOVER, "a new value after failover")
            survivor = [f"r{front.replicas.index(after)}"]
            wait_for(lambda: front.balancer.up() == survivor, 30, "HAProxy to mark it down")
        finally:
            edge.kill()
