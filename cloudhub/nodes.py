"""Node lifecycle on the hub: registration, leases, reports and readiness.

A node's liveness lives in its lease (``node_leases``): a heartbeat time and
its last usage figures, written on every contact without bumping the global
revision, so ten thousand heartbeating nodes do not flood the change log or
every watcher. The Node object itself (and so the revision) changes only on
what an operator watches for: registration, capacity or agent changes, and
Ready ↔ NotReady transitions. Reads merge the lease into ``status``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert, select, update

from cloudhub import devicestatus
from cloudhub.schema import node_leases, node_sync
from cloudhub.store import Store, Tx, rfc3339
from edgeward.kinds import CORE_API, NODE
from edgeward.protocol import (
    MAX_NODE_INFO_BYTES,
    TOPIC_DEVICE_STATE,
    TOPIC_NODE_STATUS,
    TOPIC_TWIN_REPORTED,
    TOPIC_UPLOAD,
    ReportItem,
)

log = logging.getLogger(__name__)

ReportHandler = Callable[[Tx, str, ReportItem], None]


def ready_condition(
    status: dict[str, Any], value: str, reason: str, message: str, now: float
) -> dict[str, Any]:
    """``status`` with its Ready condition set; the transition time moves only on a change."""
    conditions = [c for c in status.get("conditions", []) if c.get("type") != "Ready"]
    previous = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
    since = (
        previous["lastTransitionTime"]
        if previous is not None and previous.get("status") == value
        else rfc3339(now)
    )
    ready = {
        "type": "Ready",
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    return {**status, "conditions": [ready, *conditions]}


def _mark_ready(status: dict[str, Any], now: float) -> dict[str, Any]:
    return ready_condition(status, "True", "EdgecoreReady", "edgecore is posting status", now)


def is_ready(node: dict[str, Any]) -> bool:
    for cond in node.get("status", {}).get("conditions", []):
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _fits(part: Any) -> bool:
    return isinstance(part, dict) and len(json.dumps(part)) <= MAX_NODE_INFO_BYTES


def _node_status_report(tx: Tx, node: str, item: ReportItem) -> None:
    body = {k: v for k, v in item.body.items() if k in ("usage", "capacity", "nodeInfo")}
    for field in [k for k, v in body.items() if not _fits(v)]:
        log.warning(
            "node %s: ignored %s in a status report: not an object of at most %d bytes",
            node,
            field,
            MAX_NODE_INFO_BYTES,
        )
        del body[field]
    usage = body.get("usage")
    if usage is not None:
        tx.conn.execute(
            update(node_leases).where(node_leases.c.node == node).values(usage=json.dumps(usage))
        )
    current = tx.get(NODE, None, node)
    if current is None:
        return
    status = dict(current.get("status", {}))
    for field in ("capacity", "nodeInfo"):
        if field in body:
            status[field] = body[field]
    tx.replace_status(NODE, None, node, status)


#: What the hub does with each kind of outbox row the edge reports.
REPORT_HANDLERS: dict[str, ReportHandler] = {
    TOPIC_NODE_STATUS: _node_status_report,
    TOPIC_TWIN_REPORTED: devicestatus.twin_reported,
    TOPIC_DEVICE_STATE: devicestatus.device_state,
    TOPIC_UPLOAD: devicestatus.upload,
}


class NodeRegistry:
    """Registers nodes, records their reports and marks silent ones NotReady."""

    def __init__(self, store: Store, grace_period: float) -> None:
        self.store = store
        self.grace_period = grace_period

    def register(self, name: str, node_info: dict[str, Any]) -> int:
        """A node said hello, in a transaction of its own; see :meth:`register_in`."""
        with self.store.writing() as tx:
            return self.register_in(tx, name, node_info)

    def register_in(self, tx: Tx, name: str, node_info: dict[str, Any]) -> int:
        """Create or refresh the Node and mark it Ready.

        Returns the highest outbox seq already persisted for it.
        """
        node = tx.get(NODE, None, name)
        if node is None:
            tx.create(
                NODE,
                {
                    "apiVersion": CORE_API,
                    "kind": NODE.name,
                    "metadata": {"name": name},
                    "spec": {},
                    "status": _mark_ready({"nodeInfo": node_info}, tx.now),
                },
            )
        else:
            status = _mark_ready({**node.get("status", {}), "nodeInfo": node_info}, tx.now)
            tx.replace_status(NODE, None, name, status)
        self._touch_lease(tx, name)
        return self._report_seq(tx, name)

    def record_reports(self, name: str, items: tuple[ReportItem, ...], acked_revision: int) -> int:
        """Persist reports in a transaction of their own; see :meth:`record_reports_in`."""
        with self.store.writing() as tx:
            return self.record_reports_in(tx, name, items, acked_revision)

    def record_reports_in(
        self, tx: Tx, name: str, items: tuple[ReportItem, ...], acked_revision: int
    ) -> int:
        """Persist a node's outbox rows, skipping replays; returns the new high seq."""
        seq = self._report_seq(tx, name)
        self._touch_lease(tx, name)
        for item in items:
            if item.seq <= seq:
                continue  # a replay of a row we already hold
            handler = REPORT_HANDLERS.get(item.topic)
            if handler is None:
                log.warning("node %s: dropped report with unknown topic %r", name, item.topic)
                continue
            handler(tx, name, item)
        high = max(seq, items[-1].seq)
        tx.conn.execute(
            update(node_sync)
            .where(node_sync.c.node == name)
            .values(report_seq=high, acked_revision=acked_revision)
        )
        return high

    @staticmethod
    def _report_seq(tx: Tx, name: str) -> int:
        seq = tx.conn.execute(
            select(node_sync.c.report_seq).where(node_sync.c.node == name)
        ).scalar_one_or_none()
        if seq is None:
            tx.conn.execute(insert(node_sync).values(node=name, report_seq=0, acked_revision=0))
            return 0
        return int(seq)

    def _touch_lease(self, tx: Tx, name: str) -> None:
        """Record contact; a node that was NotReady becomes Ready again."""
        was_ready = tx.conn.execute(
            select(node_leases.c.ready).where(node_leases.c.node == name)
        ).scalar_one_or_none()
        if was_ready is None:
            tx.conn.execute(
                insert(node_leases).values(node=name, heartbeat=tx.now, ready=True, usage="{}")
            )
        else:
            tx.conn.execute(
                update(node_leases)
                .where(node_leases.c.node == name)
                .values(heartbeat=tx.now, ready=True)
            )
        if not was_ready:
            node = tx.get(NODE, None, name)
            if node is not None and not is_ready(node):
                tx.replace_status(NODE, None, name, _mark_ready(node.get("status", {}), tx.now))
                log.info("node %s is Ready", name)

    def expire(self) -> list[str]:
        """Mark NotReady every Ready node silent for longer than the grace period."""
        cutoff = self.store.clock() - self.grace_period
        with self.store.reading() as conn:
            silent = list(
                conn.execute(
                    select(node_leases.c.node).where(
                        node_leases.c.ready.is_(True), node_leases.c.heartbeat < cutoff
                    )
                ).scalars()
            )
        expired = []
        for name in silent:
            with self.store.writing() as tx:
                claimed = tx.conn.execute(
                    update(node_leases)
                    .where(
                        node_leases.c.node == name,
                        node_leases.c.ready.is_(True),
                        node_leases.c.heartbeat < cutoff,
                    )
                    .values(ready=False)
                ).rowcount
                node = tx.get(NODE, None, name) if claimed else None
                if node is not None:
                    status = ready_condition(
                        node.get("status", {}),
                        "Unknown",
                        "NodeStatusUnknown",
                        f"edgecore stopped posting status (no contact for over "
                        f"{self.grace_period:g}s)",
                        tx.now,
                    )
                    tx.replace_status(NODE, None, name, status)
                    expired.append(name)
                    log.warning("node %s is NotReady: no contact for %gs", name, self.grace_period)
        return expired

    async def run_expiry(self) -> None:
        """Check for silent nodes several times per grace period, forever."""
        interval = max(0.2, min(5.0, self.grace_period / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.expire)
            except Exception:
                log.exception("node lifecycle: checking leases failed; retrying")
