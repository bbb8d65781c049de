"""A watch's initial list, read in pages, on SQLite and on PostgreSQL.

The list is read page by page, each page its own read transaction, while
writes go on; the change log then continues from the list's first revision.
:class:`cloudhub.watch.Listing` decides what is sent. These tests drive it
with a real store, interleaving writes between pages as hypothesis chooses,
and replay what a watcher would receive.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudhub.nodes import NodeRegistry
from cloudhub.store import Store
from cloudhub.watch import Listing
from edgeward.kinds import DEVICE, NODE, normalize

_namespaces = itertools.count()
NAMES = [f"d{i}" for i in range(8)]


def device(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return normalize(DEVICE, {"metadata": {"name": name}, "spec": spec}, namespace)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_paged_list_and_the_log_after_it_tell_one_history(store: Store, data: Any) -> None:
    """Whatever is written while a watch's list is read page by page, the watcher gets
    ADDED before any MODIFIED or DELETED of an object, never ADDED twice, no event for an
    object it never saw, resourceVersions that only go up after the list, and ends with
    exactly the stored objects."""
    namespace = f"l{next(_namespaces)}"  # each example on its own objects

    def write_some() -> None:
        for _ in range(data.draw(st.integers(0, 3), label="writes")):
            name = data.draw(st.sampled_from(NAMES), label="name")
            with store.writing() as tx:
                if tx.get(DEVICE, namespace, name) is None:
                    tx.create(DEVICE, device(name, namespace))
                elif data.draw(st.booleans(), label="update"):
                    tx.replace(DEVICE, device(name, namespace, nodeName=f"n{tx.head}"))
                else:
                    tx.delete(DEVICE, namespace, name)

    for name in data.draw(st.lists(st.sampled_from(NAMES), unique=True), label="initial"):
        store.create(DEVICE, device(name, namespace))
    page_rows = data.draw(st.integers(1, 3), label="page rows")

    seen: dict[tuple[str, str], dict[str, Any]] = {}
    listing = Listing()
    after = None
    done = False
    while not done:
        page = store.object_page(
            DEVICE, namespace, None, after, listing.read_through, max_rows=page_rows
        )
        for text in listing.page(page):
            obj = json.loads(text)
            key = (namespace, obj["metadata"]["name"])
            assert key not in seen, f"ADDED twice: {key}"
            assert int(obj["metadata"]["resourceVersion"]) <= (listing.start or 0)
            seen[key] = obj
        if page.rows:
            after = (page.rows[-1].namespace, page.rows[-1].name)
        done = page.done
        write_some()
    write_some()

    assert listing.start is not None
    log = store.log_page(listing.start, 100_000)
    assert log.complete_after(listing.start)
    last = listing.start
    for row in log.rows:
        if row.kind != DEVICE.name or row.namespace != namespace:
            continue
        assert row.revision > last
        last = row.revision
        event = listing.event_type(row)
        key = (row.namespace, row.name)
        if event is None:
            assert key not in seen, f"a change of {key}, which the watcher holds, was not sent"
        elif event == "ADDED":
            assert key not in seen, f"ADDED for {key}, which the watcher holds"
            seen[key] = row.body
        elif event == "MODIFIED":
            assert key in seen, f"MODIFIED for {key}, which the watcher never saw"
            seen[key] = row.body
        else:
            assert key in seen, f"DELETED for {key}, which the watcher never saw"
            del seen[key]
    stored, _ = store.list(DEVICE, namespace)
    assert seen == {(namespace, o["metadata"]["name"]): o for o in stored}
    assert not listing.unseen


def test_a_page_holds_about_one_large_object(store: Store) -> None:
    """A page stops once it holds max_chars of text, so a watch holds little at a time."""
    for i in range(5):
        store.create(DEVICE, device(f"big-{i}", "pages", notes={"text": "x" * 100_000}))
    first = store.object_page(DEVICE, "pages", None, None, None, max_chars=150_000)
    assert [r.name for r in first.rows] == ["big-0", "big-1"]
    assert not first.done
    rest = store.object_page(DEVICE, "pages", None, ("pages", "big-1"), None, max_chars=10**9)
    assert [r.name for r in rest.rows] == ["big-2", "big-3", "big-4"]
    assert rest.done
    for row in first.rows + rest.rows:
        assert row.text == store.get_text(DEVICE, "pages", row.name)
        assert json.loads(row.text) == store.get(DEVICE, "pages", row.name)


def test_a_page_names_the_objects_written_since_the_last_one(store: Store) -> None:
    """A page reports which listed objects were written since the previous page and whether
    the list had reached them, which is how the watch knows what its list could not show."""
    for name in ("a", "b", "c", "d"):
        store.create(DEVICE, device(name, "marks"))
    first = store.object_page(DEVICE, "marks", None, None, None, max_rows=2)
    assert [r.name for r in first.rows] == ["a", "b"]
    store.replace(DEVICE, device("a", "marks", nodeName="edge-1"))  # behind the list
    store.delete(DEVICE, "marks", "c")  # ahead of it
    store.create(DEVICE, device("e", "elsewhere"))  # not listed at all
    second = store.object_page(DEVICE, "marks", None, ("marks", "b"), first.head, max_rows=2)
    assert sorted(second.written) == [("marks", "a", False), ("marks", "c", True)]
    assert [r.name for r in second.rows] == ["d"]
    assert second.done and second.head == first.head + 3


def test_node_pages_carry_the_lease_as_a_get_does(store: Store) -> None:
    """Nodes listed by a watch show their lease (heartbeat, usage) exactly as a GET shows it."""
    registry = NodeRegistry(store, grace_period=40.0)
    registry.register("edge-a", {"agentVersion": "0.1.0"})
    registry.register("edge-b", {"agentVersion": "0.1.0"})
    page = store.object_page(NODE, None, None, None, None)
    assert page.done and [r.name for r in page.rows] == ["edge-a", "edge-b"]
    for row in page.rows:
        node = json.loads(row.text)
        assert node == store.get(NODE, None, row.name)
        assert "lastHeartbeatTime" in node["status"]
        assert row.text == store.get_text(NODE, None, row.name)
    texts, head = store.list_texts(NODE)
    assert texts == [r.text for r in page.rows] and head == page.head
