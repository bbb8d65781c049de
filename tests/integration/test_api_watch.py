"""Watches on the REST API of a real cloudhub process (SQLite, real sockets).

A watch is a long GET answered with newline-delimited JSON events, read by
tests/support/watching.py with a generous deadline (a hang guard, not a
timing assertion). Absence of an event is proven by ordering: a later
"sentinel" write must be the next event a watcher receives.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from cloudhub.db import open_engine
from cloudhub.store import Store
from tests.support.procs import Hub, wait_for
from tests.support.watching import DEADLINE, Watch

NS = "/api/v1/namespaces"


@pytest.fixture
def watches() -> Iterator[Any]:
    """Open watches on a hub; every one is closed after the test."""
    opened: list[Watch] = []

    def open_watch(hub: Hub, path: str) -> Watch:
        w = Watch(hub, path)
        opened.append(w)
        return w

    yield open_watch
    for w in opened:
        w.close()


def device(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"deviceModelRef": {"name": "thermometer"}, **spec},
    }


def ok(result: tuple[int, Any], code: int = 200) -> dict[str, Any]:
    status, body = result
    assert status == code, (status, body)
    return body


def head(hub: Hub) -> int:
    return ok(hub.request("GET", "/healthz"))["revision"]


def rv(obj: dict[str, Any]) -> str:
    return obj["metadata"]["resourceVersion"]


def test_watch_from_revision_streams_later_writes_in_order(hub: Hub, watches: Any) -> None:
    """A watch from revision N gets every later write to the collection, in order, once."""
    coll = f"{NS}/default/devices"
    ok(hub.request("POST", coll, device("before")), 201)
    n = head(hub)
    w = watches(hub, f"{coll}?watch=1&resourceVersion={n}")
    assert w.status == 200
    a = ok(hub.request("POST", coll, device("a", nodeName="edge-a")), 201)
    a2 = ok(hub.request("PUT", f"{coll}/a", device("a", nodeName="edge-b")))
    a3 = ok(
        hub.request(
            "PATCH",
            f"{coll}/a",
            {"metadata": {"labels": {"site": "north"}}},
            "application/merge-patch+json",
        )
    )
    b = ok(hub.request("POST", coll, device("b")), 201)
    gone = ok(hub.request("DELETE", f"{coll}/a"))
    expected = [("ADDED", a), ("MODIFIED", a2), ("MODIFIED", a3), ("ADDED", b), ("DELETED", gone)]
    events = w.take(5)
    assert [(e["type"], e["object"]) for e in events] == expected
    assert [int(rv(e["object"])) for e in events] == list(range(n + 1, n + 6))

    # A watch opened later from the same revision replays the same events from the log.
    late = watches(hub, f"{coll}?watch=1&resourceVersion={n}")
    assert [(e["type"], e["object"]) for e in late.take(5)] == expected


def test_watch_without_revision_lists_first(hub: Hub, watches: Any) -> None:
    """A watch without resourceVersion starts with ADDED for every existing object."""
    coll = f"{NS}/lines/devices"
    existing = [ok(hub.request("POST", coll, device(n, "lines")), 201) for n in ("c", "a", "b")]
    elsewhere = ok(hub.request("POST", f"{NS}/default/devices", device("z")), 201)
    w = watches(hub, f"{coll}?watch=1")
    first = w.take(3)
    assert [e["type"] for e in first] == ["ADDED"] * 3
    assert sorted((e["object"] for e in first), key=lambda o: o["metadata"]["name"]) == sorted(
        existing, key=lambda o: o["metadata"]["name"]
    )
    # Then live changes follow.
    new = ok(hub.request("POST", coll, device("d", "lines")), 201)
    moved = ok(hub.request("PUT", f"{coll}/a", device("a", "lines", nodeName="edge-a")))
    assert [(e["type"], e["object"]) for e in w.take(2)] == [("ADDED", new), ("MODIFIED", moved)]

    # resourceVersion=0 means "from the current state", as in Kubernetes.
    zero = watches(hub, f"{coll}?watch=1&resourceVersion=0")
    assert sorted(e["object"]["metadata"]["name"] for e in zero.take(4)) == ["a", "b", "c", "d"]

    everywhere = watches(hub, "/api/v1/devices?watch=1")
    listed = everywhere.take(5)
    assert {e["type"] for e in listed} == {"ADDED"}
    assert {
        (e["object"]["metadata"]["namespace"], e["object"]["metadata"]["name"]) for e in listed
    } == {
        ("lines", "a"),
        ("lines", "b"),
        ("lines", "c"),
        ("lines", "d"),
        ("default", "z"),
    }
    assert elsewhere in [e["object"] for e in listed]


def test_namespace_watch_ignores_other_namespaces_and_kinds(hub: Hub, watches: Any) -> None:
    """A watch on one namespace's devices does not see other namespaces or other kinds."""
    n = head(hub)
    alpha = watches(hub, f"{NS}/alpha/devices?watch=1&resourceVersion={n}")
    everywhere = watches(hub, f"/api/v1/devices?watch=1&resourceVersion={n}")
    other = ok(hub.request("POST", f"{NS}/beta/devices", device("x", "beta")), 201)
    ok(hub.request("POST", f"{NS}/beta/devices", device("same", "beta")), 201)
    model = {"metadata": {"name": "thermometer"}, "spec": {"properties": [{"name": "t"}]}}
    ok(hub.request("POST", f"{NS}/alpha/devicemodels", model), 201)
    ok(hub.request("POST", "/api/v1/nodes", {"metadata": {"name": "edge-a"}}), 201)
    ok(hub.request("DELETE", f"{NS}/beta/devices/x"))
    sentinel = ok(hub.request("POST", f"{NS}/alpha/devices", device("same", "alpha")), 201)
    assert alpha.take(1) == [{"type": "ADDED", "object": sentinel}]
    seen = everywhere.take(4)
    assert [(e["type"], e["object"]["metadata"]["namespace"]) for e in seen] == [
        ("ADDED", "beta"),
        ("ADDED", "beta"),
        ("DELETED", "beta"),
        ("ADDED", "alpha"),
    ]
    assert seen[0]["object"] == other
    assert seen[3]["object"] == sentinel


def test_single_object_watch_sees_only_that_object(hub: Hub, watches: Any) -> None:
    """Watching /devices/NAME streams that object's events and nothing else."""
    coll = f"{NS}/default/devices"
    n = head(hub)
    w = watches(hub, f"{coll}/target?watch=1&resourceVersion={n}")
    ok(hub.request("POST", coll, device("other")), 201)
    t1 = ok(hub.request("POST", coll, device("target")), 201)
    ok(hub.request("PUT", f"{coll}/other", device("other", nodeName="edge-a")), 200)
    ok(hub.request("POST", f"{NS}/plant-2/devices", device("target", "plant-2")), 201)
    t2 = ok(hub.request("PUT", f"{coll}/target", device("target", nodeName="edge-a")), 200)
    ok(hub.request("DELETE", f"{coll}/other"))
    t3 = ok(hub.request("DELETE", f"{coll}/target"))
    t4 = ok(hub.request("POST", coll, device("target", nodeName="edge-b")), 201)
    assert [(e["type"], e["object"]) for e in w.take(4)] == [
        ("ADDED", t1),
        ("MODIFIED", t2),
        ("DELETED", t3),
        ("ADDED", t4),
    ]
    # Without a resourceVersion it starts with just that object's current state.
    ok(hub.request("POST", coll, device("other")), 201)
    fresh = watches(hub, f"{coll}/target?watch=1")
    assert fresh.take(1) == [{"type": "ADDED", "object": t4}]
    ok(hub.request("DELETE", f"{coll}/other"))
    t5 = ok(hub.request("DELETE", f"{coll}/target"))
    assert fresh.take(1) == [{"type": "DELETED", "object": t5}]


def test_watch_older_than_the_change_log_is_410(hub: Hub, watches: Any) -> None:
    """A watch from a revision the hub compacted away gets 410 Gone, so the client relists."""
    coll = f"{NS}/default/devices"
    for name in ("a", "b", "c"):
        ok(hub.request("POST", coll, device(name)), 201)
    engine = open_engine(f"sqlite:///{hub.data_dir / 'hub.db'}")
    try:
        bound = Store(engine).compact(0)
    finally:
        engine.dispose()
    assert bound == head(hub) == 3
    for old in (1, 2):
        status, body = hub.request("GET", f"{coll}?watch=1&resourceVersion={old}")
        assert status == 410, body
        assert body["kind"] == "Status" and body["code"] == 410 and body["reason"] == "Gone"
        assert body["message"]
        status, body = hub.request("GET", f"{coll}/a?watch=1&resourceVersion={old}")
        assert status == 410 and body["reason"] == "Gone"
    status, body = hub.request("GET", f"{coll}?watch=1&resourceVersion=abc")
    assert status == 400 and body["kind"] == "Status" and body["code"] == 400
    # From the compaction bound itself the log is complete: the watch works.
    w = watches(hub, f"{coll}?watch=1&resourceVersion={bound}")
    assert w.status == 200
    d = ok(hub.request("POST", coll, device("d")), 201)
    assert w.take(1) == [{"type": "ADDED", "object": d}]
    # And relisting, as the 410 says, works too.
    listed = ok(hub.request("GET", coll))
    relist = watches(hub, f"{coll}?watch=1&resourceVersion={listed['metadata']['resourceVersion']}")
    e = ok(hub.request("PUT", f"{coll}/d", device("d", nodeName="edge-a")))
    assert relist.take(1) == [{"type": "MODIFIED", "object": e}]


WRITERS = 3
WRITES_EACH = 100


def test_watch_started_during_a_burst_sees_every_write_once(hub: Hub, watches: Any) -> None:
    """A watch opened while 300 writes are in flight sees all of them, once each, in order."""
    coll = f"{NS}/burst/devices"
    ok(hub.request("POST", coll, device("seed", "burst")), 201)
    start = head(hub)  # not 0: resourceVersion=0 means "list first", like Kubernetes
    done: list[tuple[int, str, str]] = []  # (revision, event type, name)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def record(obj: dict[str, Any], kind: str) -> None:
        with lock:
            done.append((int(rv(obj)), kind, obj["metadata"]["name"]))

    def writer(t: int) -> None:
        try:
            names = [f"d{t}-{k}" for k in range(20)]
            for name in names:  # 20 creates
                record(ok(hub.request("POST", coll, device(name, "burst")), 201), "ADDED")
            for k in range(60):  # 60 updates, PUT and PATCH
                name = names[k % 20]
                if k % 2:
                    body = device(name, "burst", nodeName=f"edge-{k}")
                    record(ok(hub.request("PUT", f"{coll}/{name}", body)), "MODIFIED")
                else:
                    patch = {"metadata": {"labels": {"round": str(k)}}}
                    record(ok(hub.request("PATCH", f"{coll}/{name}", patch)), "MODIFIED")
            for name in names:  # 20 deletes
                record(ok(hub.request("DELETE", f"{coll}/{name}")), "DELETED")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(WRITERS)]
    for th in threads:
        th.start()
    wait_for(lambda: len(done) >= 30 or errors, DEADLINE, "the burst to get going")
    w = watches(hub, f"{coll}?watch=1&resourceVersion={start}")
    assert w.status == 200
    events = w.take(WRITERS * WRITES_EACH)
    for th in threads:
        th.join(DEADLINE)
    assert not errors, errors
    assert len(done) == WRITERS * WRITES_EACH
    assert head(hub) == start + WRITERS * WRITES_EACH
    got = [(int(rv(e["object"])), e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert got == sorted(done)
    assert [r for r, _, _ in got] == list(range(start + 1, start + 1 + WRITERS * WRITES_EACH))


def test_watch_from_ahead_of_the_head_is_410(hub: Hub, watches: Any) -> None:
    """A watch from a revision the hub never reached is refused at once with 410, not left
    silent: the database was restored or the number came from elsewhere, so list again."""
    coll = f"{NS}/default/devices"
    ok(hub.request("POST", coll, device("a")), 201)
    n = head(hub)
    for path in (f"{coll}?watch=1&resourceVersion={n + 1}", f"{coll}/a?watch=1&resourceVersion=99"):
        status, body = hub.request("GET", path)
        assert status == 410, body
        assert (body["kind"], body["code"], body["reason"]) == ("Status", 410, "Gone")
        assert f"newest revision {n}" in body["message"]
        assert "list again" in body["message"]
    assert ok(hub.request("GET", "/healthz"))["watches"]["open"] == 0
    # From the head itself the watch is served.
    w = watches(hub, f"{coll}?watch=1&resourceVersion={n}")
    b = ok(hub.request("POST", coll, device("b")), 201)
    assert w.take(1) == [{"type": "ADDED", "object": b}]


@pytest.mark.parametrize(
    "value", ["9223372036854775808", "9999999999999999999", "1" * 40, "0" * 30 + "1" * 20]
)
def test_resource_version_outside_int64_is_refused(hub: Hub, value: str) -> None:
    """A resourceVersion past int64 gets a clear 400 (or 422 in a body) wherever it is
    given, instead of cutting a watch stream with an overflow or reaching the database."""
    coll = f"{NS}/default/devices"
    created = ok(hub.request("POST", coll, device("a")), 201)
    for method, path in (
        ("GET", f"{coll}?watch=1&resourceVersion={value}"),
        ("GET", f"{coll}/a?watch=true&resourceVersion={value}"),
        ("DELETE", f"{coll}/a?resourceVersion={value}"),
    ):
        status, body = hub.request(method, path)
        assert status == 400, (method, path, body)
        assert body["reason"] == "BadRequest"
        assert body["message"] == (
            "resourceVersion is out of range: a resourceVersion is at most 9223372036854775807"
        )
    put = {**device("a", nodeName="edge-a"), "metadata": {"name": "a", "resourceVersion": value}}
    status, body = hub.request("PUT", f"{coll}/a", put)
    assert status == 422, body
    assert body["details"]["causes"] == [
        {
            "field": "metadata.resourceVersion",
            "message": "is out of range: a resourceVersion is at most 9223372036854775807",
        }
    ]
    # The largest resourceVersion is a number like any other: ahead of the head, so 410.
    status, body = hub.request("GET", f"{coll}?watch=1&resourceVersion=9223372036854775807")
    assert status == 410, body
    assert ok(hub.request("GET", f"{coll}/a")) == created


def _raw_get(hub: Hub, path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    url = urlsplit(hub.api)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=DEADLINE)
    conn.request("GET", path)
    return conn, conn.getresponse()


def big_device(name: str) -> dict[str, Any]:
    """A Device of about 900 KB: 1,000 properties with desired values and visitor settings."""
    props = [
        {
            "name": f"p{i}",
            "desired": {"value": f"{i}-" + "x" * 500},
            "visitors": {"offset": i, "scale": 0.5, "swap": False, "notes": "y" * 320},
        }
        for i in range(1000)
    ]
    return device(name, properties=props)


def test_watch_streams_a_large_object_as_stored(hub: Hub, watches: Any) -> None:
    """A watch that starts with a list while a 900 KB Device exists streams it unchanged:
    the event carries the same JSON bytes a GET of the Device returns, and so does a list."""
    coll = f"{NS}/default/devices"
    big = ok(hub.request("POST", coll, big_device("big")), 201)
    small = ok(hub.request("POST", coll, device("small")), 201)
    conn, resp = _raw_get(hub, f"{coll}/big")
    stored = resp.read()
    conn.close()
    assert len(stored) > 900_000
    assert json.loads(stored) == big

    conn, resp = _raw_get(hub, f"{coll}?watch=1")
    try:
        assert resp.status == 200
        assert resp.readline() == b'{"type":"ADDED","object":' + stored + b"}\n"
        assert json.loads(resp.readline()) == {"type": "ADDED", "object": small}
    finally:
        conn.close()
    conn, resp = _raw_get(hub, coll)
    listed = resp.read()
    conn.close()
    assert stored in listed
    assert json.loads(listed)["items"] == [big, small]


def test_watches_listing_a_large_object_cost_the_hub_little_memory(hub: Hub) -> None:
    """A hundred watches starting with a list while a 900 KB Device exists grow the hub by
    tens of MiB at most, not hundreds that are never given back (each watch used to decode
    every object). Coarse on purpose: the bench (watch-memory) measures it."""
    coll = f"{NS}/default/devices"
    ok(hub.request("POST", coll, big_device("big")), 201)
    assert hub.proc is not None
    hub_process = psutil.Process(hub.proc.pid)
    before = hub_process.memory_info().rss
    go = threading.Barrier(100)
    received: list[int] = []
    lock = threading.Lock()

    def watch() -> None:
        url = urlsplit(hub.api)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=DEADLINE)
        try:
            conn.connect()
            go.wait()
            conn.request("GET", f"{coll}?watch=1")
            line = conn.getresponse().readline()
            with lock:
                received.append(len(line))
            go.wait()  # every watch stays open until all have their event
        finally:
            conn.close()

    threads = [threading.Thread(target=watch, daemon=True) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(received) == 100 and min(received) > 900_000
    grown = hub_process.memory_info().rss - before
    assert grown < 128 * 2**20, f"the hub grew by {grown / 2**20:.0f} MiB"


def test_watches_beyond_max_watches_get_429(tmp_path: Path, watches: Any) -> None:
    """More watches than max_watches are refused with 429 and counted; a closed watch
    frees its place."""
    hub = Hub(tmp_path / "hub", "--max-watches", "2")
    hub.start()
    try:
        coll = f"{NS}/default/devices"
        first = watches(hub, f"{coll}?watch=1")
        watches(hub, f"{coll}?watch=1")
        status, body = hub.request("GET", f"{coll}?watch=1")
        assert status == 429, body
        assert body["reason"] == "TooManyRequests"
        assert "max_watches" in body["message"]
        health = ok(hub.request("GET", "/healthz"))["watches"]
        assert health == {"open": 2, "max": 2, "refused": 1}
        first.close()
        wait_for(
            lambda: ok(hub.request("GET", "/healthz"))["watches"]["open"] == 1,
            DEADLINE,
            "the closed watch to be released",
        )
        again = watches(hub, f"{coll}?watch=1")
        assert again.status == 200
        a = ok(hub.request("POST", coll, device("a")), 201)
        assert again.take(1) == [{"type": "ADDED", "object": a}]
        assert "refused 1 watch(es)" in hub.log()
    finally:
        hub.kill()
