"""The leader election on a real PostgreSQL (cloudhub/leader.py): one lead at a time, kept
through a busy event loop, lost to the idle timeout only by a process that stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from cloudhub.db import open_engine
from cloudhub.leader import Leadership
from tests.support.postgres import PostgresCluster
from tests.support.procs import wait_for

TIMEOUT = 2.0


@pytest.fixture
def pg_engine(postgres: PostgresCluster) -> Iterator[Engine]:
    engine = open_engine(postgres.create_database("leader"))
    try:
        yield engine
    finally:
        engine.dispose()


def test_a_blocked_event_loop_keeps_the_lead(
    pg_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Thousands of nodes reconnecting can hold a replica's event loop for seconds: the
    confirmations run on their own thread, so PostgreSQL's idle timeout never ends the
    lead of a process that is alive, and no second replica takes it."""

    async def scenario() -> tuple[bool, bool]:
        first, second = Leadership(pg_engine, TIMEOUT), Leadership(pg_engine, TIMEOUT)
        tasks = [asyncio.create_task(first.run())]
        await asyncio.to_thread(wait_for, first.leading, 10, "the first to lead")
        tasks.append(asyncio.create_task(second.run()))
        await asyncio.sleep(0.1)
        time.sleep(2.5 * TIMEOUT)  # the loop is blocked: nothing of it runs
        await asyncio.sleep(2 * first.retry)
        outcome = first.leading(), second.leading()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return outcome

    assert asyncio.run(scenario()) == (True, False)
    lost = [r.getMessage() for r in caplog.records if "no longer the leader" in r.getMessage()]
    assert lost == []


def test_a_lone_sqlite_hub_always_leads(tmp_path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        assert Leadership(engine).leading()
    finally:
        engine.dispose()
