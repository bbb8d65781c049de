"""REST writes on a real cloudhub process share the group writer's commits.

The hub runs every API write through the same group writer as the edges'
reports (``cloudhub/main.py``); these tests prove what that must not change:
concurrent patches all land, and a write is answered only once it is durable,
so a hub killed right after its answers still has every one of them.
"""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import Hub

DEVICES = "/api/v1/namespaces/default/devices"


@pytest.fixture
def db_hub(tmp_path: Path, database_url: str) -> Any:
    """A running cloudhub on each database (a SQLite file, then PostgreSQL)."""
    hub = Hub(tmp_path / "hub", "--database", database_url)
    hub.start()
    try:
        yield hub
    finally:
        hub.kill()


def patch(hub: Hub, name: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"{hub.api}{DEVICES}/{name}",
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Content-Type": "application/merge-patch+json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, json.loads(resp.read())


def test_concurrent_patches_all_land_and_survive_a_kill(db_hub: Hub) -> None:
    """Many patches in flight at once, to the same objects: each is answered 200 with its
    own revision, none overwrites another, and all of them are there after kill -9."""
    names = [f"dev-{i}" for i in range(4)]
    for name in names:
        body = {"metadata": {"name": name}, "spec": {"nodeName": "edge-a"}}
        status, _ = db_hub.request("POST", DEVICES, body)
        assert status == 201
    calls = [(name, f"k{i}") for i in range(15) for name in names]

    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda c: patch(db_hub, c[0], {"metadata": {"labels": {c[1]: "v"}}}), calls)
        )
    assert all(status == 200 for status, _ in replies), replies
    revisions = sorted(int(body["metadata"]["resourceVersion"]) for _, body in replies)
    assert revisions == list(range(len(names) + 1, len(names) + len(calls) + 1))

    db_hub.restart(kill=True)  # SIGKILL: only what was committed survives
    for name in names:
        status, stored = db_hub.request("GET", f"{DEVICES}/{name}")
        assert status == 200
        assert stored["metadata"]["labels"] == {f"k{i}": "v" for i in range(15)}
    status, health = db_hub.request("GET", "/healthz")
    assert health["revision"] == revisions[-1]


def test_stale_patch_is_409_on_the_hub(db_hub: Hub) -> None:
    """Through the group writer a stale resourceVersion is still refused with 409 Conflict,
    a missing object with 404, and neither takes a revision."""
    status, created = db_hub.request(
        "POST", DEVICES, {"metadata": {"name": "dev-0"}, "spec": {"nodeName": "edge-a"}}
    )
    assert status == 201
    stale = created["metadata"]["resourceVersion"]
    assert patch(db_hub, "dev-0", {"spec": {"nodeName": "edge-b"}})[0] == 200
    status, body = db_hub.request(
        "PATCH",
        f"{DEVICES}/dev-0",
        {"metadata": {"resourceVersion": stale}, "spec": {"nodeName": "edge-c"}},
        "application/merge-patch+json",
    )
    assert (status, body["reason"]) == (409, "Conflict")
    status, body = db_hub.request(
        "PATCH", f"{DEVICES}/nobody", {"spec": {}}, "application/merge-patch+json"
    )
    assert (status, body["reason"]) == (404, "NotFound")
    status, stored = db_hub.request("GET", f"{DEVICES}/dev-0")
    assert stored["spec"]["nodeName"] == "edge-b"
    assert db_hub.request("GET", "/healthz")[1]["revision"] == 2
