"""Node lifecycle on the hub: registration, leases, reports and readiness.

A node's liveness lives in its lease (``node_leases``): a heartbeat time and
its last usage figures, written on every contact without bumping the global
revision, so ten thousand heartbeating nodes do not flood the change log or
every watcher. The Node object itself (and so the revision) changes only on
what an operator watches for: registration, capacity or agent changes, and
Ready ↔ NotReady transitions. Reads merge the lease into ``status``.

A heartbeat from a node known Ready that changes neither its capacity nor its
agent is not written at all: it lands in the live lease (cloudhub/leases.py),
flushed in bulk before each expiry check.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import bindparam, insert, select, update

from cloudhub import devicestatus
from cloudhub.leases import LeaseBook
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


def _status_fields(node: str, body: dict[str, Any]) -> dict[str, Any]:
    """The usage, capacity and nodeInfo of a status report that are fit to keep."""
    fields = {k: v for k, v in body.items() if k in ("usage", "capacity", "nodeInfo")}
    for field in [k for k, v in fields.items() if not _fits(v)]:
        log.warning(
            "node %s: ignored %s in a status report: not an object of at most %d bytes",
            node,
            field,
            MAX_NODE_INFO_BYTES,
        )
        del fields[field]
    return fields


def _usage(node: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """A status report's usage when it has one fit to keep (a bad one is logged)."""
    return _status_fields(node, {"usage": body["usage"]}).get("usage") if "usage" in body else None


def _node_status_report(tx: Tx, node: str, item: ReportItem) -> None:
    body = _status_fields(node, item.body)
    usage = body.get("usage")
    if usage is not None:
        tx.conn.execute(_SET_USAGE, {"b_node": node, "b_usage": json.dumps(usage)})
    current = tx.get(NODE, None, node)
    if current is None:
        return
    status = dict(current.get("status", {}))
    for field in ("capacity", "nodeInfo"):
        if field in body:
            status[field] = body[field]
    tx.replace_status(NODE, None, node, status, current=current)


# Statements built once (building a Core expression per call costs more than running it).
_NODE = bindparam("b_node")
_SET_USAGE = (
    update(node_leases).where(node_leases.c.node == _NODE).values(usage=bindparam("b_usage"))
)
_SET_CONTACT = (
    update(node_leases)
    .where(node_leases.c.node == _NODE)
    .values(heartbeat=bindparam("b_beat"), ready=True)
)
_GET_READY = select(node_leases.c.ready).where(node_leases.c.node == _NODE)
_GET_SEQ = select(node_sync.c.report_seq).where(node_sync.c.node == _NODE)
_SET_SYNC = (
    update(node_sync)
    .where(node_sync.c.node == _NODE)
    .values(report_seq=bindparam("b_seq"), acked_revision=bindparam("b_acked"))
)


#: What the hub does with each kind of outbox row the edge reports.
REPORT_HANDLERS: dict[str, ReportHandler] = {
    TOPIC_NODE_STATUS: _node_status_report,
    TOPIC_TWIN_REPORTED: devicestatus.twin_reported,
    TOPIC_DEVICE_STATE: devicestatus.device_state,
    TOPIC_UPLOAD: devicestatus.upload,
}


class Registration(NamedTuple):
    """What a hello's transaction learnt about the node."""

    #: The highest outbox seq already persisted for it.
    report_seq: int
    #: The capacity its Node holds (None for a new node).
    capacity: Any


class NodeRegistry:
    """Registers nodes, records their reports and marks silent ones NotReady."""

    def __init__(self, store: Store, grace_period: float) -> None:
        self.store = store
        self.grace_period = grace_period
        self.leases = LeaseBook()
        store.live_lease = self.leases.get
        # Silence is counted from this process's start at the earliest: after a hub restart
        # every node gets a whole grace period to reconnect, as Kubernetes' node controller does.
        self.watching_since = store.clock()

    def register(self, name: str, node_info: dict[str, Any]) -> int:
        """A node said hello, in a transaction of its own; see :meth:`register_in`."""
        with self.store.writing() as tx:
            registration = self.register_in(tx, name, node_info)
        return self.registered(name, node_info, registration)

    def register_in(self, tx: Tx, name: str, node_info: dict[str, Any]) -> Registration:
        """Create or refresh the Node and mark it Ready."""
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
            capacity = None
        else:
            status = _mark_ready({**node.get("status", {}), "nodeInfo": node_info}, tx.now)
            tx.replace_status(NODE, None, name, status, current=node)
            capacity = status.get("capacity")
        self._touch_lease(tx, name)
        return Registration(self._report_seq(tx, name), capacity)

    def registered(self, name: str, node_info: dict[str, Any], registration: Registration) -> int:
        """:meth:`register_in`'s transaction has committed: later heartbeats need none.

        Returns the highest seq the hub holds for the node, flushed or not.
        """
        self.leases.record_written(
            name,
            self.store.clock(),
            registration.report_seq,
            node_info=node_info,
            capacity=registration.capacity,
        )
        lease = self.leases.get(name)
        return registration.report_seq if lease is None else lease.report_seq

    def record_reports(self, name: str, items: tuple[ReportItem, ...], acked_revision: int) -> int:
        """Record a report frame, in a transaction of its own when it needs one; returns
        the new high seq. See :meth:`absorb` and :meth:`record_reports_in`."""
        high = self.absorb(name, items, acked_revision)
        if high is None:
            with self.store.writing() as tx:
                high = self.record_reports_in(tx, name, items, acked_revision)
            self.reports_written(name, items, high)
        return high

    def absorb(self, name: str, items: tuple[ReportItem, ...], acked_revision: int) -> int | None:
        """Record a frame that is only heartbeats in the live lease; returns the new high seq.

        None when the frame needs a transaction (:meth:`record_reports_in`, then
        :meth:`reports_written`): rows other than node status, a changed capacity or
        nodeInfo, or a node not known Ready. The contact is noted either way.
        """
        now = self.store.clock()
        lease = self.leases.get(name)
        if lease is None or not lease.ready:
            self.leases.touch(name, now)
            return None
        usage = None
        for item in items:
            if item.seq <= lease.report_seq:
                continue  # a replay: contact, nothing to apply
            body = item.body
            if (
                item.topic != TOPIC_NODE_STATUS
                or body.get("capacity", lease.capacity) != lease.capacity
                or body.get("nodeInfo", lease.node_info) != lease.node_info
            ):
                self.leases.touch(name, now)
                return None
            if (fresh := _usage(name, body)) is not None:
                usage = fresh
        high = max(lease.report_seq, items[-1].seq)
        if not self.leases.record_contact(name, now, high, acked_revision, usage):
            return None  # an expiry check claimed it meanwhile
        return high

    def reports_written(self, name: str, items: tuple[ReportItem, ...], high: int) -> None:
        """:meth:`record_reports_in`'s transaction has committed at ``high``."""
        fields: dict[str, Any] = {}
        for item in items:
            if item.topic == TOPIC_NODE_STATUS:
                for key, field in (("capacity", "capacity"), ("nodeInfo", "node_info")):
                    if key in item.body:
                        fields[field] = item.body[key]
                if "usage" in item.body:
                    fields["usage"] = _usage(name, item.body)
        self.leases.record_written(name, self.store.clock(), high, **fields)

    def record_reports_in(
        self, tx: Tx, name: str, items: tuple[ReportItem, ...], acked_revision: int
    ) -> int:
        """Persist a node's outbox rows, skipping replays; returns the new high seq."""
        seq = self._report_seq(tx, name)
        self._touch_lease(tx, name)
        superseded = devicestatus.superseded(items)
        for item in items:
            if item.seq <= seq or item.seq in superseded:
                continue  # a replay of a row we already hold, or replaced later in the frame
            handler = REPORT_HANDLERS.get(item.topic)
            if handler is None:
                log.warning("node %s: dropped report with unknown topic %r", name, item.topic)
                continue
            handler(tx, name, item)
        high = max(seq, items[-1].seq)
        tx.conn.execute(_SET_SYNC, {"b_node": name, "b_seq": high, "b_acked": acked_revision})
        return high

    @staticmethod
    def _report_seq(tx: Tx, name: str) -> int:
        seq = tx.conn.execute(_GET_SEQ, {"b_node": name}).scalar_one_or_none()
        if seq is None:
            tx.conn.execute(insert(node_sync).values(node=name, report_seq=0, acked_revision=0))
            return 0
        return int(seq)

    def _touch_lease(self, tx: Tx, name: str) -> None:
        """Record contact; a node that was NotReady becomes Ready again."""
        was_ready = tx.conn.execute(_GET_READY, {"b_node": name}).scalar_one_or_none()
        if was_ready is None:
            tx.conn.execute(
                insert(node_leases).values(node=name, heartbeat=tx.now, ready=True, usage="{}")
            )
        else:
            tx.conn.execute(_SET_CONTACT, {"b_node": name, "b_beat": tx.now})
        if not was_ready:
            node = tx.get(NODE, None, name)
            if node is not None and not is_ready(node):
                tx.replace_status(NODE, None, name, _mark_ready(node.get("status", {}), tx.now))
                log.info("node %s is Ready", name)

    def expire(self) -> list[str]:
        """Mark NotReady every Ready node silent for longer than the grace period."""
        self.flush()
        cutoff = self.store.clock() - self.grace_period
        if cutoff <= self.watching_since:
            return []
        with self.store.reading() as conn:
            silent = list(
                conn.execute(
                    select(node_leases.c.node).where(
                        node_leases.c.ready.is_(True), node_leases.c.heartbeat < cutoff
                    )
                ).scalars()
            )
        expired = []
        for name in [n for n in silent if self.leases.claim_silent(n, cutoff)]:
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
                    tx.replace_status(NODE, None, name, status, current=node)
                    expired.append(name)
                    log.warning("node %s is NotReady: no contact for %gs", name, self.grace_period)
        return expired

    def flush(self) -> int:
        """Write the live leases changed since the last flush; returns how many."""
        return self.leases.flush(self.store.engine)

    async def run_expiry(self) -> None:
        """Flush live leases and check for silent nodes several times per grace period."""
        interval = max(0.2, min(5.0, self.grace_period / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.expire)
            except Exception:
                log.exception("node lifecycle: checking leases failed; retrying")
