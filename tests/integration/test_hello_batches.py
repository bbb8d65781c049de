"""Hellos registered in batches (cloudhub/hellos.py), on SQLite and on PostgreSQL.

A batch must leave the database as registering its hellos one at a time would —
sessions, Ready nodes and their nodeInfo, positions, resync requests, one revision per
Node it changes — while a Ready node's hello still never waits for the revision lock, and
one hello that cannot be stored fails alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import insert, select, text

from cloudhub.groupwriter import GroupWriter, WriterStopped
from cloudhub.hellos import HelloBatcher
from cloudhub.nodes import NodeRegistry, Registration
from cloudhub.schema import node_leases, node_sync, objects
from cloudhub.store import Store
from edgeward.errors import NotFound
from edgeward.kinds import NODE, resource_version
from tests.integration.test_lock_free_writes import GUARD, revision_lock_held
from tests.support.clock import T0, ManualClock

GRACE = 40.0
INFO = {"architecture": "arm64", "osImage": "Debian GNU/Linux 12", "agentVersion": "0.1.0"}
NEW_INFO = {**INFO, "agentVersion": "0.2.0"}

T = TypeVar("T")


def with_batcher(
    registry: NodeRegistry, scenario: Callable[[HelloBatcher], Awaitable[T]]
) -> tuple[T, HelloBatcher]:
    """Run ``scenario(batcher)`` with a running group writer."""
    writer = GroupWriter(registry.store)
    registry.writer = writer
    batcher = HelloBatcher(registry, writer)

    async def run() -> T:
        runner = asyncio.create_task(writer.run())
        try:
            async with asyncio.timeout(GUARD):
                return await scenario(batcher)
        finally:
            runner.cancel()

    return asyncio.run(run()), batcher


def register_together(
    registry: NodeRegistry, hellos: dict[str, dict[str, Any]]
) -> tuple[dict[str, Registration | BaseException], HelloBatcher]:
    async def scenario(batcher: HelloBatcher) -> dict[str, Registration | BaseException]:
        results = await asyncio.gather(
            *(batcher.register(name, info) for name, info in hellos.items()),
            return_exceptions=True,
        )
        return dict(zip(hellos, results, strict=True))

    return with_batcher(registry, scenario)


def stored_rows(store: Store, table: Any, name: str) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(select(table).where(table.c.node == name)).one()


def ready(store: Store, name: str) -> str:
    conditions = store.get(NODE, None, name)["status"]["conditions"]
    return next(c["status"] for c in conditions if c["type"] == "Ready")


def test_a_batch_leaves_what_one_hello_at_a_time_would(store: Store, clock: ManualClock) -> None:
    """Five kinds of hello in one batch: a new node, a Ready one, one with a new nodeInfo,
    one the leader marked NotReady and one an operator asked to resync. Each Node that
    changes takes one revision; the others keep theirs."""
    registry = NodeRegistry(store, grace_period=GRACE, replica="replica-a")
    registry.register("stale", INFO)
    clock.now = T0 + GRACE + 1
    assert registry.expire() == ["stale"]
    for name in ("steady", "moved", "asked"):
        registry.register(name, INFO)
    with store.writing() as tx:
        node = tx.get(NODE, None, "steady")
        assert node is not None
        tx.replace_status(NODE, None, "steady", {**node["status"], "capacity": {"cpu": 4}})
    registry.request_resync("asked")
    clock.now = T0 + GRACE + 5
    before = {n: resource_version(store.get(NODE, None, n)) for n in ("steady", "asked")}
    head = store.head()

    results, batcher = register_together(
        registry,
        {"fresh": INFO, "steady": INFO, "moved": NEW_INFO, "stale": INFO, "asked": INFO},
    )

    assert batcher.batches == 1 and batcher.failed_batches == 0
    assert store.head() == head + 3, "one revision each for fresh, moved and stale"
    for name, registration in results.items():
        assert isinstance(registration, Registration), registration
        assert ready(store, name) == "True"
        assert store.get(NODE, None, name)["status"]["nodeInfo"] == (
            NEW_INFO if name == "moved" else INFO
        )
        lease = stored_rows(store, node_leases, name)
        assert (lease.owner, lease.ready, lease.heartbeat) == ("replica-a", True, clock.now)
        assert registration.session == lease.session == (1 if name == "fresh" else 2)
        # a Node deleted after this revision ends the session; the lock-free ones may be
        # answered before the others' writes
        changed = name in ("fresh", "moved", "stale")
        assert head + 3 * changed <= registration.revision <= store.head()
        assert registration.report_seq == stored_rows(store, node_sync, name).report_seq == 0
        assert registration.resync is (name == "asked")
        assert not stored_rows(store, node_sync, name).resync, "the request is cleared"
    assert results["steady"].capacity == {"cpu": 4}
    assert results["fresh"].capacity is None
    for name, revision in before.items():
        assert resource_version(store.get(NODE, None, name)) == revision
    with store.engine.connect() as conn:
        logged = conn.execute(
            text("SELECT name, op, route FROM changes WHERE revision > :h ORDER BY revision"),
            {"h": head},
        ).all()
    assert sorted(logged) == [
        ("fresh", "create", None),
        ("moved", "update", None),
        ("stale", "update", None),
    ]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_ready_nodes_in_a_batch_do_not_wait_for_the_revision_lock(
    store: Store, clock: ManualClock
) -> None:
    """While another transaction holds the revision lock, the Ready nodes of a batch are
    answered; the batch's new node waits for the lock, then is answered too."""
    registry = NodeRegistry(store, grace_period=GRACE)
    for index in range(20):
        registry.register(f"back-{index}", INFO)
    clock.now = T0 + 10

    async def scenario(batcher: HelloBatcher) -> tuple[list[Registration], bool, Registration]:
        back = [
            asyncio.ensure_future(batcher.register(f"back-{index}", INFO)) for index in range(20)
        ]
        new = asyncio.ensure_future(batcher.register("new", INFO))
        with revision_lock_held(store):
            answered = await asyncio.gather(*back)
            await asyncio.sleep(0.2)
            new_waited = not new.done()
        return answered, new_waited, await new

    (answered, new_waited, created), batcher = with_batcher(registry, scenario)
    assert [r.session for r in answered] == [2] * 20
    assert new_waited, "a hello that creates a Node must wait for the revision lock"
    assert created.session == 1 and ready(store, "new") == "True"
    assert batcher.batches <= 2 and batcher.failed_batches == 0


def test_a_hello_that_cannot_be_stored_fails_alone(store: Store) -> None:
    """A Node row that cannot be read (damaged by hand) fails its batch; each hello is
    then registered alone: that node's fails, the others are registered."""
    with store.engine.begin() as conn:
        conn.execute(
            insert(objects).values(
                kind=NODE.name, namespace="", name="broken", resource_version=1, route="broken",
                body="{not json",
            )
        )  # fmt: skip
    registry = NodeRegistry(store, grace_period=GRACE)
    hellos = {f"node-{index}": INFO for index in range(5)} | {"broken": INFO}

    results, batcher = register_together(registry, hellos)

    assert batcher.failed_batches == 1
    assert isinstance(results.pop("broken"), ValueError)
    for name, registration in results.items():
        assert isinstance(registration, Registration) and registration.session == 1
        assert ready(store, name) == "True"


def test_a_burst_of_hellos_makes_few_batches(store: Store) -> None:
    """Hellos that arrive while a batch is written make the next one: 300 at once are
    written in a few batches, not 300."""
    registry = NodeRegistry(store, grace_period=GRACE)
    results, batcher = register_together(registry, {f"node-{i}": INFO for i in range(300)})
    assert all(isinstance(r, Registration) and r.session == 1 for r in results.values())
    assert batcher.batches <= 3, batcher.batches
    assert store.head() >= 300


def test_a_nodes_second_hello_waits_for_the_next_batch(store: Store) -> None:
    """Two hellos of one node in the same burst (a quick reconnect) take two sessions, one
    after the other, as they would one at a time."""
    registry = NodeRegistry(store, grace_period=GRACE)

    async def scenario(batcher: HelloBatcher) -> list[Registration]:
        return list(
            await asyncio.gather(batcher.register("twice", INFO), batcher.register("twice", INFO))
        )

    (first, second), batcher = with_batcher(registry, scenario)
    assert (first.session, second.session) == (1, 2)
    assert stored_rows(store, node_leases, "twice").session == 2
    assert batcher.batches == 2


def test_hellos_queued_when_the_hub_stops_are_told_so(store: Store) -> None:
    """A batch whose transaction never ran because the hub is stopping is not retried hello
    by hello against a writer that is gone: each hello is told the hub is stopping."""
    registry = NodeRegistry(store, grace_period=GRACE)
    started = threading.Event()

    def slow(tx: Any) -> None:
        started.set()
        time.sleep(0.3)

    async def scenario() -> list[Any]:
        writer = GroupWriter(store)
        batcher = HelloBatcher(registry, writer)
        runner = asyncio.create_task(writer.run())
        busy = asyncio.ensure_future(writer.submit(slow))
        await asyncio.to_thread(started.wait, 5)
        hellos = [asyncio.ensure_future(batcher.register(f"late-{i}", INFO)) for i in range(3)]
        await asyncio.sleep(0.05)  # the batch is queued behind the slow job
        runner.cancel()
        async with asyncio.timeout(GUARD):
            return await asyncio.gather(busy, *hellos, return_exceptions=True)

    busy, *outcomes = asyncio.run(scenario())
    assert busy is None
    assert all(isinstance(o, WriterStopped) for o in outcomes), outcomes
    with pytest.raises(NotFound):
        store.get(NODE, None, "late-0")
