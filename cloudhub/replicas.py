"""The hub replicas sharing a database, as each one last said (``schema.hub_replicas``).

Each replica writes its row every ``REFRESH`` seconds: how many node sessions it serves
and whether it leads. A row not refreshed for ``STALE_AFTER`` seconds is a replica that
died or stalls; the leader deletes rows gone for ``FORGET_AFTER``. Rebalancing
(cloudhub/rebalance.py) reads the live rows to know each replica's fair share.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine, delete, insert, select, update

from cloudhub.schema import hub_replicas

log = logging.getLogger(__name__)

REFRESH = 2.0
STALE_AFTER = 10.0
FORGET_AFTER = 300.0


class ReplicaBook:
    """This replica's row, and what the others' rows say."""

    def __init__(self, engine: Engine, replica: str, clock: Callable[[], float] = time.time):
        self.engine = engine
        self.replica = replica
        self.clock = clock
        self.started = clock()

    def refresh(self, sessions: int, leader: bool, flushed: float | None = None) -> None:
        """Say this replica lives: its sessions, whether it leads, and up to when every
        contact it heard is written (NodeRegistry.flushed_through)."""
        now = self.clock()
        values = {"seen": now, "sessions": sessions, "leader": leader, "flushed": flushed}
        with self.engine.begin() as conn:
            found = conn.execute(
                update(hub_replicas).where(hub_replicas.c.id == self.replica).values(**values)
            ).rowcount
            if not found:
                conn.execute(
                    insert(hub_replicas).values(id=self.replica, started=self.started, **values)
                )

    def live(self) -> dict[str, int]:
        """Each live replica's sessions, this one's included."""
        cutoff = self.clock() - STALE_AFTER
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(hub_replicas.c.id, hub_replicas.c.sessions).where(
                    hub_replicas.c.seen >= cutoff
                )
            ).all()
        return {row.id: int(row.sessions) for row in rows}

    def forget_gone(self) -> int:
        """Delete rows of replicas gone for FORGET_AFTER (the leader's duty)."""
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    delete(hub_replicas).where(hub_replicas.c.seen < self.clock() - FORGET_AFTER)
                ).rowcount
            )

    def remove(self) -> None:
        """This replica stops: its row goes, so the others' shares grow at once."""
        with self.engine.begin() as conn:
            conn.execute(delete(hub_replicas).where(hub_replicas.c.id == self.replica))
