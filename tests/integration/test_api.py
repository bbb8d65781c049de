"""The hub's REST API over a real store, on a SQLite file and on PostgreSQL.

Requests go through FastAPI's TestClient into ``cloudhub.api.create_app``;
the store underneath is real, so every refusal is checked against the
database: a refused request must leave the revision and every object as
they were.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cloudhub.api import MAX_BODY_BYTES, create_app
from cloudhub.groupwriter import GroupWriter
from cloudhub.nodes import NodeRegistry
from cloudhub.schema import node_leases, node_sync
from cloudhub.store import Store
from edgeward import storable
from edgeward.errors import NotFound
from edgeward.kinds import DEVICE, DEVICE_MODEL, NODE, SERVER_METADATA
from edgeward.protocol import TOPIC_NODE_STATUS, ReportItem

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
    from fastapi.testclient import TestClient

NS = "/api/v1/namespaces"
DEVICES = f"{NS}/default/devices"
MODELS = f"{NS}/default/devicemodels"
NODES = "/api/v1/nodes"

#: KubeEdge's v1beta1 DeviceModel sample, with fields Edgeward does not interpret.
KUBEEDGE_MODEL: dict[str, Any] = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "DeviceModel",
    "metadata": {"name": "beta1-model", "namespace": "default", "labels": {"vendor": "acme"}},
    "spec": {
        "protocol": "modbus",
        "properties": [
            {
                "name": "temp",
                "description": "beta1-model",
                "type": "INT",
                "accessMode": "ReadWrite",
                "maximum": "100",
                "minimum": "1",
                "unit": "Celsius",
            },
            {"name": "humidity", "type": "FLOAT", "accessMode": "ReadOnly", "unit": "%"},
        ],
    },
}

#: KubeEdge's v1beta1 Device sample: protocol, visitors, cycles and push method included.
KUBEEDGE_DEVICE: dict[str, Any] = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "Device",
    "metadata": {
        "name": "beta1-device",
        "namespace": "default",
        "labels": {"description": "TemperatureSensor", "model": "beta1-model"},
        "annotations": {"kubeedge.io/owner": "plant team 7"},
    },
    "spec": {
        "deviceModelRef": {"name": "beta1-model"},
        "nodeName": "worker-node1",
        "protocol": {
            "protocolName": "modbus",
            "configData": {
                "serialPort": "/dev/ttyS0",
                "baudRate": 9600,
                "dataBits": 8,
                "parity": "even",
                "stopBits": 1,
                "slaveID": 1,
            },
        },
        "properties": [
            {
                "name": "temp",
                "collectCycle": 10000000000,
                "reportCycle": 10000000000,
                "reportToCloud": True,
                "desired": {"value": "30"},
                "visitors": {
                    "protocolName": "modbus",
                    "configData": {
                        "register": "HoldingRegister",
                        "offset": 2,
                        "limit": 1,
                        "scale": 1.5,
                        "isSwap": True,
                        "isRegisterSwap": True,
                    },
                },
                "pushMethod": {
                    "mqtt": {
                        "address": "tcp://127.0.0.1:1883",
                        "topic": "temp",
                        "qos": 0,
                        "retained": False,
                    }
                },
            }
        ],
    },
}


@pytest.fixture(params=["alone", "group"])
def client(request: pytest.FixtureRequest, store: Store) -> Iterator[TestClient]:
    """The API app over ``store``: each write in a transaction of its own ("alone"), or
    through a running group writer ("group"), as the hub serves it."""
    if request.param == "alone":
        yield TestClient(create_app(store), raise_server_exceptions=False)
        return
    writer = GroupWriter(store)
    with TestClient(create_app(store, writer=writer), raise_server_exceptions=False) as client:
        running = client.portal.start_task_soon(writer.run)
        try:
            yield client
        finally:
            running.cancel()


def device(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"deviceModelRef": {"name": "beta1-model"}, **spec},
    }


def assert_status(resp: httpx.Response, code: int, reason: str | None = None) -> dict[str, Any]:
    """``resp`` is a Kubernetes Status error with HTTP status ``code``."""
    assert resp.status_code == code, f"{resp.status_code} {resp.text[:500]}"
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["kind"] == "Status", body
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"].strip()
    if reason is not None:
        assert body["reason"] == reason, body
    return body


def cause_fields(body: dict[str, Any]) -> set[str]:
    causes = body["details"]["causes"]
    assert causes and all(c["message"] for c in causes)
    return {c["field"] for c in causes}


def without_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in obj["metadata"].items() if k not in SERVER_METADATA}
    return out


def snapshot(store: Store) -> tuple[Any, ...]:
    """Everything a refused request must leave alone."""
    return (
        store.log_bounds(),
        store.list(DEVICE)[0],
        store.list(DEVICE_MODEL)[0],
        store.list(NODE)[0],
        store.changes_after(0, 100_000),
    )


def create(client: TestClient, path: str, obj: dict[str, Any]) -> dict[str, Any]:
    resp = client.post(path, json=obj)
    assert resp.status_code == 201, resp.text
    return resp.json()


# -- the happy paths ----------------------------------------------------------------


def test_healthz_reports_revision(client: TestClient) -> None:
    """/healthz answers ok with the current revision, for load balancers and operators."""
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"
    assert resp.json()["revision"] == 0
    create(client, DEVICES, device("thermo-1"))
    assert client.get("/healthz").json()["revision"] == 1


def test_kubeedge_manifests_apply_unchanged(client: TestClient, store: Store) -> None:
    """KubeEdge v1beta1 Device and DeviceModel manifests are stored exactly as written."""
    for path, manifest in ((MODELS, KUBEEDGE_MODEL), (DEVICES, KUBEEDGE_DEVICE)):
        sent = copy.deepcopy(manifest)
        created = create(client, path, sent)
        assert without_server_fields(created) == manifest
        assert created["status"] == {}
        meta = created["metadata"]
        assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
        assert meta["resourceVersion"] == str(store.head())
        got = client.get(f"{path}/{manifest['metadata']['name']}")
        assert got.status_code == 200
        assert got.json() == created
    # Re-applying the same manifest with PUT is not a change.
    head = store.head()
    resp = client.put(f"{DEVICES}/beta1-device", json=KUBEEDGE_DEVICE)
    assert resp.status_code == 200
    assert store.head() == head
    assert without_server_fields(resp.json()) == KUBEEDGE_DEVICE


def test_desired_value_outside_the_models_range_is_refused(
    client: TestClient, store: Store
) -> None:
    """A desired value below the model's minimum or above its maximum is a 422 naming the
    bound, and nothing is written; the bounds themselves are accepted."""
    create(client, MODELS, copy.deepcopy(KUBEEDGE_MODEL))  # temp: INT, 1..100
    for value, bound in (("101", "above the maximum 100"), ("0", "below the minimum 1")):
        sent = copy.deepcopy(KUBEEDGE_DEVICE)
        sent["spec"]["properties"][0]["desired"]["value"] = value
        head = store.head()
        causes = assert_status(client.post(DEVICES, json=sent), 422, "Invalid")["details"]
        assert causes["causes"] == [
            {
                "field": "spec.properties[0].desired.value",
                "message": f"{value} is {bound} of property temp",
            }
        ]
        assert store.head() == head
    for value in ("1", "100"):
        sent = copy.deepcopy(KUBEEDGE_DEVICE)
        sent["spec"]["properties"][0]["desired"]["value"] = value
        created = client.post(DEVICES, json=sent)
        assert created.status_code == 201, created.text
        assert client.delete(f"{DEVICES}/beta1-device").status_code == 200


KIND_PATHS = [
    pytest.param(DEVICES, device("thermo-1"), "DeviceList", id="devices"),
    pytest.param(MODELS, copy.deepcopy(KUBEEDGE_MODEL), "DeviceModelList", id="devicemodels"),
    pytest.param(NODES, {"metadata": {"name": "edge-1.plant.example"}}, "NodeList", id="nodes"),
]


@pytest.mark.parametrize(("coll", "obj", "list_kind"), KIND_PATHS)
def test_crud_on_every_path(
    client: TestClient, store: Store, coll: str, obj: dict[str, Any], list_kind: str
) -> None:
    """Every collection and item path answers GET, POST, PUT, PATCH and DELETE as documented."""
    name = obj["metadata"]["name"]
    item = f"{coll}/{name}"
    empty = client.get(coll)
    assert empty.status_code == 200
    assert empty.json() == {
        "apiVersion": "v1" if list_kind == "NodeList" else "devices.kubeedge.io/v1beta1",
        "kind": list_kind,
        "metadata": {"resourceVersion": "0"},
        "items": [],
    }
    assert_status(client.get(item), 404, "NotFound")

    resp = client.post(coll, json=obj)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["metadata"]["resourceVersion"] == "1"
    assert client.get(item).json()["metadata"]["uid"] == created["metadata"]["uid"]
    listed = client.get(coll).json()
    assert listed["metadata"]["resourceVersion"] == "1"
    assert [o["metadata"]["name"] for o in listed["items"]] == [name]

    replacement = copy.deepcopy(created)
    replacement["metadata"]["labels"] = {"tier": "gold"}
    resp = client.put(item, json=replacement)
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"]["labels"] == {"tier": "gold"}
    assert resp.json()["metadata"]["resourceVersion"] == "2"
    assert resp.json()["metadata"]["uid"] == created["metadata"]["uid"]

    resp = client.patch(item, json={"metadata": {"labels": {"zone": "z1"}}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"]["labels"] == {"tier": "gold", "zone": "z1"}
    assert resp.json()["metadata"]["resourceVersion"] == "3"
    assert client.get(item).json() == resp.json()

    resp = client.delete(item)
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"]["resourceVersion"] == "4"
    assert resp.json()["metadata"]["labels"] == {"tier": "gold", "zone": "z1"}
    assert_status(client.get(item), 404, "NotFound")
    assert_status(client.delete(item), 404, "NotFound")
    assert client.get(coll).json()["items"] == []
    assert client.get(coll).json()["metadata"]["resourceVersion"] == "4"
    assert store.head() == 4


def test_lists_by_namespace_and_across_namespaces(client: TestClient, store: Store) -> None:
    """Namespaced lists hold one namespace; /api/v1/devices holds every namespace, in order."""
    create(client, f"{NS}/plant-2/devices", device("b", namespace="plant-2"))
    create(client, DEVICES, device("z"))
    create(client, f"{NS}/plant-1/devices", {"metadata": {"name": "a"}})  # namespace from URL
    create(client, MODELS, copy.deepcopy(KUBEEDGE_MODEL))
    head = str(store.head())

    def names(path: str) -> list[tuple[str, str]]:
        resp = client.get(path)
        assert resp.status_code == 200
        body = resp.json()
        assert body["metadata"]["resourceVersion"] == head
        return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in body["items"]]

    assert names(DEVICES) == [("default", "z")]
    assert names(f"{NS}/plant-1/devices") == [("plant-1", "a")]
    assert names(f"{NS}/nowhere/devices") == []
    assert names("/api/v1/devices") == [("default", "z"), ("plant-1", "a"), ("plant-2", "b")]
    assert names("/api/v1/devicemodels") == [("default", "beta1-model")]
    body = client.get("/api/v1/devices").json()
    assert body["kind"] == "DeviceList"
    assert all(o["kind"] == "Device" for o in body["items"])
    # The same name may live in two namespaces.
    create(client, f"{NS}/plant-2/devices", {"metadata": {"name": "z"}})
    assert client.get(f"{NS}/plant-2/devices/z").json()["metadata"]["namespace"] == "plant-2"


def test_nodes_are_cluster_scoped(client: TestClient, store: Store) -> None:
    """Nodes live outside namespaces: no namespaced path, and a namespace in the body is ignored."""
    created = create(client, NODES, {"metadata": {"name": "edge-1", "namespace": "default"}})
    assert "namespace" not in created["metadata"]
    assert created["apiVersion"] == "v1" and created["kind"] == "Node"
    assert_status(client.get(f"{NS}/default/nodes"), 404)
    assert_status(client.get(f"{NS}/default/nodes/edge-1"), 404)
    assert_status(client.post(f"{NS}/default/nodes", json={"metadata": {"name": "n"}}), 404)
    assert_status(client.post(NODES, json={"metadata": {"name": "edge-1"}}), 409, "AlreadyExists")
    assert client.get(f"{NODES}/edge-1").json()["metadata"]["uid"] == created["metadata"]["uid"]
    assert store.head() == 1


# -- refusals with a Kubernetes reason -----------------------------------------------


def test_create_of_a_taken_name_is_409_already_exists(client: TestClient, store: Store) -> None:
    """Creating an object whose name is taken fails with 409 AlreadyExists and changes nothing."""
    create(client, DEVICES, device("thermo-1", nodeName="edge-a"))
    before = snapshot(store)
    body = assert_status(
        client.post(DEVICES, json=device("thermo-1", nodeName="edge-b")), 409, "AlreadyExists"
    )
    assert "thermo-1" in body["message"]
    assert snapshot(store) == before


def test_stale_resource_version_is_409_conflict(client: TestClient, store: Store) -> None:
    """PUT, PATCH and DELETE carrying an old resourceVersion get 409 Conflict and change nothing."""
    v1 = create(client, DEVICES, device("thermo-1", nodeName="edge-a"))
    v2 = client.put(f"{DEVICES}/thermo-1", json=device("thermo-1", nodeName="edge-b")).json()
    assert v2["metadata"]["resourceVersion"] == "2"
    stale = v1["metadata"]["resourceVersion"]
    before = snapshot(store)

    put = device("thermo-1", nodeName="edge-c")
    put["metadata"]["resourceVersion"] = stale
    assert_status(client.put(f"{DEVICES}/thermo-1", json=put), 409, "Conflict")
    put["metadata"]["resourceVersion"] = "99"  # from the future
    assert_status(client.put(f"{DEVICES}/thermo-1", json=put), 409, "Conflict")
    patch = {"metadata": {"resourceVersion": stale}, "spec": {"nodeName": "edge-c"}}
    assert_status(client.patch(f"{DEVICES}/thermo-1", json=patch), 409, "Conflict")
    resp = client.delete(f"{DEVICES}/thermo-1", params={"resourceVersion": stale})
    assert_status(resp, 409, "Conflict")
    assert snapshot(store) == before

    # With the current resourceVersion each of them works.
    put["metadata"]["resourceVersion"] = "2"
    assert client.put(f"{DEVICES}/thermo-1", json=put).status_code == 200
    patch["metadata"]["resourceVersion"] = "3"
    patch["spec"]["nodeName"] = "edge-d"
    assert client.patch(f"{DEVICES}/thermo-1", json=patch).status_code == 200
    resp = client.delete(f"{DEVICES}/thermo-1", params={"resourceVersion": "4"})
    assert resp.status_code == 200
    assert store.head() == 5


def test_resource_version_zero_is_a_precondition_everywhere(
    client: TestClient, store: Store
) -> None:
    """resourceVersion "0" matches no object, so PATCH refuses it just as PUT and DELETE do."""
    create(client, DEVICES, device("thermo-1", nodeName="edge-a"))
    before = snapshot(store)
    put = device("thermo-1", nodeName="edge-b")
    put["metadata"]["resourceVersion"] = "0"
    assert_status(client.put(f"{DEVICES}/thermo-1", json=put), 409, "Conflict")
    resp = client.delete(f"{DEVICES}/thermo-1", params={"resourceVersion": "0"})
    assert_status(resp, 409, "Conflict")
    patch = {"metadata": {"resourceVersion": "0"}, "spec": {"nodeName": "edge-b"}}
    assert_status(client.patch(f"{DEVICES}/thermo-1", json=patch), 409, "Conflict")
    assert snapshot(store) == before


def test_not_found_is_a_404_status(client: TestClient, store: Store) -> None:
    """Unknown objects, paths and resource types all get a 404 Status, never an HTML page."""
    create(client, DEVICES, device("thermo-1"))
    before = snapshot(store)
    for coll, name in (
        (DEVICES, "ghost"),
        (MODELS, "ghost"),
        (NODES, "ghost"),
        (f"{NS}/plant-9/devices", "thermo-1"),
    ):
        path = f"{coll}/{name}"
        assert_status(client.get(path), 404, "NotFound")
        assert_status(client.put(path, json={"metadata": {"name": name}}), 404, "NotFound")
        assert_status(client.patch(path, json={"metadata": {"labels": {}}}), 404, "NotFound")
        assert_status(client.delete(path), 404, "NotFound")
    long_name = f"{DEVICES}/" + "a" * 5000
    assert_status(client.get(long_name), 404, "NotFound")
    assert_status(client.patch(long_name, json={}), 404, "NotFound")
    assert_status(client.delete(long_name), 404, "NotFound")
    for path in (  # "/" is the web console (tests/integration/test_console_pages.py)
        "/api",
        "/api/v1",
        "/api/v2/nodes",
        f"{DEVICES}/thermo-1/status/extra",
        f"{NS}/default/widgets",
        f"{NS}/default/widgets/w1",
        "/api/v1/widgets",
        f"{NS}/default/pods",
    ):
        assert_status(client.get(path), 404, "NotFound")
        assert_status(client.post(path, json={"metadata": {"name": "w1"}}), 404, "NotFound")
        assert_status(client.delete(path), 404, "NotFound")
    assert snapshot(store) == before


def test_wrong_method_is_a_405_status(client: TestClient, store: Store) -> None:
    """A method a path does not serve gets 405 as a Status object."""
    before = snapshot(store)
    assert_status(client.post("/api/v1/devices", json=device("x")), 405, "MethodNotAllowed")
    assert_status(client.delete(DEVICES), 405, "MethodNotAllowed")
    assert_status(client.put(NODES, json={"metadata": {"name": "n"}}), 405, "MethodNotAllowed")
    assert_status(client.post("/healthz"), 405, "MethodNotAllowed")
    assert snapshot(store) == before


def test_watch_without_a_change_feed_is_501(client: TestClient) -> None:
    """An app built without a change feed says plainly that it serves no watches."""
    assert_status(client.get(f"{DEVICES}?watch=1"), 501, "NotImplemented")
    assert client.get(f"{DEVICES}?watch=0").status_code == 200


def test_invalid_objects_are_422_with_causes(client: TestClient, store: Store) -> None:
    """Invalid objects get 422 naming every bad field, and nothing is written."""
    create(client, DEVICES, device("thermo-1"))
    create(client, MODELS, copy.deepcopy(KUBEEDGE_MODEL))
    before = snapshot(store)
    bad_model = copy.deepcopy(KUBEEDGE_MODEL)
    bad_model["metadata"]["name"] = "model-2"
    bad_model["spec"]["properties"][0]["type"] = "COLOUR"
    bad_model["spec"]["properties"][1]["accessMode"] = "WriteOnly"
    bad_model["spec"]["properties"].append({"name": "temp"})
    wrong_ns = device("thermo-1", namespace="plant-9")
    cases: list[tuple[str, str, Any, set[str]]] = [
        ("POST", DEVICES, device("Thermo_1"), {"metadata.name"}),
        ("POST", DEVICES, device("a" * 64), {"metadata.name"}),
        ("POST", DEVICES, {"metadata": {}}, {"metadata.name"}),
        ("POST", DEVICES, device("ok", nodeName="Edge A"), {"spec.nodeName"}),
        (
            "POST",
            DEVICES,
            device("ok", properties=[{"name": "temp", "desired": {"value": "hello world"}}]),
            {"spec.properties[0].desired.value"},
        ),
        (
            "POST",
            DEVICES,
            device("ok", properties=[{"name": "t e m p"}, {"desired": {}}]),
            {"spec.properties[0].name", "spec.properties[1].name"},
        ),
        (
            "POST",
            MODELS,
            bad_model,
            {
                "spec.properties[0].type",
                "spec.properties[1].accessMode",
                "spec.properties[2].name",
            },
        ),
        ("POST", DEVICES, {**device("ok"), "kind": "Pod"}, {"kind"}),
        ("POST", DEVICES, {**device("ok"), "apiVersion": "v1"}, {"apiVersion"}),
        ("POST", DEVICES, wrong_ns, {"metadata.namespace"}),
        ("POST", f"{NS}/Plant_9/devices", {"metadata": {"name": "ok"}}, {"metadata.namespace"}),
        ("PUT", f"{DEVICES}/thermo-1", wrong_ns, {"metadata.namespace"}),
        ("PUT", f"{DEVICES}/thermo-1", device("thermo-2"), {"metadata.name"}),
        ("PATCH", f"{DEVICES}/thermo-1", {"metadata": {"name": "thermo-2"}}, {"metadata.name"}),
        (
            "PATCH",
            f"{DEVICES}/thermo-1",
            {"metadata": {"namespace": "plant-9"}},
            {"metadata.namespace"},
        ),
        ("PATCH", f"{DEVICES}/thermo-1", {"spec": {"nodeName": "-bad-"}}, {"spec.nodeName"}),
        (
            "PATCH",
            f"{MODELS}/beta1-model",
            {"spec": {"properties": [{"name": "temp", "type": "COLOUR"}]}},
            {"spec.properties[0].type"},
        ),
        ("PATCH", f"{DEVICES}/thermo-1", {"metadata": None}, {"metadata"}),
    ]
    failures = []
    for method, path, obj, fields in cases:
        resp = client.request(method, path, json=obj)
        try:
            body = assert_status(resp, 422, "Invalid")
            assert fields <= cause_fields(body), cause_fields(body)
        except AssertionError as exc:
            failures.append(f"{method} {path} {json.dumps(obj)[:120]}: {exc}")
    assert not failures, "\n".join(failures)
    assert snapshot(store) == before


def test_merge_patch_semantics(client: TestClient, store: Store) -> None:
    """PATCH merges objects key by key, null deletes, lists replace, and status is not patchable."""
    obj = copy.deepcopy(KUBEEDGE_DEVICE)
    obj["metadata"]["labels"] = {"site": "north", "tier": "gold"}
    create(client, DEVICES, obj)
    item = f"{DEVICES}/beta1-device"
    resp = client.patch(
        item,
        json={"metadata": {"labels": {"tier": None, "zone": "z1"}}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert resp.status_code == 200, resp.text
    patched = resp.json()
    assert patched["metadata"]["labels"] == {"site": "north", "zone": "z1"}
    assert patched["spec"] == KUBEEDGE_DEVICE["spec"]
    assert patched["metadata"]["resourceVersion"] == "2"

    resp = client.patch(item, json={"spec": {"nodeName": None, "protocol": {"protocolName": "x"}}})
    assert resp.status_code == 200, resp.text
    spec = resp.json()["spec"]
    assert "nodeName" not in spec
    assert spec["protocol"] == {
        "protocolName": "x",
        "configData": KUBEEDGE_DEVICE["spec"]["protocol"]["configData"],
    }

    resp = client.patch(item, json={"spec": {"properties": [{"name": "hum"}]}})
    assert resp.json()["spec"]["properties"] == [{"name": "hum"}]
    head = store.head()

    # Status belongs to the hub and the edge; server metadata belongs to the store.
    resp = client.patch(
        item, json={"status": {"twins": [{"propertyName": "hum"}]}, "metadata": {"uid": "forged"}}
    )
    assert resp.status_code == 200
    assert resp.json()["status"] == {}
    assert resp.json()["metadata"]["uid"] == patched["metadata"]["uid"]
    assert store.head() == head
    # An empty patch changes nothing.
    assert client.patch(item, json={}).json()["metadata"]["resourceVersion"] == str(head)
    assert store.head() == head


def test_concurrent_patches_to_different_fields_all_land(client: TestClient, store: Store) -> None:
    """Merge patches sent at the same time without a resourceVersion each read and write in
    one transaction: every one succeeds, none is lost, and each takes its own revision."""
    created = create(client, DEVICES, device("thermo-1", nodeName="edge-a"))
    n = 12

    def patch(i: int) -> httpx.Response:
        return client.patch(
            f"{DEVICES}/thermo-1",
            json={"metadata": {"labels": {f"k{i}": f"v{i}"}}},
            headers={"content-type": "application/merge-patch+json"},
        )

    with ThreadPoolExecutor(n) as pool:
        replies = list(pool.map(patch, range(n)))
    assert [r.status_code for r in replies] == [200] * n, [r.text for r in replies]
    revisions = sorted(int(r.json()["metadata"]["resourceVersion"]) for r in replies)
    first = int(created["metadata"]["resourceVersion"])
    assert revisions == list(range(first + 1, first + n + 1))
    stored = client.get(f"{DEVICES}/thermo-1").json()
    assert stored["metadata"]["labels"] == {f"k{i}": f"v{i}" for i in range(n)}
    assert stored["spec"]["nodeName"] == "edge-a"
    assert store.head() == first + n
    # every reply showed the labels of the patches committed before it, and its own
    for reply in replies:
        body = reply.json()
        rv = int(body["metadata"]["resourceVersion"])
        assert len(body["metadata"]["labels"]) == rv - first


def test_concurrent_patches_with_one_resource_version_let_exactly_one_win(
    client: TestClient, store: Store
) -> None:
    """Patches carrying the same resourceVersion, sent together: exactly one is written, the
    others get 409 Conflict; a bad value (422) and a missing object (404) sent in the same
    burst are refused alone and leave the rest untouched."""
    create(client, MODELS, copy.deepcopy(KUBEEDGE_MODEL))
    created = create(client, DEVICES, copy.deepcopy(KUBEEDGE_DEVICE))
    rv = created["metadata"]["resourceVersion"]
    item = f"{DEVICES}/beta1-device"
    n = 8
    bad_value = {"spec": {"properties": [{"name": "temp", "desired": {"value": "warm"}}]}}
    requests: list[tuple[str, dict[str, Any]]] = [
        (item, {"metadata": {"resourceVersion": rv, "labels": {"winner": str(i)}}})
        for i in range(n)
    ]
    requests += [(item, bad_value), (f"{DEVICES}/no-such-device", {"spec": {"nodeName": "x"}})]

    with ThreadPoolExecutor(len(requests)) as pool:
        replies = list(pool.map(lambda r: client.patch(r[0], json=r[1]), requests))
    codes = [r.status_code for r in replies[:n]]
    assert sorted(codes) == [200] + [409] * (n - 1), [r.text for r in replies]
    for reply in replies[:n]:
        if reply.status_code == 409:
            assert_status(reply, 409, "Conflict")
    body = assert_status(replies[n], 422, "Invalid")
    assert cause_fields(body) == {"spec.properties[0].desired.value"}
    assert_status(replies[n + 1], 404, "NotFound")
    winner = next(r.json() for r in replies[:n] if r.status_code == 200)
    assert winner["metadata"]["resourceVersion"] == str(int(rv) + 1)
    assert client.get(item).json() == winner
    assert store.head() == int(rv) + 1
    assert [c.revision for c in store.changes_after(0)] == list(range(1, int(rv) + 2))


def test_json_patch_is_415(client: TestClient, store: Store) -> None:
    """PATCH bodies other than JSON merge patches get 415 and change nothing."""
    create(client, DEVICES, device("thermo-1"))
    before = snapshot(store)
    ops = json.dumps([{"op": "replace", "path": "/spec/nodeName", "value": "edge-b"}])
    for ctype in (
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
        "text/plain",
    ):
        resp = client.patch(f"{DEVICES}/thermo-1", content=ops, headers={"content-type": ctype})
        body = assert_status(resp, 415, "UnsupportedMediaType")
        assert "merge-patch" in body["message"]
    assert snapshot(store) == before


def test_openapi_lists_the_paths(client: TestClient) -> None:
    """/openapi.json documents every resource path and method, for API clients and the docs page."""
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    paths = resp.json()["paths"]
    for plural in ("devices", "devicemodels"):
        assert set(paths[f"{NS}/{{namespace}}/{plural}"]) == {"get", "post"}
        assert set(paths[f"{NS}/{{namespace}}/{plural}/{{name}}"]) == {
            "get",
            "put",
            "patch",
            "delete",
        }
        assert set(paths[f"/api/v1/{plural}"]) == {"get"}
    assert set(paths[NODES]) == {"get", "post"}
    assert set(paths[f"{NODES}/{{name}}"]) == {"get", "put", "patch", "delete"}
    assert "get" in paths["/healthz"]
    assert not any("/namespaces/{namespace}/nodes" in p for p in paths)


# -- hostile and malformed input -------------------------------------------------------


def refusals(
    client: TestClient,
    store: Store,
    cases: list[tuple[str, str, str, bytes, set[int]]],
    content_type: str = "application/json",
) -> list[str]:
    """Send each (label, method, path, body, allowed codes); return what went wrong."""
    failures = []
    for label, method, path, raw, codes in cases:
        before = snapshot(store)
        resp = client.request(method, path, content=raw, headers={"content-type": content_type})
        try:
            assert resp.status_code in codes, f"got {resp.status_code}, want one of {codes}"
            assert_status(resp, resp.status_code)
        except AssertionError as exc:
            failures.append(f"{label} ({method} {path}): {exc}; body {resp.text[:200]!r}")
        if snapshot(store) != before:
            failures.append(f"{label} ({method} {path}): the store changed")
    return failures


@pytest.fixture
def target(client: TestClient) -> dict[str, Any]:
    """An existing device the hostile PUT and PATCH requests aim at."""
    return create(client, DEVICES, copy.deepcopy(KUBEEDGE_DEVICE))


ITEM = f"{DEVICES}/beta1-device"
WRITES = (("POST", DEVICES), ("PUT", ITEM), ("PATCH", ITEM))


def test_unparseable_bodies_are_400(client: TestClient, store: Store, target: Any) -> None:
    """Bodies that are not JSON text get 400 BadRequest and leave the store alone."""
    bodies = {
        "empty body": b"",
        "blank body": b" \r\n\t ",
        "not JSON": b"hello, hub",
        "truncated JSON": b'{"metadata": {"name": "beta1-device"',
        "trailing garbage": b'{"metadata": {"name": "beta1-device"}} x',
        "single quotes": b"{'metadata': {'name': 'beta1-device'}}",
        "invalid UTF-8": b'{"metadata": {"name": "beta1-device", "labels": {"a": "\xff\xfe"}}}',
        "Latin-1 text": b'{"metadata": {"name": "caf\xe9"}}',
        "deeply nested arrays": b"[" * 50000,
        "deeply nested objects": b'{"a":' * 50000,
        "deeply nested and closed": b"[" * 20000 + b"]" * 20000,
        "huge integer": b'{"metadata": {"name": "beta1-device"}, "spec": {"n": '
        + b"9" * 5000
        + b"}}",
    }
    cases = [
        (label, method, path, raw, {400})
        for label, raw in bodies.items()
        for method, path in WRITES
    ]
    failures = refusals(client, store, cases)
    assert not failures, "\n".join(failures)


def test_json_that_is_not_an_object_is_refused(
    client: TestClient, store: Store, target: Any
) -> None:
    """JSON arrays, numbers, strings, booleans and null are refused with a 4xx Status."""
    bodies = {
        "array": b"[]",
        "array of objects": json.dumps([KUBEEDGE_DEVICE]).encode(),
        "number": b"42",
        "float": b"-1.5e3",
        "string": b'"beta1-device"',
        "true": b"true",
        "null": b"null",
    }
    cases = [
        (label, method, path, raw, {400, 422})
        for label, raw in bodies.items()
        for method, path in WRITES
    ]
    failures = refusals(client, store, cases)
    assert not failures, "\n".join(failures)


def test_oversized_bodies_are_refused(client: TestClient, store: Store, target: Any) -> None:
    """A 2 MB body gets 413 and a 1000-property device with huge strings gets 422."""
    big = json.dumps(
        {"metadata": {"name": "beta1-device"}, "spec": {"blob": "x" * (2 * 1024 * 1024)}}
    ).encode()
    garbage = b"\x00\xff" * (1024 * 1024)
    props = [{"name": f"p{i}-" + "n" * 200, "desired": {"value": "v" * 600}} for i in range(1000)]
    many = json.dumps(device("beta1-device", properties=props)).encode()
    assert len(many) < MAX_BODY_BYTES
    cases = [(f"2 MB JSON {m}", m, p, big, {413}) for m, p in WRITES]
    cases += [(f"2 MB garbage {m}", m, p, garbage, {413}) for m, p in WRITES]
    cases += [(f"1000 huge properties {m}", m, p, many, {422}) for m, p in WRITES]
    failures = refusals(client, store, cases)
    assert not failures, "\n".join(failures)
    resp = client.post(DEVICES, content=big)
    assert assert_status(resp, 413)["reason"] == "RequestEntityTooLarge"
    resp = client.put(ITEM, content=many)
    causes = assert_status(resp, 422, "Invalid")["details"]["causes"]
    assert len(causes) == 2000


def test_malformed_objects_are_422(client: TestClient, store: Store, target: Any) -> None:
    """Objects of the wrong shape (metadata, spec, labels) get 422 with causes."""
    shapes: dict[str, tuple[dict[str, Any], str]] = {
        "metadata a string": ({"metadata": "beta1-device"}, "metadata"),
        "metadata a list": ({"metadata": ["beta1-device"]}, "metadata"),
        "metadata missing": ({"spec": {}}, "metadata"),
        "spec a list": ({"metadata": {"name": "beta1-device"}, "spec": [1, 2]}, "spec"),
        "spec a string": ({"metadata": {"name": "beta1-device"}, "spec": "on"}, "spec"),
        "properties an object": (
            {"metadata": {"name": "beta1-device"}, "spec": {"properties": {"temp": 1}}},
            "spec.properties",
        ),
        "property a string": (
            {"metadata": {"name": "beta1-device"}, "spec": {"properties": ["temp"]}},
            "spec.properties[0]",
        ),
        "desired a string": (
            {
                "metadata": {"name": "beta1-device"},
                "spec": {"properties": [{"name": "temp", "desired": "30"}]},
            },
            "spec.properties[0].desired",
        ),
        "desired value an object": (
            {
                "metadata": {"name": "beta1-device"},
                "spec": {"properties": [{"name": "temp", "desired": {"value": {"a": 1}}}]},
            },
            "spec.properties[0].desired.value",
        ),
        "deviceModelRef a string": (
            {"metadata": {"name": "beta1-device"}, "spec": {"deviceModelRef": "m"}},
            "spec.deviceModelRef",
        ),
        "labels with a number": (
            {"metadata": {"name": "beta1-device", "labels": {"floor": 3}}},
            "metadata.labels.floor",
        ),
        "labels with null": (
            {"metadata": {"name": "beta1-device", "labels": {"floor": None, "a": "b"}}},
            "metadata.labels.floor",
        ),
        "labels with an object": (
            {"metadata": {"name": "beta1-device", "labels": {"floor": {"n": "3"}}}},
            "metadata.labels.floor",
        ),
        "labels a list": (
            {"metadata": {"name": "beta1-device", "labels": ["a=b"]}},
            "metadata.labels",
        ),
        "label value with spaces": (
            {"metadata": {"name": "beta1-device", "labels": {"site": "north wing"}}},
            "metadata.labels.site",
        ),
        "annotations with a number": (
            {"metadata": {"name": "beta1-device", "annotations": {"a": 1}}},
            "metadata.annotations.a",
        ),
        "name a number": ({"metadata": {"name": 7}}, "metadata.name"),
    }
    failures = []
    for label, (obj, field) in shapes.items():
        for method, path in (("POST", DEVICES), ("PUT", ITEM)):
            before = snapshot(store)
            resp = client.request(method, path, json=obj)
            try:
                body = assert_status(resp, 422, "Invalid")
                assert field in cause_fields(body), cause_fields(body)
            except AssertionError as exc:
                failures.append(f"{label} ({method}): {exc}")
            if snapshot(store) != before:
                failures.append(f"{label} ({method}): the store changed")
    assert not failures, "\n".join(failures)


def test_bad_resource_versions_are_refused(client: TestClient, store: Store, target: Any) -> None:
    """A resourceVersion that is not a non-negative integer gets a 4xx, never a write."""
    body_values: list[Any] = ["abc", -1, "-1", 1e309, "1e309", 1.5, True, "٣", "9" * 20, [], {}]
    cases = []
    for value in body_values:
        put = copy.deepcopy(KUBEEDGE_DEVICE)
        put["metadata"]["resourceVersion"] = value
        patch = {"metadata": {"resourceVersion": value, "labels": {"x": "y"}}}
        raw_put = json.dumps(put).encode()  # 1e309 is written as Infinity: not JSON
        if value == 1e309:
            raw_put = raw_put.replace(b"Infinity", b"1e309")
        raw_patch = json.dumps(patch).encode().replace(b"Infinity", b"1e309")
        # 1e309 as a bare number is not a finite JSON number: refusing the body (400) is fine.
        codes = {400, 422} if value == 1e309 else {422}
        cases.append((f"PUT resourceVersion {value!r}", "PUT", ITEM, raw_put, codes))
        cases.append((f"PATCH resourceVersion {value!r}", "PATCH", ITEM, raw_patch, codes))
    for value in ("abc", "-1", "1e309", "1.5", "0x10", " 3", "9" * 20):
        path = f"{ITEM}?resourceVersion={value}"
        cases.append((f"DELETE ?resourceVersion={value}", "DELETE", path, b"", {400}))
    failures = refusals(client, store, cases)
    assert not failures, "\n".join(failures)
    resp = client.delete(f"{ITEM}?resourceVersion=abc")
    assert "resourceVersion" in assert_status(resp, 400, "BadRequest")["message"]
    put = copy.deepcopy(KUBEEDGE_DEVICE)
    put["metadata"]["resourceVersion"] = "abc"
    resp = client.put(ITEM, json=put)
    assert cause_fields(assert_status(resp, 422, "Invalid")) == {"metadata.resourceVersion"}


def test_non_json_numbers_are_refused(client: TestClient, store: Store, target: Any) -> None:
    """NaN and Infinity are not JSON: they get 400 and are never stored."""
    cases = []
    for i, token in enumerate((b"NaN", b"Infinity", b"-Infinity")):
        for method, path in WRITES:
            name = b"fresh-%d" % i if method == "POST" else b"beta1-device"
            raw = b'{"metadata": {"name": "%s"}, "spec": {"protocol": {"scale": %s}}}' % (
                name,
                token,
            )
            cases.append((f"{token.decode()} in spec", method, path, raw, {400}))
    failures = refusals(client, store, cases)
    assert not failures, "\n".join(failures)


def _nested(name: str, depth: int) -> bytes:
    return b'{"metadata": {"name": "%s"}, "spec": {"x": %s%s}}' % (
        name.encode(),
        b"[" * depth,
        b"]" * depth,
    )


ODD_BUT_PARSEABLE = {
    "lone surrogate escape": b'{"metadata": {"name": "odd-1"}, "spec": {"note": "\\ud800"}}',
    "nesting 300 deep": _nested("odd-2", 300),
    "nesting 900 deep": _nested("odd-3", 900),
}


@pytest.mark.parametrize("raw", ODD_BUT_PARSEABLE.values(), ids=ODD_BUT_PARSEABLE.keys())
def test_whatever_is_accepted_can_be_read_back(
    client: TestClient, store: Store, raw: bytes
) -> None:
    """A body the API accepts never breaks later reads; one it cannot serve is refused unwritten."""
    before = snapshot(store)
    resp = client.post(DEVICES, content=raw)
    if resp.status_code == 201:
        name = resp.json()["metadata"]["name"]
        assert client.get(f"{DEVICES}/{name}").status_code == 200
        assert client.get(DEVICES).status_code == 200
        assert client.get("/api/v1/devices").status_code == 200
    else:
        assert 400 <= resp.status_code < 500, f"{resp.status_code} {resp.text[:300]}"
        assert_status(resp, resp.status_code)
        assert snapshot(store) == before


def test_lone_surrogates_in_bodies_are_400(client: TestClient, store: Store, target: Any) -> None:
    """A body holding a lone surrogate (valid JSON, not storable text) gets 400 on every write
    path and is never stored, so it can never break a later read."""
    bodies = {
        "in a label value": b'{"metadata": {"name": "beta1-device", "labels": {"a": "\\ud800"}}}',
        "in a label key": b'{"metadata": {"name": "beta1-device", "labels": {"\\udfff": "a"}}}',
        "in the spec": b'{"metadata": {"name": "beta1-device"}, "spec": {"note": "x\\ud800y"}}',
    }
    cases = [
        (label, method, path, raw, {400})
        for label, raw in bodies.items()
        for method, path in WRITES
    ]
    failures = refusals(client, store, cases)
    assert not failures, "\n".join(failures)
    assert client.get(DEVICES).status_code == 200


def test_a_patch_cannot_grow_an_object_past_the_spec_limit(
    client: TestClient, store: Store
) -> None:
    """Merge patches each under the body limit cannot together grow a stored object past
    MAX_SPEC_BYTES: the one that would is refused with 422 and changes nothing."""
    half = storable.MAX_SPEC_BYTES // 2
    create(client, DEVICES, device("big", note="a" * half))
    assert client.patch(f"{DEVICES}/big", json={"spec": {"more": "b" * (half - 2000)}}).is_success
    before = snapshot(store)
    resp = client.patch(f"{DEVICES}/big", json={"spec": {"evenMore": "c" * 4000}})
    body = assert_status(resp, 422, "Invalid")
    assert str(storable.MAX_SPEC_BYTES) in body["message"]
    assert snapshot(store) == before


@pytest.mark.parametrize(("path", "kind"), [(DEVICES, "Device"), (MODELS, "DeviceModel")])
def test_more_twin_properties_than_an_edge_keeps_are_422(
    client: TestClient, store: Store, path: str, kind: str
) -> None:
    """A Device or DeviceModel with more than MAX_TWINS properties is refused with 422, so the
    hub never accepts a device whose twin reports it would then drop."""

    def manifest(name: str, count: int) -> dict[str, Any]:
        props = [{"name": f"p{i}", "type": "INT"} for i in range(count)]
        return {"kind": kind, "metadata": {"name": name}, "spec": {"properties": props}}

    before = snapshot(store)
    resp = client.post(path, json=manifest("too-many", storable.MAX_TWINS + 1))
    assert cause_fields(assert_status(resp, 422, "Invalid")) == {"spec.properties"}
    assert snapshot(store) == before
    create(client, path, manifest("just-enough", storable.MAX_TWINS))


def test_a_spec_may_not_take_a_device_past_the_twins_its_edge_keeps(
    client: TestClient, store: Store
) -> None:
    """With the twins a mapper created on the edge (as the edge reports them), a Device's spec
    may not take it past MAX_TWINS: the edge would apply it, refuse every later update and
    report nothing more for the device. Properties it already reports are not counted twice."""
    half = storable.MAX_TWINS // 2
    props = [{"name": f"p{i}"} for i in range(half)]
    create(client, DEVICES, device("busy", properties=props))
    twins = [{"propertyName": f"m{i}"} for i in range(half)]
    twins += [{"propertyName": "p0"}]
    with store.writing() as tx:
        current = tx.get(DEVICE, "default", "busy")
        tx.replace_status(DEVICE, "default", "busy", {"twins": twins}, current=current)
    before = snapshot(store)
    more = [*props, {"name": "extra-1"}]
    resp = client.patch(f"{DEVICES}/busy", json={"spec": {"properties": more}})
    body = assert_status(resp, 422, "Invalid")
    assert f"the device would have {storable.MAX_TWINS + 1}" in body["message"]
    assert snapshot(store) == before
    assert client.patch(f"{DEVICES}/busy", json={"spec": {"properties": props}}).is_success


def test_deleting_a_node_clears_its_positions_and_calls_the_hook(store: Store) -> None:
    """DELETE of a Node drops its report seq, acked revision and lease in its transaction, then
    calls on_node_deleted; the node registering again starts from seq 0."""
    registry = NodeRegistry(store, grace_period=40)
    registry.register("edge-a", {})
    registry.register("edge-b", {})
    status_row = ReportItem(7, TOPIC_NODE_STATUS, "node-status", {"usage": {"cpu": 1.0}})
    assert registry.record_reports("edge-a", (status_row,), 3).high == 7
    assert registry.flush() == 1
    seen: list[tuple[str, list[str]]] = []

    def on_node_deleted(name: str) -> None:
        registry.forget(name)
        with store.engine.connect() as conn:  # committed already: another connection sees it
            seen.append((name, conn.execute(select(node_sync.c.node)).scalars().all()))

    writer = GroupWriter(store)
    app = create_app(store, writer=writer, on_node_deleted=on_node_deleted)
    with TestClient(app, raise_server_exceptions=False) as client:
        running = client.portal.start_task_soon(writer.run)
        try:
            assert client.delete(f"{NODES}/edge-a").status_code == 200
            assert client.delete(f"{NS}/default/devices/nothing").status_code == 404
        finally:
            running.cancel()
    assert seen == [("edge-a", ["edge-b"])]
    with store.engine.connect() as conn:
        assert conn.execute(select(node_leases.c.node)).scalars().all() == ["edge-b"]
    assert registry.leases.get("edge-a") is None
    with pytest.raises(NotFound):  # a session still open for it must say hello again
        registry.record_reports("edge-a", (dataclasses.replace(status_row, seq=8),), 3)
    assert registry.register("edge-a", {}) == 0
    assert store.get(NODE, None, "edge-a")["status"]["sync"] == {
        "ackedRevision": 0,
        "reportSeq": 0,
    }
