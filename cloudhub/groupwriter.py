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

A job submitted ``lock_free`` (node bookkeeping that usually writes no object: a
lease flush, a hello) runs first, with the batch's other lock-free jobs, in a
transaction that does not take the revision lock (cloudhub/store.py); one that
turns out to write an object is rolled back to its savepoint and runs again in
the batch's locking transaction, which runs the other jobs; the lock-free ones
are answered at their own commit. So replicas' heartbeats and reconnects do not
queue on the revision row, and never wait for it holding a node's rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from cloudhub.store import RevisionLockNeeded, Store, Tx

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[Tx], Any]

#: Jobs per transaction at most.
MAX_BATCH = 500


class WriterStopped(RuntimeError):
    """The hub is stopping: the job was not run (or its outcome is unknown)."""

    def __init__(self) -> None:
        super().__init__("the hub is stopping")


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
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[Any], bool]] = asyncio.Queue()

    async def submit(self, job: Callable[[Tx], T], lock_free: bool = False) -> T:
        """Run ``job(tx)`` in a shared transaction; returns its result once committed.

        ``lock_free``: try it in a transaction without the revision lock first (the
        module's docstring); the job must check ``tx.require_lock()`` before it locks
        any row it may later need an object write for.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((job, future, lock_free))
        return await future

    async def run(self) -> None:
        try:
            await self._serve()
        finally:
            # stopping: whoever still waits must not wait forever
            while not self._queue.empty():
                _job, future, _lock_free = self._queue.get_nowait()
                if not future.done():
                    future.set_exception(WriterStopped())

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [item for item in batch if not item[1].cancelled()]
            split = self.store.row_locks
            first = [(job, fut) for job, fut, free in live if free and split]
            rest = [(job, fut) for job, fut, free in live if not (free and split)]
            if first:
                # answered at their own commit: they do not wait for the locking phase
                rest = await self._phase(first, lock_free=True) + rest
            if rest:
                await self._phase(rest, lock_free=False)

    async def _phase(
        self, jobs: list[tuple[Job, asyncio.Future[Any]]], lock_free: bool
    ) -> list[tuple[Job, asyncio.Future[Any]]]:
        """Commit ``jobs`` together and answer them; returns those that need the revision
        lock this (lock-free) transaction did not hold."""
        loop = asyncio.get_running_loop()
        commit = loop.run_in_executor(None, self._commit, [job for job, _ in jobs], lock_free)
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            # Stopping: the thread commits or fails on its own; tell each job which.
            await asyncio.wait([commit])
            for _, future in self._settle(jobs, commit):
                future.set_exception(WriterStopped())
            raise
        except Exception:
            pass  # _settle hands the failure to each job: the writer must go on
        return self._settle(jobs, commit)

    @staticmethod
    def _settle(
        jobs: list[tuple[Job, asyncio.Future[Any]]], commit: asyncio.Future[Any]
    ) -> list[tuple[Job, asyncio.Future[Any]]]:
        """Answer each job with its outcome; returns those left to run with the lock."""
        exc = commit.exception()
        outcomes = [(False, exc)] * len(jobs) if exc is not None else commit.result()
        again = []
        for (job, future), outcome in zip(jobs, outcomes, strict=True):
            if outcome is None:
                again.append((job, future))
                continue
            ok, value = outcome
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        return again

    def _commit(self, jobs: list[Job], lock_free: bool = False) -> list[tuple[bool, Any] | None]:
        """Run ``jobs`` in one transaction, each in its savepoint; when the transaction
        fails as a whole, each of them alone. An outcome is None for a job that needs the
        revision lock a lock-free transaction does not hold."""
        started = time.perf_counter()
        try:
            with self.store.writing(lock_free=lock_free) as tx:
                return self._run_each(tx, jobs)
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
        return [self._commit_alone(job, lock_free) for job in jobs]

    @staticmethod
    def _run_each(tx: Tx, jobs: list[Job]) -> list[tuple[bool, Any] | None]:
        """Each job in its own savepoint: (ok, result or exception), or None for one that
        needs the revision lock this transaction does not hold."""
        outcomes: list[tuple[bool, Any] | None] = []
        for job in jobs:
            mark = tx.mark()
            savepoint = tx.conn.begin_nested()
            try:
                result = job(tx)
                tx.flush_history()
                savepoint.commit()
                outcomes.append((True, result))
            except RevisionLockNeeded:
                savepoint.rollback()
                tx.rewind(mark)
                outcomes.append(None)
            except Exception as exc:
                savepoint.rollback()
                tx.rewind(mark)  # the revisions it took are given back with its rows
                outcomes.append((False, exc))
        return outcomes

    def _commit_alone(self, job: Job, lock_free: bool) -> tuple[bool, Any] | None:
        try:
            with self.store.writing(lock_free=lock_free) as tx:
                result = job(tx)
        except RevisionLockNeeded:
            return None  # rolled back: it runs again with the lock
        except Exception as exc:
            return False, exc
        return True, result


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
