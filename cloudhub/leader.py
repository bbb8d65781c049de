"""One leader among the hub replicas for fleet-wide duties, through a PostgreSQL advisory lock.

Marking silent nodes NotReady, compacting the change log and pruning uploads and twin
history are the fleet's, not a replica's: run by every replica they would multiply the
database's load by the number of replicas. The replica that holds the session-level
advisory lock ``LEADER_LOCK`` runs them; the others try for it every ``retry`` seconds.

Handing over:

- The holder dies: PostgreSQL ends its session when the connection closes, which frees
  the lock; another replica has it within ``retry``.
- The holder stalls (SIGSTOP, a frozen VM) or is cut off: its lock connection is set to
  ``idle_session_timeout = timeout``, and the holder runs a query on it every ``retry``
  seconds (from a thread of its own, so a busy event loop does not count as a stall),
  so PostgreSQL ends a session that stopped talking after ``timeout``; another
  replica has the lock within ``timeout + retry``. The stalled holder, when it wakes,
  stops counting itself leader at once: leadership is only as good as the last query
  that confirmed it, within half the timeout.

The duties are safe to overlap (each is one statement guarded by the state it changes),
so the instant between a stalled holder waking and its first failed query costs nothing
but a repeated check. SQLite serves one hub process: it always leads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import psycopg
from sqlalchemy import Engine

from cloudhub.db import connect_params
from edgeward.backoff import backoff

log = logging.getLogger(__name__)

#: The advisory lock's key: "edgelead" in ASCII, as a bigint (schema.MIGRATION_LOCK is
#: "edgeward"; advisory locks are per database).
LEADER_LOCK = 0x656467656C656164


class Leadership:
    """Whether this replica leads; :meth:`run` keeps trying for (or holding) the lock."""

    def __init__(self, engine: Engine, timeout: float = 10.0, retry: float = 1.0) -> None:
        self.engine = engine
        self.timeout = timeout
        self.retry = min(retry, timeout / 4)
        self.always = engine.dialect.name != "postgresql"
        self._held = False
        self._confirmed = 0.0

    def leading(self) -> bool:
        """Whether to run fleet-wide duties now."""
        if self.always:
            return True
        return self._held and time.monotonic() - self._confirmed < self.timeout / 2

    async def run(self) -> None:
        """Hold or try for the lead until cancelled, in a thread of its own: a busy event
        loop (thousands of nodes reconnecting) must not miss the confirmations and lose
        the lead to PostgreSQL's idle timeout — only a stalled or cut-off process may."""
        if self.always:
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(stop,), name="leader", daemon=True)
        thread.start()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            stop.set()
            self._held = False

    def _run(self, stop: threading.Event) -> None:
        delays = backoff(self.retry, 2.0, 30.0)
        failing = False
        params = connect_params(self.engine, "cloudhub-leader", self.timeout)
        # a query on a link that went dead fails within half the timeout, not the kernel's
        # two hours (libpq's tcp_user_timeout, in ms; keepalives for an idle link)
        params.setdefault("tcp_user_timeout", int(self.timeout * 500))
        params.setdefault("keepalives_idle", max(1, int(self.timeout / 2)))
        while not stop.is_set():
            try:
                with psycopg.connect(autocommit=True, **params) as conn:
                    conn.execute(f"SET idle_session_timeout = {int(self.timeout * 1000)}")
                    if failing:
                        log.info("leader election: connected to the database again")
                    failing = False
                    delays = backoff(self.retry, 2.0, 30.0)
                    self._hold(conn, stop)
            except (OSError, psycopg.Error) as exc:
                if self._held:
                    log.warning("no longer the leader: lost the database session (%s)", exc)
                elif not failing:
                    log.warning("leader election: cannot reach the database (%s); retrying", exc)
                failing = True
            finally:
                self._held = False
            stop.wait(next(delays))

    def _hold(self, conn: psycopg.Connection[Any], stop: threading.Event) -> None:
        """Try for the lock, or confirm it, every ``retry`` seconds until ``stop``; raises
        when the session is lost."""
        while not stop.is_set():
            started = time.monotonic()
            if self._held:
                conn.execute("SELECT 1")
            else:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
                if row and row[0]:
                    self._held = True
                    log.info("this replica now leads fleet-wide duties (expiry, compaction)")
            if self._held:
                self._confirmed = started
            stop.wait(self.retry)
