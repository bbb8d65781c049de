"""Nodes spread over a replica that joins, gradually, and then stay put (issue 14, item 5).

Real edgecores given both replicas' endpoints all start on the first replica (the only
one up). When the second starts, the first serves more than its share and asks nodes to
move, one per round for a fleet this small; each edge reconnects at once to its next
endpoint. Once even, nothing moves again, and no node was ever NotReady.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.support.postgres import PostgresCluster, free_port
from tests.support.procs import Edge, Hub, wait_for
from tests.support.replicas import replica_hubs

EDGES = 4
INTERVAL = "1"


def sessions(hub: Hub) -> int:
    return int(hub.request("GET", "/healthz")[1]["edge"]["sessions"])


def never_not_ready(hub: Hub, names: list[str]) -> list[str]:
    """Nodes that are not Ready now, or whose Ready condition ever left True (its
    lastTransitionTime would be later than the node's creation)."""
    bad = []
    for name in names:
        body = hub.request("GET", f"/api/v1/nodes/{name}")[1]
        ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
        if (
            ready["status"] != "True"
            or ready["lastTransitionTime"] != body["metadata"]["creationTimestamp"]
        ):
            bad.append(f"{name}: {json.dumps(ready)}")
    return bad


def test_nodes_spread_over_a_replica_that_joins_and_then_stay(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    url = postgres.create_database("rebalance")
    a, b = replica_hubs(tmp_path, url, 2, "--rebalance-interval", INTERVAL)
    b.api_port, b.edge_port = free_port(), free_port()
    names = [f"spread-{i}" for i in range(EDGES)]
    edges: list[Edge] = []
    try:
        a.start()
        for name in names:  # A first: every edge starts there, the only replica up
            edge = Edge(tmp_path / name, name, a.edge, "--hub", f"ws://127.0.0.1:{b.edge_port}")
            edge.start()
            edges.append(edge)
        wait_for(lambda: sessions(a) == EDGES, 30, "every edge on A")
        b.start()
        wait_for(lambda: sessions(a) == sessions(b) == EDGES // 2, 60, "an even spread")
        moved = a.log().count("asked to move to another hub replica")
        assert moved == EDGES // 2, a.log()
        rounds = [line for line in a.log().splitlines() if "rebalancing: serving" in line]
        assert rounds and all(line.endswith("asking 1 to move") for line in rounds), rounds
        told = [e for e in edges if "move to another replica (rebalancing)" in e.log()]
        assert len(told) == EDGES // 2
        # settled: many more rounds on each replica move nothing
        b_seen = len(b.log())
        time.sleep(8 * float(INTERVAL))
        assert sessions(a) == sessions(b) == EDGES // 2
        assert a.log().count("asked to move to another hub replica") == moved
        assert "asked to move" not in b.log()[b_seen:]
        assert never_not_ready(b, names) == []
    finally:
        for edge in edges:
            edge.kill()
        a.kill()
        b.kill()
