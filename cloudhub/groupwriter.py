"""Group commit: many sessions' writes share one transaction.

Every node's hello and every report frame is a small write, and SQLite (or a
PostgreSQL commit) costs a disk sync each: ten thousand nodes heartbeating
would queue for the write lock one by one. The group writer takes whatever
jobs are waiting, runs each in its own savepoint inside one transaction, and
resolves each job's future once that transaction has committed — so a node is
acknowledged only after its rows are durable, and one failing job rolls back
only itself.

When the batch's transaction fails as a whole — its commit, or an error outside
any job's savepoint (a deadlock or serialization failure on PostgreSQL, a lost
connection, SQLite busy, a job that broke the transaction) — each of its jobs
runs again alone, in a transaction of its own: a job that cannot be written
fails alone, and a transient failure gets one retry. A job may therefore run
twice; every job is a function of the database it reads (what a failed run
wrote was rolled back with it), and one that writes what it captured before
(the lease flush) writes the same rows again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from cloudhub.store import Store, Tx

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[Tx], Any]

#: Jobs per transaction at most.
MAX_BATCH = 500


class GroupWriter:
    def __init__(
        self,
        store: Store,
        max_batch: int = MAX_BATCH,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        """``on_commit(jobs, started)`` hears of each group commit once it has ended
        (``started``: its time.perf_counter()), for the hub's metrics."""
        self.store = store
        self.max_batch = max_batch
        self.on_commit = on_commit
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[Any]]] = asyncio.Queue()

    async def submit(self, job: Callable[[Tx], T]) -> T:
        """Run ``job(tx)`` in a shared transaction; returns its result once committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((job, future))
        return await future

    async def run(self) -> None:
        try:
            await self._serve()
        finally:
            # stopping: whoever still waits must not wait forever
            while not self._queue.empty():
                _job, future = self._queue.get_nowait()
                if not future.done():
                    future.set_exception(RuntimeError("the hub is stopping"))

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(job, fut) for job, fut in batch if not fut.cancelled()]
            loop = asyncio.get_running_loop()
            commit = loop.run_in_executor(None, self._commit, [job for job, _ in live])
            try:
                await asyncio.shield(commit)
            except asyncio.CancelledError:
                # Stopping: the thread commits or fails on its own; tell each job which.
                await asyncio.wait([commit])
                self._settle(live, commit)
                raise
            except Exception:
                pass  # _settle hands the failure to each job: the writer must go on
            self._settle(live, commit)

    @staticmethod
    def _settle(live: list[tuple[Job, asyncio.Future[Any]]], commit: asyncio.Future[Any]) -> None:
        exc = commit.exception()
        outcomes = [(False, exc)] * len(live) if exc is not None else commit.result()
        for (_, future), (ok, value) in zip(live, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _commit(self, jobs: list[Job]) -> list[tuple[bool, Any]]:
        started = time.perf_counter()
        try:
            return self._commit_together(jobs)
        except Exception as exc:
            log.warning(
                "group commit of %d jobs failed (%s); running each alone",
                len(jobs),
                _one_line(exc),
                exc_info=exc,
            )
        finally:
            if self.on_commit is not None:
                self.on_commit(len(jobs), started)
        return [self._commit_alone(job) for job in jobs]

    def _commit_together(self, jobs: list[Job]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with self.store.writing() as tx:
            for job in jobs:
                mark = tx.mark()
                savepoint = tx.conn.begin_nested()
                try:
                    result = job(tx)
                    tx.flush_history()
                    savepoint.commit()
                    outcomes.append((True, result))
                except Exception as exc:
                    savepoint.rollback()
                    tx.rewind(mark)  # the revisions it took are given back with its rows
                    outcomes.append((False, exc))
        return outcomes

    def _commit_alone(self, job: Job) -> tuple[bool, Any]:
        try:
            with self.store.writing() as tx:
                result = job(tx)
        except Exception as exc:
            return False, exc
        return True, result


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
