"""The REST API of a real secure cloudhub against generated requests, operation by operation.

The operations come from the running hub's own OpenAPI document. For each, Hypothesis
generates path parameters, query strings and bodies (JSON shaped like our objects,
token and join requests, any JSON, and bytes that are not JSON) and the same request is
sent with no credentials, a viewer token, a node token and the admin token. No answer
may be a server error, every refusal is a Kubernetes Status with its code, the public
paths are the only ones served without a token, the roles hold (a viewer never writes, a
node never lists, creates or deletes, the admin is never refused), and the hub still
answers /healthz at the end. (schemathesis does this from a schema; ours declares
no bodies, so the bodies here are built from the fields our handlers read.)
"""

from __future__ import annotations

import functools
import http.client
import json
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeward import certs
from tests.support.nodecerts import new_token
from tests.support.procs import Hub

#: Examples per operation; each is sent once per identity.
EXAMPLES = 100
NS = "/api/v1/namespaces/default"
PROP = {"name": "target", "type": "INT", "accessMode": "ReadWrite"}
PUBLIC = {"/healthz", "/api/v1/join", "/api/v1/join/ca"}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
#: Field names our handlers read, so generated objects get past the first check.
FIELDS = [
    "apiVersion", "kind", "metadata", "name", "namespace", "labels", "annotations",
    "resourceVersion", "uid", "creationTimestamp", "spec", "status", "nodeName",
    "deviceModelRef", "properties", "desired", "value", "metadata", "timestamp", "type",
    "accessMode", "twins", "conditions", "role", "ttlSeconds", "node", "singleUse",
    "description", "token", "csr",
]  # fmt: skip
KINDS = [
    ("v1", "Node"),
    ("devices.kubeedge.io/v1beta1", "Device"),
    ("devices.kubeedge.io/v1beta1", "DeviceModel"),
]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # with {placeholders}
    params: tuple[str, ...]


class Client:
    """One kept-alive HTTPS connection to the API."""

    def __init__(self, hub: Hub) -> None:
        self.host, self.port = "127.0.0.1", hub.api_port
        self.tls = ssl.create_default_context(cafile=str(hub.ca))
        self.conn: http.client.HTTPSConnection | None = None

    def send(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    self.host, self.port, context=self.tls, timeout=10
                )
            try:
                self.conn.request(method, target, body=body, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()  # the server ended a kept-alive connection: once more
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def operations(doc: dict[str, Any]) -> list[Operation]:
    return [
        Operation(
            method.upper(),
            path,
            tuple(p["name"] for p in op.get("parameters", []) if p["in"] == "path"),
        )
        for path, methods in doc["paths"].items()
        for method, op in methods.items()
    ]


# -- strategies -------------------------------------------------------------------------

#: Objects the hub holds before the requests start, so writes find something to change.
SEEDED = {"fuzz-node", "d1", "m1"}
names = st.one_of(
    st.sampled_from(sorted(SEEDED)),
    st.sampled_from(sorted(SEEDED)),
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?", fullmatch=True),
)
texts = st.one_of(
    names,
    st.text(max_size=40),
    st.sampled_from(["default", "edge-1", "..", ".", "%2e%2e", "a" * 300, "\ud800", "\x00", " "]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=20,
)


KIND_OF_PATH = {
    "devices": ("devices.kubeedge.io/v1beta1", "Device"),
    "devicemodels": ("devices.kubeedge.io/v1beta1", "DeviceModel"),
    "nodes": ("v1", "Node"),
}
namespaces = st.one_of(st.just("default"), st.just("default"), names, texts)
properties = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["target", "temp"]), texts)},
    optional={
        "desired": st.fixed_dictionaries(
            {"value": st.one_of(texts, scalars, st.just("v" * 513))},
            optional={"metadata": st.fixed_dictionaries({"timestamp": scalars})},
        ),
        "type": st.sampled_from(["INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "x"]),
        "accessMode": st.sampled_from(["ReadWrite", "ReadOnly", "x"]),
    },
)
specs = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "nodeName": st.one_of(st.just("fuzz-node"), names, texts),
            "deviceModelRef": st.fixed_dictionaries({"name": st.one_of(st.just("m1"), texts)}),
            "properties": st.lists(properties, max_size=3),
        },
    ),
    json_values,
)


@st.composite
def objects(draw: st.DrawFn, kind: tuple[str, str], values: dict[str, str]) -> dict[str, Any]:
    """Mostly a well-formed object of the path's kind, named as the path says, with any
    field possibly of any value: deep enough to reach the handlers' own checks."""
    api_version, kind_name = kind if draw(st.integers(0, 9)) else draw(st.sampled_from(KINDS))
    meta: dict[str, Any] = {"name": values.get("name") or draw(names)}
    if not draw(st.integers(0, 9)):
        meta["name"] = draw(st.one_of(texts, scalars))
    if "namespace" in values and draw(st.booleans()):
        meta["namespace"] = values["namespace"] if draw(st.booleans()) else draw(texts)
    for field in ("labels", "annotations", "resourceVersion", "uid"):
        if not draw(st.integers(0, 3)):
            meta[field] = draw(st.one_of(texts, json_values, st.integers()))
    obj = {"apiVersion": api_version, "kind": kind_name, "metadata": meta, "spec": draw(specs)}
    if not draw(st.integers(0, 4)):
        obj.update(draw(st.dictionaries(st.sampled_from([*FIELDS, "x"]), json_values)))
    return obj


token_requests = st.fixed_dictionaries(
    {},
    optional={
        "role": st.one_of(st.sampled_from(["admin", "viewer", "node"]), texts),
        "ttlSeconds": st.one_of(st.integers(), st.floats(), texts),
        "node": st.one_of(names, texts, scalars),
        "singleUse": scalars,
        "description": texts,
    },
)


@functools.cache
def a_csr() -> str:
    return certs.node_csr(certs.new_private_key(), "fuzz").decode("ascii")


def join_requests(tokens: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Join requests: often a usable token and a real CSR, so the name and the node's
    liveness get checked too."""
    csr = a_csr()
    fields = {
        "token": st.one_of(
            st.sampled_from(tokens),
            st.sampled_from(tokens),
            texts,
            st.from_regex(r"[0-9a-f]{64}\.[a-z0-9]{6}\.[a-z0-9]{26}", fullmatch=True),
        ),
        "node": st.one_of(names, texts),
        "csr": st.one_of(st.just(csr), st.just(csr), texts, st.just(csr.replace("A", "B", 3))),
    }
    return st.one_of(st.fixed_dictionaries(fields), st.fixed_dictionaries({}, optional=fields))


def bodies(
    op: Operation, values: dict[str, str], tokens: list[str]
) -> st.SearchStrategy[bytes | None]:
    segments = [seg for seg in op.path.split("/") if seg in KIND_OF_PATH]
    shaped = [objects(KIND_OF_PATH[segments[-1]], values)] if segments else []
    if op.path.startswith("/api/v1/tokens"):
        shaped = [token_requests]
    elif op.path.startswith("/api/v1/join"):
        shaped = [join_requests(tokens)]
    as_json = st.one_of(*shaped, *shaped, json_values).map(
        lambda v: json.dumps(v).encode("utf-8", "surrogatepass")
    )
    return st.one_of(
        as_json,
        as_json,
        st.none(),
        st.binary(max_size=64),
        st.sampled_from([b"", b"{", b"[" * 5000, b'{"a": NaN}', b'"\\ud800"', b"\xff\xfe"]),
    )


# -- the test ---------------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    h = Hub(tmp_path / "hub", secure=True)
    h.start()
    try:
        yield h
    finally:
        h.kill()


def fuzz(
    op: Operation, client: Client, tokens: dict[str, str], seen: dict[str, set[int]]
) -> Callable[[], None]:
    """A Hypothesis test of one operation: each example sent once per identity."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        values = {
            p: data.draw(namespaces if p == "namespace" else st.one_of(names, texts), label=p)
            for p in op.params
        }
        # a lone surrogate goes out as the bytes no UTF-8 decoder accepts
        quoted = {k: quote(v, safe="", errors="surrogatepass") for k, v in values.items()}
        target = op.path.format(**quoted)
        if data.draw(st.booleans(), label="query"):
            query = {"resourceVersion": data.draw(texts, label="rv")}
            target += "?" + urlencode(query, errors="surrogatepass")
        body = None
        if op.method in WRITES:
            body = data.draw(bodies(op, values, [t for t in tokens.values() if t]), label="body")
        headers = {"Content-Type": "application/json"}
        if op.method == "PATCH" and data.draw(st.booleans(), label="merge-patch"):
            headers["Content-Type"] = "application/merge-patch+json"
        for who, token in tokens.items():
            sent = {**headers, **({"Authorization": f"Bearer {token}"} if token else {})}
            status, raw = client.send(op.method, target, body, sent)
            seen.setdefault(f"{op.method} {op.path}", set()).add(status)
            check(op, who, status, raw)

    return run


def check(op: Operation, who: str, status: int, raw: bytes) -> None:
    """What every answer must be, whatever was asked (authz.py's rules, seen from outside)."""
    where = f"{op.method} {op.path} as {who}: {status} {raw[:300]!r}"
    assert status < 500, where
    if status >= 400:  # every refusal is a Kubernetes Status carrying its code
        body = json.loads(raw)
        assert body["kind"] == "Status" and body["code"] == status, where
    if op.path in PUBLIC:
        assert op.method != "GET" or status == 200, where  # health and the CA: anyone
        return
    granted = 200 <= status < 300
    if who == "anonymous":
        assert status == 401, where
    elif who == "admin":
        assert status not in (401, 403), where
    elif who == "viewer":
        assert not (granted and op.method in WRITES), where
    elif who == "node":  # one object at a time, its own, never created, deleted or listed
        one_object = op.path.endswith("{name}")
        assert not granted or (one_object and op.method in {"GET", "PUT", "PATCH"}), where


def test_generated_requests_never_break_the_api(hub: Hub) -> None:
    """Every operation of the hub's OpenAPI document, with generated parameters and bodies,
    as anonymous, viewer, node and admin: no 5xx, 401 without a token off the public paths,
    no write by a viewer, nothing past its own objects for a node, no refusal of the admin,
    every refusal a Status; /healthz answers at the end."""
    status, doc = hub.request("GET", "/openapi.json")
    assert status == 200, doc
    ops = operations(doc)
    assert len(ops) >= 20 and {op.path for op in ops} >= PUBLIC
    tokens = {
        "anonymous": "",
        "viewer": new_token(hub, role="viewer")["token"],
        "node": new_token(hub, role="node", node="fuzz-node", singleUse=False)["token"],
        "admin": hub.token,
    }
    for path, obj in (
        ("/api/v1/nodes", {"metadata": {"name": "fuzz-node"}}),
        (f"{NS}/devicemodels", {"metadata": {"name": "m1"}, "spec": {"properties": [PROP]}}),
        (
            f"{NS}/devices",
            {
                "metadata": {"name": "d1"},
                "spec": {"nodeName": "fuzz-node", "deviceModelRef": {"name": "m1"}},
            },
        ),
    ):
        status, body = hub.request("POST", path, obj)
        assert status == 201, body
    client = Client(hub)
    seen: dict[str, set[int]] = {}

    for op in ops:
        fuzz(op, client, tokens, seen)()
    assert len(seen) == len(ops)
    status, health = hub.request("GET", "/healthz", token="")
    assert status == 200 and health["status"] == "ok"
    assert "Traceback" not in hub.log()
