"""Group commit on the hub: many sessions' writes in one transaction, each in its savepoint."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from cloudhub.groupwriter import GroupWriter
from cloudhub.store import Store, Tx
from edgeward.errors import Conflict
from edgeward.kinds import DEVICE


def device(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {},
    }


def test_jobs_share_a_transaction_and_a_failing_job_rolls_back_alone(store: Store) -> None:
    """Jobs submitted together commit together; one that fails leaves no rows and no revision
    gap behind, and the others still commit."""
    commits: list[int] = []
    store.on_commit(commits.append)

    def failing(tx: Tx) -> None:
        tx.create(DEVICE, device("doomed"))
        raise Conflict("Device", "default", "doomed", 1, 2)

    async def scenario() -> list[Any]:
        writer = GroupWriter(store)
        runner = asyncio.create_task(writer.run())
        try:
            jobs = [
                writer.submit(
                    lambda tx, i=i: tx.create(DEVICE, device(f"d{i}"))["metadata"][
                        "resourceVersion"
                    ]
                )
                for i in range(5)
            ]
            jobs.insert(2, writer.submit(failing))
            return await asyncio.gather(*jobs, return_exceptions=True)
        finally:
            runner.cancel()

    results = asyncio.run(scenario())
    assert isinstance(results[2], Conflict)
    good = [int(r) for r in results if not isinstance(r, Exception)]
    assert good == [1, 2, 3, 4, 5], "revisions of the failed job were not given back"
    assert commits == [5], "the jobs did not share one transaction"
    names = sorted(o["metadata"]["name"] for o in store.list(DEVICE)[0])
    assert names == ["d0", "d1", "d2", "d3", "d4"]
    assert [r.revision for r in store.changes_after(0)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("nodes", [200])
def test_many_registrations_commit_in_few_transactions(store: Store, nodes: int) -> None:
    """Hellos from many nodes at once are grouped: far fewer commits than nodes."""
    from cloudhub.nodes import NodeRegistry

    registry = NodeRegistry(store, grace_period=40)
    commits: list[int] = []
    store.on_commit(commits.append)

    async def scenario() -> list[int]:
        writer = GroupWriter(store)
        runner = asyncio.create_task(writer.run())
        try:
            return await asyncio.gather(
                *(
                    writer.submit(lambda tx, n=n: registry.register_in(tx, f"n{n}", {}))
                    for n in range(nodes)
                )
            )
        finally:
            runner.cancel()

    assert [r.report_seq for r in asyncio.run(scenario())] == [0] * nodes
    assert len(store.list(DEVICE)[0]) == 0
    assert 1 <= len(commits) < nodes / 10


def test_stopping_mid_commit_tells_each_job_what_happened(store: Store) -> None:
    """A commit under way when the hub stops finishes, and its jobs get their results (they
    are durable); jobs still queued are told the hub is stopping, and wrote nothing."""
    started = threading.Event()

    def slow(tx: Tx) -> str:
        started.set()
        time.sleep(0.3)
        return tx.create(DEVICE, device("slow"))["metadata"]["name"]

    async def scenario() -> tuple[Any, Any]:
        writer = GroupWriter(store)
        runner = asyncio.create_task(writer.run())
        first = asyncio.ensure_future(writer.submit(slow))
        await asyncio.to_thread(started.wait, 5)
        queued = asyncio.ensure_future(writer.submit(lambda tx: tx.create(DEVICE, device("late"))))
        await asyncio.sleep(0)
        runner.cancel()
        return await asyncio.gather(first, queued, return_exceptions=True)

    first, queued = asyncio.run(scenario())
    assert first == "slow"
    assert isinstance(queued, RuntimeError) and "stopping" in str(queued)
    assert [o["metadata"]["name"] for o in store.list(DEVICE)[0]] == ["slow"]


def run_batch(store: Store, *jobs: Any) -> list[Any]:
    """Submit ``jobs`` together (they share one batch) and return each one's outcome."""

    async def scenario() -> list[Any]:
        writer = GroupWriter(store)
        runner = asyncio.create_task(writer.run())
        try:
            async with asyncio.timeout(60):  # a hang guard (a writer that died), not a measure
                return await asyncio.gather(
                    *(writer.submit(j) for j in jobs), return_exceptions=True
                )
        finally:
            runner.cancel()

    return asyncio.run(scenario())


def create(name: str) -> Any:
    return lambda tx: tx.create(DEVICE, device(name))["metadata"]["name"]


def break_the_transaction(tx: Tx) -> None:
    """What a lost connection or a deadlock outside a savepoint leaves: no transaction."""
    tx.conn.exec_driver_sql("ROLLBACK")
    raise RuntimeError("the transaction is gone")


def test_a_job_that_breaks_the_batch_fails_alone(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A job that breaks the shared transaction outside its savepoint fails alone, with its own
    error: the batch is retried job by job and the other jobs commit. Logged once."""
    with caplog.at_level("WARNING"):
        results = run_batch(store, create("d0"), break_the_transaction, create("d1"))
    assert results[0] == "d0" and results[2] == "d1"
    assert isinstance(results[1], RuntimeError) and "gone" in str(results[1])
    assert sorted(o["metadata"]["name"] for o in store.list(DEVICE)[0]) == ["d0", "d1"]
    assert [r.revision for r in store.changes_after(0)] == [1, 2]
    assert len([r for r in caplog.records if "group commit" in r.getMessage()]) == 1


def test_a_transient_failure_gets_one_retry(store: Store) -> None:
    """A batch that fails once (a deadlock, a lost connection) is retried job by job, and a
    job that then succeeds answers its caller with its result."""
    calls = []

    def flaky(tx: Tx) -> str:
        calls.append(1)
        if len(calls) == 1:
            break_the_transaction(tx)
        return tx.create(DEVICE, device("flaky"))["metadata"]["name"]

    assert run_batch(store, create("d0"), flaky, create("d1")) == ["d0", "flaky", "d1"]
    assert len(calls) == 2
    names = sorted(o["metadata"]["name"] for o in store.list(DEVICE)[0])
    assert names == ["d0", "d1", "flaky"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_batch_whose_commit_fails_retries_each_job_alone(store: Store) -> None:
    """When the batch's COMMIT fails (here a deferred constraint), each job runs again in a
    transaction of its own: the one the database refuses fails alone, the others commit."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'poisoned name'; END $$"
        )
        conn.exec_driver_sql(
            "CREATE CONSTRAINT TRIGGER no_poison AFTER INSERT ON objects "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            "WHEN (NEW.name = 'poison') EXECUTE FUNCTION refuse()"
        )
    results = run_batch(store, create("d0"), create("poison"), create("d1"))
    assert results[0] == "d0" and results[2] == "d1"
    assert "poisoned name" in str(results[1])
    assert sorted(o["metadata"]["name"] for o in store.list(DEVICE)[0]) == ["d0", "d1"]
