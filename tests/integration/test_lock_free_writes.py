"""Node bookkeeping without the revision lock (PostgreSQL): a lease flush and the hello of a
node already Ready run beside a transaction that holds the lock, where replicas used to
queue one after another on the one revision row; work that must change an object runs
again with the lock, and what its lock-free try wrote is rolled back with it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, select

from cloudhub.groupwriter import GroupWriter
from cloudhub.nodes import _GET_LEASE, NodeRegistry, SessionSuperseded
from cloudhub.schema import node_leases, revision
from cloudhub.store import RevisionLockNeeded, Store
from edgeward.kinds import NODE
from edgeward.protocol import TOPIC_NODE_STATUS, ReportItem
from tests.support.clock import T0, ManualClock

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

GRACE = 40.0
INFO = {"architecture": "arm64", "osImage": "Debian GNU/Linux 12", "agentVersion": "0.1.0"}
#: A hang guard (a writer that waits where it must not), not a measure.
GUARD = 60.0


def heartbeat(seq: int, cpu: float) -> ReportItem:
    return ReportItem(seq, TOPIC_NODE_STATUS, "node", {"usage": {"cpuPercent": cpu}})


@contextmanager
def revision_lock_held(store: Store) -> Iterator[Connection]:
    """Another writer (say, another replica's batch) holding the revision lock."""
    with store.engine.connect() as conn:
        conn.begin()
        conn.execute(select(revision.c.head).with_for_update())
        try:
            yield conn
        finally:
            conn.rollback()


def lease(store: Store, name: str) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(
            select(node_leases.c.heartbeat, node_leases.c.ready, node_leases.c.session).where(
                node_leases.c.node == name
            )
        ).one()


def ready(store: Store, name: str) -> str:
    conditions = store.get(NODE, None, name)["status"]["conditions"]
    return next(c["status"] for c in conditions if c["type"] == "Ready")


def test_a_ready_nodes_hello_and_a_lease_flush_do_not_wait_for_the_revision_lock(
    store: Store, clock: ManualClock
) -> None:
    """While another transaction holds the revision lock, a lease flush and the hello of a
    node already Ready commit and are answered; the first hello of a new node (which
    creates its Node, a revision) waits for the lock and then commits too."""
    registry = NodeRegistry(store, grace_period=GRACE)
    registry.registered("old", INFO, registry_in_tx(registry, "old"))
    clock.now = T0 + 30
    assert registry.absorb("old", (heartbeat(1, 55.0),), 0) == 1  # a dirty live lease
    head = store.head()

    async def scenario() -> tuple[Any, ...]:
        writer = GroupWriter(store)
        registry.writer = writer
        flush = asyncio.ensure_future(registry.flush_async())  # (before the new session)
        hello = asyncio.ensure_future(
            writer.submit(lambda tx: registry.register_in(tx, "old", INFO), lock_free=True)
        )
        new = asyncio.ensure_future(
            writer.submit(lambda tx: registry.register_in(tx, "new", INFO), lock_free=True)
        )
        await asyncio.sleep(0)  # all three queued: one batch
        runner = asyncio.create_task(writer.run())
        try:
            with revision_lock_held(store):
                async with asyncio.timeout(GUARD):
                    registration, flushed = await asyncio.gather(hello, flush)
                stored_while_locked = lease(store, "old")
                new_waited = not new.done()
            async with asyncio.timeout(GUARD):
                created = await new
            return registration, flushed, stored_while_locked, new_waited, created
        finally:
            runner.cancel()

    registration, flushed, stored, new_waited, created = asyncio.run(scenario())
    assert flushed == 1
    assert stored.heartbeat == T0 + 30 and stored.ready, "the flush did not commit"
    assert stored.session == 2, "the hello did not take the next session"
    assert registration.session == 2 and registration.revision == head
    assert new_waited, "a hello that creates a Node must wait for the revision lock"
    assert created.session == 1 and created.revision == head + 1
    assert ready(store, "new") == "True" and store.head() == head + 1


def registry_in_tx(registry: NodeRegistry, name: str) -> Any:
    with registry.store.writing() as tx:
        return registry.register_in(tx, name, INFO)


def test_a_hello_that_must_change_the_node_runs_again_with_the_lock(
    store: Store, clock: ManualClock
) -> None:
    """The hello of a node the leader marked NotReady cannot commit without the lock: its
    lock-free try leaves nothing behind (one session number is taken, not two) and it runs
    again with the lock, making the node Ready."""
    registry = NodeRegistry(store, grace_period=GRACE)
    registry.register("edge-a", INFO)
    clock.now = T0 + GRACE + 1
    assert registry.expire() == ["edge-a"]
    assert ready(store, "edge-a") == "Unknown"
    with store.writing(lock_free=True) as tx, pytest.raises(RevisionLockNeeded):
        registry.register_in(tx, "edge-a", INFO)

    async def scenario() -> Any:
        writer = GroupWriter(store)
        runner = asyncio.create_task(writer.run())
        try:
            async with asyncio.timeout(GUARD):
                return await writer.submit(
                    lambda tx: registry.register_in(tx, "edge-a", INFO), lock_free=True
                )
        finally:
            runner.cancel()

    registration = asyncio.run(scenario())
    assert registration.session == 2
    assert lease(store, "edge-a").session == 2 and lease(store, "edge-a").ready
    assert ready(store, "edge-a") == "True"


def test_a_flush_that_repairs_readiness_runs_again_with_the_lock(
    store: Store, clock: ManualClock
) -> None:
    """A lock-free flush that finds its node marked NotReady (its replica stalled) runs again
    with the lock and makes the node Ready in the same commit as the heartbeat."""
    registry = NodeRegistry(store, grace_period=GRACE)
    registry.register("edge-a", INFO)
    clock.now = T0 + GRACE + 1
    registry.absorb("edge-a", (heartbeat(1, 20.0),), 0)  # heard, not yet flushed
    # the leader, on another replica, marks it NotReady meanwhile
    other = NodeRegistry(store, grace_period=GRACE)
    other.watching_since = T0
    assert other.mark_silent() == ["edge-a"]

    async def scenario() -> int:
        registry.writer = GroupWriter(store)
        runner = asyncio.create_task(registry.writer.run())
        try:
            async with asyncio.timeout(GUARD):
                return await registry.flush_async()
        finally:
            runner.cancel()

    assert asyncio.run(scenario()) == 1
    assert lease(store, "edge-a").ready and ready(store, "edge-a") == "True"
    assert lease(store, "edge-a").heartbeat == T0 + GRACE + 1


def test_a_session_check_holds_until_commit_without_the_revision_lock(
    store: Store,
) -> None:
    """A report transaction that checked its session holds the node's lease row: a hello on
    another replica, lock-free, waits for it to commit before taking the session over, so
    no replica writes for a node under a session that another has taken."""
    first = NodeRegistry(store, grace_period=GRACE, replica="first")
    second = NodeRegistry(store, grace_period=GRACE, replica="second")
    session = registry_in_tx(first, "edge-a").session
    checked, took = threading.Event(), threading.Event()
    taken: list[int] = []

    def hello_on_second() -> None:
        checked.wait(GUARD)
        with store.writing(lock_free=True) as tx:
            taken.append(second.register_in(tx, "edge-a", INFO).session)
        took.set()

    thread = threading.Thread(target=hello_on_second)
    thread.start()
    try:
        with store.writing() as tx:
            # a report's session check, before it writes anything
            stored = tx.conn.execute(_GET_LEASE, {"b_node": "edge-a"}).one()
            assert stored.session == session
            checked.set()
            waited = not took.wait(1.0)
    finally:
        thread.join(GUARD)
    assert waited, "the hello took the session while a report under it was uncommitted"
    assert taken == [session + 1]
    with store.writing() as tx, pytest.raises(SessionSuperseded):
        first._touch_lease(tx, "edge-a", session)
