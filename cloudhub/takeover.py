"""Whether the nodes of a replica that died or stopped are still arriving at the others.

When a replica dies its nodes all lose their link at once and say hello to the
survivors; a large fleet takes longer to get through than the grace period
(thousands of TLS handshakes and hellos on the survivors' CPUs). Their silence
then says nothing about the nodes: it is the hub's side that failed, and each
node is seen again as soon as a survivor gets to it. So the leader holds the
NotReady marks of a gone replica's nodes for as long as that takeover makes
progress: it expires them only once a whole grace period has passed since the
replica's last sign of life *and* since the last of its nodes arrived elsewhere.
A node that died together with the replica is marked a grace period after the
takeover ends; while it goes on such a node still shows Ready (docs/ha.md,
"Failover").

Progress is counted by the leader from the database alone: the number of Ready
leases each gone replica still owns falls as its nodes say hello elsewhere
(their hello moves ``node_leases.owner``). A new leader starts counting from the
gone replica's last sign of life.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, or_, select

from cloudhub.replicas import STALE_AFTER
from cloudhub.schema import hub_replicas, node_leases


@dataclass
class _Takeover:
    #: Ready leases the gone replica still owned at the last look.
    remaining: int
    #: When it last owned fewer than before (its last sign of life at first).
    progress_at: float


class TakeoverWatch:
    """The leader's view of the takeovers under way, one per gone replica."""

    def __init__(self, replica: str) -> None:
        self.replica = replica
        self._takeovers: dict[str, _Takeover] = {}

    def look(self, conn: Connection, now: float, since: float) -> dict[str, float]:
        """Each gone replica still owning Ready leases, with when its takeover last made
        progress. A replica is gone when its row is older than STALE_AFTER or absent; an
        absent one (a process before a restart) counts from ``since``, when the leader
        began to watch."""
        seen = hub_replicas.c.seen
        rows = conn.execute(
            select(node_leases.c.owner, seen, func.count())
            .select_from(
                node_leases.outerjoin(hub_replicas, hub_replicas.c.id == node_leases.c.owner)
            )
            .where(
                node_leases.c.ready.is_(True),
                node_leases.c.owner.is_not(None),
                node_leases.c.owner != self.replica,
                or_(seen.is_(None), seen < now - STALE_AFTER),
            )
            .group_by(node_leases.c.owner, seen)
        ).all()
        takeovers = {}
        for owner, last_seen, remaining in rows:
            known = self._takeovers.get(owner)
            if known is None:
                known = _Takeover(remaining, since if last_seen is None else last_seen)
            elif remaining < known.remaining:
                known = _Takeover(remaining, now)
            takeovers[owner] = known
        self._takeovers = takeovers
        return {owner: t.progress_at for owner, t in takeovers.items()}

    def marked(self, owner: str | None) -> None:
        """The leader marked one of ``owner``'s nodes NotReady: not progress."""
        known = self._takeovers.get(owner) if owner is not None else None
        if known is not None:
            known.remaining -= 1

    def forget(self) -> None:
        """This replica stopped leading: what it saw may be stale when it leads again."""
        self._takeovers = {}
