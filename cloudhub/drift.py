"""Drift detection: does each node's cache hold what the hub routed to it?

Each edge reports, with its usage, the revision its cache is at and a digest of what it
holds (edgeward.sync.cache_digest). Every ``drift_check_interval`` the hub judges each
node connected to it whose (revision, digest) it has not judged yet:

- it cannot judge while the change log holds a change for the node after that revision
  (the edge has not got everything yet: it will report again), nor when the log was
  compacted past it or the revision is ahead of the hub;
- otherwise what the node should hold at that revision is what is routed to it now, and
  the hub digests that the way the edge does (bodies without their status and
  resourceVersion: edgeward.sync.cache_digest): equal is ``Synced``, different is
  ``Drift``.

The verdict goes on the Node (``status.cache``: state, revision, checkedTime) only when
it changes, so a steady fleet adds no revisions. ``edgeward resync NODE`` (POST
``/api/v1/nodes/{name}/resync``) makes the node's next session start with a snapshot,
which replaces its cache; a connected node is closed so it reconnects at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sqlalchemy import func, or_, select

from cloudhub.leases import LeaseBook
from cloudhub.schema import changes, objects, revision
from cloudhub.store import Store, rfc3339
from edgeward.errors import NotFound
from edgeward.kinds import ALL_NODES, NODE
from edgeward.sync import cache_digest

log = logging.getLogger(__name__)

SYNCED = "Synced"
DRIFT = "Drift"


def judge(store: Store, node: str, edge_revision: int, edge_digest: str) -> str | None:
    """``Synced`` or ``Drift`` for a node reporting ``edge_digest`` at ``edge_revision``;
    None when that cannot be told yet (see the module's docstring)."""
    routed = or_(objects.c.route == node, objects.c.route == ALL_NODES)
    with store.reading() as conn:
        compacted, head = conn.execute(select(revision.c.compacted, revision.c.head)).one()
        if not compacted <= edge_revision <= head:
            return None
        later = conn.execute(
            select(func.count())
            .select_from(changes)
            .where(
                changes.c.revision > edge_revision,
                or_(
                    changes.c.route == node,
                    changes.c.route == ALL_NODES,
                    changes.c.prev_route == node,
                    changes.c.prev_route == ALL_NODES,
                ),
            )
        ).scalar_one()
        if later:
            return None
        rows = conn.execute(
            select(objects.c.kind, objects.c.namespace, objects.c.name, objects.c.body).where(
                routed
            )
        ).all()
    ours = cache_digest((k, ns, n, json.loads(body)) for k, ns, n, body in rows)
    return SYNCED if ours == edge_digest else DRIFT


class DriftChecker:
    """Judges the nodes this hub process talks to, every ``interval`` seconds."""

    def __init__(self, store: Store, leases: LeaseBook, interval: float) -> None:
        self.store = store
        self.leases = leases
        self.interval = interval
        #: (revision, digest) last judged per node: the same report is not judged twice.
        self._judged: dict[str, tuple[int, str]] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.check)
            except Exception:
                log.exception("drift check failed; trying again in %g s", self.interval)

    def forget(self, node: str) -> None:
        """Judge ``node`` again at its next report (a resync was asked, the Node deleted)."""
        self._judged.pop(node, None)

    def check(self) -> dict[str, str]:
        """Judge every node with a report not judged yet; the verdicts given."""
        verdicts = {}
        for node, usage in self.leases.usages():
            reported = _reported(usage)
            if reported is None or self._judged.get(node) == reported:
                continue
            verdict = judge(self.store, node, *reported)
            if verdict is None:
                continue
            self._judged[node] = reported
            verdicts[node] = verdict
            self._record(node, verdict, reported[0])
        return verdicts

    def _record(self, node: str, verdict: str, edge_revision: int) -> None:
        try:
            seen = self.store.get(NODE, None, node)
        except NotFound:
            return
        if (seen.get("status", {}).get("cache") or {}).get("state") == verdict:
            return  # no transaction, no revision: nothing changed
        with self.store.writing() as tx:
            current = tx.get(NODE, None, node)
            if current is None:
                return
            status = dict(current.get("status", {}))
            if (status.get("cache") or {}).get("state") == verdict:
                return
            status["cache"] = {
                "state": verdict,
                "revision": edge_revision,
                "checkedTime": rfc3339(tx.now),
            }
            tx.replace_status(NODE, None, node, status, current=current)
        if verdict == DRIFT:
            log.warning(
                "node %s: its cache at revision %d differs from what the hub routed to it; "
                "'edgeward resync %s' makes it take a snapshot",
                node,
                edge_revision,
                node,
            )
        else:
            log.info("node %s: its cache matches the hub at revision %d", node, edge_revision)


def _reported(usage: Any) -> tuple[int, str] | None:
    if not isinstance(usage, dict):
        return None
    rev, digest = usage.get("cacheRevision"), usage.get("cacheDigest")
    if type(rev) is not int or rev < 0 or not isinstance(digest, str) or len(digest) != 64:
        return None
    return rev, digest
