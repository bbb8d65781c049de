"""Drift detection end to end: a node's cache that no longer holds what the hub routed to
it is marked Drift on its Node, `edgeward resync` makes it take a snapshot, and it is
Synced again. A steady node costs no revisions."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import BIN, Edge, Hub, wait_for

NS = "/api/v1/namespaces/default"


def device(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node},
    }


def cache_state(hub: Hub, node: str) -> str | None:
    status, body = hub.request("GET", f"/api/v1/nodes/{node}")
    return body.get("status", {}).get("cache", {}).get("state") if status == 200 else None


def cli(hub: Hub, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edgeward"), "--hub", hub.api, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub(tmp_path / "hub", "--drift-check-interval", "0.3")
    h.start()
    try:
        yield h
    finally:
        h.kill()


def test_a_cache_that_drifted_is_found_and_a_resync_mends_it(hub: Hub, tmp_path: Path) -> None:
    for name in ("d1", "d2"):
        assert hub.request("POST", f"{NS}/devices", device(name, "edge1"))[0] == 201
    assert hub.request("POST", f"{NS}/devices", device("elsewhere", "edge2"))[0] == 201
    edge = Edge(tmp_path / "edge1", "edge1", hub.edge, "--no-mqtt", "--status-interval", "0.3")
    edge.start()
    try:
        wait_for(lambda: cache_state(hub, "edge1") == "Synced", 20, "edge1 to be Synced")
        steady = hub.request("GET", "/healthz")[1]["revision"]
        wide = cli(hub, "get", "nodes", "-o", "wide").stdout.split("\n")
        column = wide[0].split().index("CACHE")
        assert wide[1].split()[column] == "Synced"

        # the cache loses a device and gains one the hub never routed here, as a restored
        # backup or a bug would leave it; the edge resumes at the same revision
        edge.kill()
        db = sqlite3.connect(edge.data_dir / "edge.db", isolation_level=None)
        db.execute("DELETE FROM objects WHERE name = 'd2'")
        db.execute(
            "INSERT INTO objects SELECT kind, namespace, 'ghost', resource_version, body "
            "FROM objects WHERE name = 'd1'"
        )
        db.close()
        edge.start()
        wait_for(lambda: cache_state(hub, "edge1") == "Drift", 20, "the drift to be found")
        assert "Drift" in cli(hub, "get", "nodes", "-o", "wide").stdout
        described = cli(hub, "describe", "node", "edge1").stdout
        assert "Cache:" in described and "Drift at revision" in described

        resync = cli(hub, "resync", "edge1")
        assert resync.returncode == 0, resync.stderr
        assert "reconnecting and takes a snapshot now" in resync.stdout
        wait_for(lambda: cache_state(hub, "edge1") == "Synced", 20, "the snapshot to mend it")
        db = sqlite3.connect(f"file:{edge.data_dir / 'edge.db'}?mode=ro", uri=True)
        names = {n for (n,) in db.execute("SELECT name FROM objects WHERE kind = 'Device'")}
        db.close()
        assert names == {"d1", "d2"}
        log = (tmp_path / "hub.log").read_text()
        assert "snapshot, an operator asked for a resync" in log
        assert "edgeward resync edge1" in log  # the drift warning says what to do
    finally:
        edge.kill()
    # while steady, judging added nothing but the two verdicts' status changes
    assert hub.request("GET", "/healthz")[1]["revision"] - steady <= 3


def test_resync_of_an_unknown_node_and_bad_names_are_one_line_errors(hub: Hub) -> None:
    missing = cli(hub, "resync", "nobody")
    assert missing.returncode == 1 and "not found" in missing.stderr.lower()
    assert missing.stderr.count("\n") == 1
    bad = cli(hub, "resync", "Not_A_Name")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    status, body = hub.request("POST", "/api/v1/nodes/nobody/resync")
    assert status == 404 and body["reason"] == "NotFound"


def test_who_may_ask_for_a_resync(tmp_path: Path) -> None:
    """An admin any node; a node its own only; a viewer none."""
    hub = Hub(tmp_path / "secure", secure=True)
    hub.start()
    try:
        for node in ("gw-1", "gw-2"):
            node_obj = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}
            assert hub.request("POST", "/api/v1/nodes", node_obj)[0] == 201
        tokens = {}
        for role, extra in (("node", {"node": "gw-1", "singleUse": False}), ("viewer", {})):
            status, body = hub.request("POST", "/api/v1/tokens", {"role": role, **extra})
            assert status == 201, body
            tokens[role] = body["token"]
        assert hub.request("POST", "/api/v1/nodes/gw-2/resync")[0] == 202
        assert hub.request("POST", "/api/v1/nodes/gw-1/resync", token=tokens["node"])[0] == 202
        status, body = hub.request("POST", "/api/v1/nodes/gw-2/resync", token=tokens["node"])
        assert status == 403 and "its own node only" in body["message"]
        assert hub.request("POST", "/api/v1/nodes/gw-1/resync", token=tokens["viewer"])[0] == 403
        assert hub.request("POST", "/api/v1/nodes/gw-1/resync", token="")[0] == 401
    finally:
        hub.kill()


def test_a_status_the_edge_reported_is_not_drift_but_a_spec_it_missed_is(store: Any) -> None:
    """The hub's judgement against its store (SQLite and PostgreSQL): a status-only write
    (what the edge itself reported, never echoed to it) moves the object's resourceVersion
    but not what the edge must hold; a spec write the edge has not applied is drift."""
    from cloudhub.drift import DRIFT, SYNCED, judge
    from edgeward.kinds import DEVICE
    from edgeward.sync import cache_digest

    created = store.create(
        DEVICE, {**device("d1", "edge1"), "metadata": {"name": "d1", "namespace": "default"}}
    )
    edge_holds = [("Device", "default", "d1", created)]
    revision = int(created["metadata"]["resourceVersion"])
    with store.writing() as tx:
        tx.replace_status(DEVICE, "default", "d1", {"state": "online"})
    assert judge(store, "edge1", revision, cache_digest(edge_holds)) == SYNCED
    changed = store.get(DEVICE, "default", "d1")
    changed["spec"]["properties"] = [{"name": "extra"}]
    store.replace(DEVICE, changed)
    assert judge(store, "edge1", revision, cache_digest(edge_holds)) is None  # not caught up
    head = store.head()
    assert judge(store, "edge1", head, cache_digest(edge_holds)) == DRIFT
