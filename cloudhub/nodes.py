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
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import bindparam, func, insert, or_, select, update

from cloudhub import devicestatus, events
from cloudhub.leases import LeaseBook, session_states, write_leases
from cloudhub.schema import hub_replicas, node_leases, node_sync
from cloudhub.store import SESSIONS_CHANNEL, Store, Tx, rfc3339
from cloudhub.takeover import TakeoverWatch
from edgeward import storable
from edgeward.errors import EdgewardError, NotFound, ProtocolError, ReportRefused
from edgeward.kinds import CORE_API, NODE
from edgeward.protocol import (
    BAD_MESSAGE,
    MAX_NODE_INFO_BYTES,
    MAX_SEQ,
    TOPIC_DEVICE_STATE,
    TOPIC_NODE_OUTAGE,
    TOPIC_NODE_STATUS,
    TOPIC_TWIN_REPORTED,
    TOPIC_UPLOAD,
    Rejected,
    ReportItem,
)

if TYPE_CHECKING:
    from cloudhub.groupwriter import GroupWriter

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


def mark_ready(status: dict[str, Any], now: float) -> dict[str, Any]:
    return ready_condition(status, "True", "EdgecoreReady", "edgecore is posting status", now)


def new_node(name: str, node_info: dict[str, Any], now: float) -> dict[str, Any]:
    """The Node a node's first hello creates: Ready, with the nodeInfo it sent."""
    return {
        "apiVersion": CORE_API,
        "kind": NODE.name,
        "metadata": {"name": name},
        "spec": {},
        "status": mark_ready({"nodeInfo": node_info}, now),
    }


def is_ready(node: dict[str, Any]) -> bool:
    for cond in node.get("status", {}).get("conditions", []):
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


#: The parts of a node/status report the hub keeps, each a free-form object.
STATUS_PARTS = ("usage", "capacity", "nodeInfo", "outbox")


def _status_parts(body: dict[str, Any]) -> dict[str, Any]:
    """The usage, capacity, nodeInfo and outbox of a status report; ReportRefused when one
    is not an object of storable JSON within MAX_NODE_INFO_BYTES."""
    return {
        k: devicestatus.kept_object(body[k], MAX_NODE_INFO_BYTES, f"node/status: {k}")
        for k in STATUS_PARTS
        if k in body
    }


def _node_status_report(tx: Tx, node: str, item: ReportItem) -> None:
    parts = _status_parts(item.body)
    usage = parts.get("usage")
    if usage is not None:
        tx.conn.execute(_SET_USAGE, {"b_node": node, "b_usage": storable.dumps(usage)})
    current = tx.get(NODE, None, node)
    if current is None:
        return
    status = dict(current.get("status", {}))
    for field in ("capacity", "nodeInfo", "outbox"):
        if field in parts:
            status[field] = parts[field]
    tx.replace_status(NODE, None, node, status, current=current)


#: Outage reports kept on a Node, newest first.
KEPT_OUTAGES = 5
_OUTAGE_COUNTERS = ("restarts", "buffered", "coalesced", "expired", "dropped", "servedLocally")


def _node_outage_report(tx: Tx, node: str, item: ReportItem) -> None:
    """A node's time alone (edgecore/outage.py): kept on its Node, the last few."""
    body = item.body
    start, end = body.get("start"), body.get("end")
    if (
        not all(
            isinstance(t, int | float) and not isinstance(t, bool) and 0 < t < 1e11
            for t in (start, end)
        )
        or end < start
    ):
        raise ReportRefused("node/outage: start and end must be times, start before end")
    outage: dict[str, Any] = {"start": rfc3339(start), "end": rfc3339(end)}
    for counter in _OUTAGE_COUNTERS:
        value = body.get(counter, 0)
        if type(value) is not int or not 0 <= value <= storable.INT64_MAX:
            raise ReportRefused(f"node/outage: {counter} must be a count")
        outage[counter] = value
    outage["durationSeconds"] = round(end - start, 3)
    current = tx.get(NODE, None, node)
    if current is None:
        return
    status = dict(current.get("status", {}))
    kept = [o for o in status.get("outages") or [] if o.get("start") != outage["start"]]
    status["outages"] = sorted([outage, *kept], key=lambda o: o["start"], reverse=True)[
        :KEPT_OUTAGES
    ]
    tx.replace_status(NODE, None, node, status, current=current)


def _check_positions(items: tuple[ReportItem, ...], acked_revision: int) -> None:
    """Refuse seqs and revisions no column may hold (the session checks them first; this is
    the last line: one stored position past them poisons the node for good)."""
    if not storable.is_int64(acked_revision) or acked_revision < 0:
        raise ProtocolError(BAD_MESSAGE, "report: the acknowledged revision is outside int64")
    if not all(0 < item.seq <= MAX_SEQ for item in items):
        raise ProtocolError(BAD_MESSAGE, f"report: seq must be an integer from 1 to {MAX_SEQ}")


#: A rejected row's reason goes back to the edge in report_ack: one line, not a document.
MAX_REASON_CHARS = 300


def _rejected(name: str, item: ReportItem, exc: Exception) -> Rejected:
    """The reason a row is not stored, logged once: a refusal in one line, anything else
    (a bug, an object the store refuses) with its traceback."""
    if isinstance(exc, ReportRefused):
        reason = exc.reason[:MAX_REASON_CHARS]
        log.warning("node %s: refused report row %d: %s", name, item.seq, reason)
        return Rejected(item.seq, reason)
    log.error(
        "node %s: storing report row %d (%s) failed", name, item.seq, item.topic, exc_info=exc
    )
    reason = str(exc) if isinstance(exc, EdgewardError) else "the hub failed to store it"
    return Rejected(item.seq, f"{item.topic}: {reason}"[:MAX_REASON_CHARS])


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
# locked at once: a hello on another replica (which takes the session) waits for this
# transaction, so a session check holds until commit without the revision lock
_GET_LEASE = (
    select(node_leases.c.ready, node_leases.c.session)
    .where(node_leases.c.node == _NODE)
    .with_for_update()
)
# A hello's contact and session in one statement: the row is locked by it.
_HELLO_LEASE = (
    update(node_leases)
    .where(node_leases.c.node == _NODE)
    .values(
        heartbeat=bindparam("b_beat"),
        ready=True,
        owner=bindparam("b_owner"),
        session=node_leases.c.session + 1,
    )
    .returning(node_leases.c.session)
)
# A Ready node's only: nothing else can be written without the revision lock.
_HELLO_READY_LEASE = _HELLO_LEASE.where(node_leases.c.ready.is_(True))
_GET_OWNER = select(node_leases.c.owner).where(node_leases.c.node == _NODE)
_SET_READY = update(node_leases).where(node_leases.c.node == _NODE).values(ready=True)
_GET_SEQ = select(node_sync.c.report_seq).where(node_sync.c.node == _NODE)
_GET_POSITIONS = select(node_sync.c.report_seq, node_sync.c.resync).where(node_sync.c.node == _NODE)
_SET_RESYNC = (
    update(node_sync).where(node_sync.c.node == _NODE).values(resync=bindparam("b_resync"))
)
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
    TOPIC_UPLOAD: events.record_upload,
    TOPIC_NODE_OUTAGE: _node_outage_report,
}


class ReportOutcome(NamedTuple):
    """What became of a report frame: every row up to ``high`` is done with; ``rejected``
    lists the rows among them the hub will never take."""

    high: int
    rejected: tuple[Rejected, ...] = ()


class Registration(NamedTuple):
    """What a hello's transaction learnt about the node."""

    #: The highest outbox seq already persisted for it.
    report_seq: int
    #: The capacity its Node holds (None for a new node).
    capacity: Any
    #: The outbox counts its Node holds (None for a new node).
    outbox: Any = None
    #: An operator asked for a resync: this session starts with a snapshot (the request is
    #: cleared in the same transaction).
    resync: bool = False
    #: The session's number (schema.node_leases.session): writes for the node from this
    #: process count only while no later hello, on any replica, took a higher one.
    session: int | None = None
    #: The revision the registration committed at: a Node deletion after it ends the session.
    revision: int = 0


class SessionSuperseded(EdgewardError):
    """A later hello of the node, on another replica, took its session over: this one
    writes nothing more and ends (the edge is talking to the other replica)."""

    def __init__(self, node: str) -> None:
        super().__init__(f"node {node}: a newer session on another hub replica took it over")
        self.node = node


def new_replica_id() -> str:
    """A name for this hub process, unique among the replicas sharing a database: a replica
    that restarts is a new one (its sessions ended with the old process)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class NodeRegistry:
    """Registers nodes, records their reports and marks silent ones NotReady.

    With a ``writer`` the lease flush is a group-writer job, sharing a batch's lock-free
    commit; without one (tests, tools) every write is a transaction of its own.
    """

    def __init__(
        self,
        store: Store,
        grace_period: float,
        writer: GroupWriter | None = None,
        replica: str | None = None,
    ) -> None:
        self.store = store
        self.grace_period = grace_period
        self.writer = writer
        #: The name this process goes by in node_leases.owner and hub_replicas.
        self.replica = replica or new_replica_id()
        #: Called (on the event loop) for each session another replica took over, found by
        #: a lease flush; the edge server closes it.
        self.on_superseded: Callable[[str, int], None] = lambda name, session: None
        #: Whether this process runs fleet-wide duties (marking silent nodes NotReady); with
        #: several replicas only the leader does (cloudhub/leader.py).
        self.leading: Callable[[], bool] = lambda: True
        self.leases = LeaseBook()
        store.live_lease = self.leases.get
        self.takeovers = TakeoverWatch(self.replica)
        #: Every contact this process heard before this time is in the database (the
        #: start of its last lease flush that committed); the replica book publishes it.
        self.flushed_through: float | None = None
        # Silence is counted from this process's start at the earliest: after a hub restart
        # every node gets a whole grace period to reconnect, as Kubernetes' node controller does.
        self.watching_since = store.clock()

    def register(self, name: str, node_info: dict[str, Any]) -> int:
        """A node said hello, in a transaction of its own; see :meth:`register_in`."""
        with self.store.writing() as tx:
            registration = self.register_in(tx, name, node_info)
        return self.registered(name, node_info, registration)

    def register_in(self, tx: Tx, name: str, node_info: dict[str, Any]) -> Registration:
        """Create or refresh the Node and mark it Ready. In a lock-free transaction it
        raises RevisionLockNeeded, before it locks any row, when the Node or its lease
        must change (a new node, a NotReady one, a new nodeInfo).

        Few statements: in the locking transaction each one is time the whole fleet's
        writers wait for (a first hello of 30,000 nodes is 30,000 of them in a row)."""
        node = tx.get(NODE, None, name)
        if node is None:
            tx.create(NODE, new_node(name, node_info, tx.now), absent=True)
            capacity = outbox = None
        else:
            status = mark_ready({**node.get("status", {}), "nodeInfo": node_info}, tx.now)
            tx.replace_status(NODE, None, name, status, current=node)
            capacity, outbox = status.get("capacity"), status.get("outbox")
        session = self._take_session(tx, name)
        positions = tx.conn.execute(_GET_POSITIONS, {"b_node": name}).one_or_none()
        if positions is None:
            tx.conn.execute(
                insert(node_sync).values(node=name, report_seq=0, acked_revision=0, resync=False)
            )
            report_seq, resync = 0, False
        else:
            report_seq, resync = int(positions.report_seq), bool(positions.resync)
        if resync:
            tx.conn.execute(_SET_RESYNC, {"b_node": name, "b_resync": False})
        return Registration(report_seq, capacity, outbox, resync, session, tx.head)

    def _take_session(self, tx: Tx, name: str) -> int:
        """Record a hello's contact and take the node's next session number (the Node is
        already Ready: register_in made it so). Without the revision lock, only a Ready
        node's lease may be taken (RevisionLockNeeded otherwise: the lock makes it Ready)."""
        params = {"b_node": name, "b_beat": tx.now, "b_owner": self.replica}
        statement = _HELLO_LEASE if tx.locked else _HELLO_READY_LEASE
        session = tx.conn.execute(statement, params).scalar_one_or_none()
        if session is not None:
            return int(session)
        tx.require_lock()  # a new node's lease, or a NotReady one's
        tx.conn.execute(
            insert(node_leases).values(
                node=name, heartbeat=tx.now, ready=True, usage="{}", owner=self.replica, session=1
            )
        )
        return 1

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
            outbox=registration.outbox,
            session=registration.session,
        )
        lease = self.leases.get(name)
        return registration.report_seq if lease is None else lease.report_seq

    def request_resync(self, name: str) -> tuple[bool, bool]:
        """Ask that ``name``'s next session start with a snapshot: (whether the hub has ever
        heard from it — if not, it gets a snapshot on its first hello anyway —, whether a
        replica serves its session now). On PostgreSQL the replica serving it hears the
        request at commit (SESSIONS_CHANNEL) and closes the session, wherever it is."""
        with self.store.writing() as tx:
            changed = tx.conn.execute(_SET_RESYNC, {"b_node": name, "b_resync": True}).rowcount
            owner = tx.conn.execute(_GET_OWNER, {"b_node": name}).scalar_one_or_none()
            if changed and tx.conn.dialect.name == "postgresql":
                tx.conn.execute(select(func.pg_notify(SESSIONS_CHANNEL, f"resync {name}")))
        return bool(changed), owner is not None

    def forget(self, name: str) -> None:
        """The Node was deleted (its stored positions with it): drop its live lease too."""
        self.leases.drop(name)

    def record_reports(
        self, name: str, items: tuple[ReportItem, ...], acked_revision: int
    ) -> ReportOutcome:
        """Record a report frame, in a transaction of its own when it needs one. See
        :meth:`absorb` and :meth:`record_reports_in`."""
        high = self.absorb(name, items, acked_revision)
        if high is not None:
            return ReportOutcome(high)
        with self.store.writing() as tx:
            outcome = self.record_reports_in(tx, name, items, acked_revision)
        self.reports_written(name, items, *outcome)
        return outcome

    def absorb(self, name: str, items: tuple[ReportItem, ...], acked_revision: int) -> int | None:
        """Record a frame that is only heartbeats in the live lease; returns the new high seq.

        None when the frame needs a transaction (:meth:`record_reports_in`, then
        :meth:`reports_written`): rows other than node status, a changed capacity or
        nodeInfo or outbox counts, a row the hub may refuse, or a node not known Ready. The
        contact is
        noted either way.
        """
        _check_positions(items, acked_revision)
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
                or body.get("outbox", lease.outbox) != lease.outbox
            ):
                self.leases.touch(name, now)
                return None
            if "usage" in body:
                try:
                    usage = _status_parts({"usage": body["usage"]})["usage"]
                except ReportRefused:
                    self.leases.touch(name, now)
                    return None  # the transaction refuses the row and says why
        high = max(lease.report_seq, items[-1].seq)
        if not self.leases.record_contact(name, now, high, acked_revision, usage):
            return None  # an expiry check claimed it meanwhile
        return high

    def reports_written(
        self,
        name: str,
        items: tuple[ReportItem, ...],
        high: int,
        rejected: tuple[Rejected, ...] = (),
        session: int | None = None,
    ) -> None:
        """:meth:`record_reports_in`'s transaction has committed at ``high``; the
        ``rejected`` rows were not stored, so nothing of them is kept in memory either."""
        refused = {r.seq for r in rejected}
        fields: dict[str, Any] = {} if session is None else {"session": session}
        for item in items:
            if item.topic == TOPIC_NODE_STATUS and item.seq not in refused:
                for key, field in (
                    ("capacity", "capacity"),
                    ("nodeInfo", "node_info"),
                    ("outbox", "outbox"),
                ):
                    if key in item.body:
                        fields[field] = item.body[key]
                if "usage" in item.body:
                    fields["usage"] = item.body["usage"]
        self.leases.record_written(name, self.store.clock(), high, **fields)

    def record_reports_in(
        self,
        tx: Tx,
        name: str,
        items: tuple[ReportItem, ...],
        acked_revision: int,
        session: int | None = None,
    ) -> ReportOutcome:
        """Persist a node's outbox rows, skipping replays.

        A row whose handler raises — ReportRefused, or anything else (a bug, an object the
        store refuses) — is rolled back alone and listed in the outcome's ``rejected``; the
        other rows are kept and the frame is acknowledged whole. Raises NotFound for a node
        that is not registered (its Node was deleted: it must say hello again), and
        SessionSuperseded when ``session`` is no longer the node's (another replica took it).
        """
        _check_positions(items, acked_revision)
        seq = self._report_seq(tx, name)
        self._touch_lease(tx, name, session)
        superseded = devicestatus.superseded(items)
        # a replay of a row we already hold, or one replaced later in the frame, is skipped
        fresh = [item for item in items if item.seq > seq and item.seq not in superseded]
        rejected = self._apply(tx, name, fresh)
        high = max(seq, items[-1].seq)
        tx.conn.execute(_SET_SYNC, {"b_node": name, "b_seq": high, "b_acked": acked_revision})
        return ReportOutcome(high, rejected)

    @staticmethod
    def _apply(tx: Tx, name: str, items: list[ReportItem]) -> tuple[Rejected, ...]:
        """Run each row's handler so that a failing row is rolled back alone.

        All rows go in one savepoint first; only when one fails does each run again in a
        savepoint of its own. A savepoint per row would cost a drain of 100,000 buffered
        rows twice the statements, for a failure that is rare.
        """
        if not items:
            return ()
        mark = tx.mark()
        together = tx.conn.begin_nested()
        try:
            for item in items:
                _handle(tx, name, item)
            tx.flush_history()
            together.commit()
            return ()
        except Exception:
            together.rollback()
            tx.rewind(mark)
        rejected = []
        for item in items:
            mark = tx.mark()
            alone = tx.conn.begin_nested()
            try:
                _handle(tx, name, item)
                tx.flush_history()
                alone.commit()
            except Exception as exc:
                alone.rollback()
                tx.rewind(mark)  # the revisions and history rows it took go with its rows
                rejected.append(_rejected(name, item, exc))
        return tuple(rejected)

    @staticmethod
    def _report_seq(tx: Tx, name: str) -> int:
        seq = tx.conn.execute(_GET_SEQ, {"b_node": name}).scalar_one_or_none()
        if seq is None:
            raise NotFound(NODE.name, "", name)
        return int(seq)

    def _touch_lease(self, tx: Tx, name: str, session: int | None = None) -> None:
        """Record contact; a node that was NotReady becomes Ready again. SessionSuperseded
        when ``session`` is given and is no longer the node's."""
        lease = tx.conn.execute(_GET_LEASE, {"b_node": name}).one_or_none()
        if lease is None or not lease.ready:
            tx.require_lock()  # a new lease, or a NotReady node's, makes the Node Ready
        if lease is None:
            tx.conn.execute(
                insert(node_leases).values(node=name, heartbeat=tx.now, ready=True, usage="{}")
            )
        elif session is not None and lease.session != session:
            raise SessionSuperseded(name)
        else:
            tx.conn.execute(_SET_CONTACT, {"b_node": name, "b_beat": tx.now})
        if lease is None or not lease.ready:
            _node_ready(tx, name)

    def expire(self) -> list[str]:
        """Flush live leases, then mark NotReady every Ready node silent for longer than the
        grace period — even when the flush failed (:meth:`mark_silent` says why it may)."""
        try:
            self.flush()
        except Exception:
            log.exception("writing heartbeats failed; checking for silent nodes anyway")
        return self.mark_silent()

    def mark_silent(self) -> list[str]:
        """Mark NotReady every Ready node silent for longer than the grace period.

        Correct without a flush: a node heard from since the last one has a live lease
        newer than the cutoff, and :meth:`LeaseBook.claim_silent` passes it over.

        A node served by another replica is silent only when that replica, too, has not
        shown life (``hub_replicas.seen``) within the grace period, or has written every
        contact it heard up to a whole grace period after the node's last one
        (``hub_replicas.flushed``; ``seen`` for a replica that has not said): a replica
        that dies takes its nodes' last unflushed contact with it, so they get a grace
        period from its death to say hello elsewhere, as a restarted single hub gives them
        one from its start; and a live replica whose flushes lag behind under load does not
        see its connected nodes expired for the lag. A gone replica's nodes wait longer
        while the other replicas are still taking them over (:class:`TakeoverWatch`).
        """
        now = self.store.clock()
        cutoff = now - self.grace_period
        owner = hub_replicas.c.seen
        written = func.coalesce(hub_replicas.c.flushed, owner)
        unheard = written - node_leases.c.heartbeat > self.grace_period
        with self.store.reading() as conn:
            progress = self.takeovers.look(conn, now, self.watching_since)
            if cutoff <= self.watching_since:
                return []
            silent = conn.execute(
                select(node_leases.c.node, node_leases.c.owner, unheard)
                .select_from(
                    node_leases.outerjoin(hub_replicas, hub_replicas.c.id == node_leases.c.owner)
                )
                .where(
                    node_leases.c.ready.is_(True),
                    node_leases.c.heartbeat < cutoff,
                    or_(owner.is_(None), owner < cutoff, unheard),
                )
                .order_by(node_leases.c.node)
            ).all()
        # a gone replica's node waits while the others are still taking its nodes over,
        # unless that replica had not heard from it either (cloudhub/takeover.py)
        silent = [
            (name, by)
            for name, by, not_heard in silent
            if not_heard or progress.get(by, _NEVER) < cutoff
        ]
        expired = []
        for name, by in silent:
            if not self.leases.claim_silent(name, cutoff):
                continue
            try:
                if self._mark_not_ready(name, cutoff):
                    expired.append(name)
                    self.takeovers.marked(by)
            except Exception:  # one node's trouble must not keep the others Ready
                log.exception("node %s: marking it NotReady failed", name)
        return expired

    def _mark_not_ready(self, name: str, cutoff: float) -> bool:
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
            if node is None:
                return False
            status = ready_condition(
                node.get("status", {}),
                "Unknown",
                "NodeStatusUnknown",
                f"edgecore stopped posting status (no contact for over {self.grace_period:g}s)",
                tx.now,
            )
            tx.replace_status(NODE, None, name, status, current=node)
        log.warning("node %s is NotReady: no contact for %gs", name, self.grace_period)
        return True

    def flush(self) -> int:
        """Write the live leases changed since the last flush, in a transaction of their own
        that takes the revision lock first like every hub write; returns how many."""
        taken, rows = self._take_dirty()
        if not rows:
            return 0
        try:
            with self.store.writing() as tx:
                written = self._write_leases(tx, rows)
        except BaseException:
            self.leases.restore(rows)
            raise
        self.flushed_through = taken
        return self._flushed(rows, written)

    async def flush_async(self) -> int:
        """:meth:`flush` as a group-writer job, sharing a batch's lock-free commit (it runs
        again with the revision lock when it repairs readiness); in a thread of its own
        when the registry has no writer."""
        if self.writer is None:
            return await asyncio.to_thread(self.flush)
        taken, rows = self._take_dirty()
        if not rows:
            return 0
        try:
            # the same rows on a retry: the job may run twice (groupwriter.py)
            written = await self.writer.submit(
                lambda tx: self._write_leases(tx, rows), lock_free=True
            )
        except BaseException:
            self.leases.restore(rows)
            raise
        self.flushed_through = taken
        return self._flushed(rows, written)

    def _take_dirty(self) -> tuple[float, list[dict[str, Any]]]:
        """The live leases to flush and when they were taken (``flushed_through`` once they
        are written; at once when there are none: everything heard is written)."""
        taken = self.store.clock()
        rows = self.leases.take_dirty()
        if not rows:
            self.flushed_through = taken
        return taken, rows

    def _write_leases(self, tx: Tx, rows: list[dict[str, Any]]) -> _Flushed:
        """Write ``rows``, then hold them against the database: a session another replica
        took is void here; a node the leader marked NotReady while this replica stalled,
        but from which this replica has heard within the grace period, is Ready again."""
        dropped = write_leases(tx.conn, rows)
        stored = session_states(tx.conn, [row["b_node"] for row in rows])
        superseded, repaired = [], []
        fresh = tx.now - self.grace_period
        for row in rows:
            name, session = row["b_node"], row["b_session"]
            if name in dropped or name not in stored:
                continue
            stored_session, ready = stored[name]
            if session is not None and stored_session != session:
                superseded.append((name, session, row["released"]))
            elif not ready and not row["released"] and row["b_beat"] >= fresh:
                tx.require_lock()  # (rare: in a lock-free flush, it all runs again locked)
                tx.conn.execute(_SET_READY, {"b_node": name})
                _node_ready(tx, name)
                repaired.append(name)
        return _Flushed(dropped, superseded, repaired)

    def _flushed(self, rows: list[dict[str, Any]], flushed: _Flushed) -> int:
        """A flush committed: forget what it says is void or done with."""
        for name in flushed.dropped:
            # what this process holds for it cannot be stored: its next report goes through
            # a transaction (which checks it) and starts a fresh live lease
            self.leases.drop(name)
        for name, session, ended in flushed.superseded:
            self.leases.superseded(name, session)
            if not ended:  # (an ended session's node simply moved on to another replica)
                log.warning(
                    "node %s: another hub replica took its session over; closing this one", name
                )
                self.on_superseded(name, session)
        for name in flushed.repaired:
            log.info("node %s is Ready again (its lease was expired while this hub stalled)", name)
        self.leases.forget_released(rows)
        return len(rows) - len(flushed.dropped) - len(flushed.superseded)

    async def run_expiry(self) -> None:
        """Flush live leases and check for silent nodes several times per grace period."""
        interval = max(0.2, min(5.0, self.grace_period / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush_async()
            except Exception:
                log.exception("writing heartbeats failed; checking for silent nodes anyway")
            if not self.leading():
                self.takeovers.forget()
                continue
            try:
                await asyncio.to_thread(self.mark_silent)
            except Exception:
                log.exception("node lifecycle: checking leases failed; retrying")


_NEVER = float("-inf")


class _Flushed(NamedTuple):
    dropped: list[str]
    #: (node, session, whether that session had already ended here)
    superseded: list[tuple[str, int, bool]]
    repaired: list[str]


def _node_ready(tx: Tx, name: str) -> None:
    """The Node's Ready condition to True, if it is not."""
    node = tx.get(NODE, None, name)
    if node is not None and not is_ready(node):
        tx.replace_status(NODE, None, name, mark_ready(node.get("status", {}), tx.now))
        log.info("node %s is Ready", name)


def _handle(tx: Tx, name: str, item: ReportItem) -> None:
    handler = REPORT_HANDLERS.get(item.topic)
    if handler is None:
        raise ReportRefused(f"unknown topic {item.topic[:64]!r}")
    _check_body_size(item)
    handler(tx, name, item)


def _check_body_size(item: ReportItem) -> None:
    """Refuse a row whose body is over storable.MAX_REPORT_BYTES, as sent (compact UTF-8).

    The edge never writes such a row, so only a broken or hostile node sends one; an
    upload's payload is not otherwise bounded below the frame's 4 MiB. The encode costs
    16 µs for a twin report of ten properties, beside the row's database write.
    Heartbeats the live lease absorbs skip it: they keep nothing of their body but a
    checked usage.
    """
    text = storable.dumps(item.body)
    if len(text) * 4 <= storable.MAX_REPORT_BYTES:
        return  # UTF-8 takes at most 4 bytes a character
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > storable.MAX_REPORT_BYTES:
        raise ReportRefused(
            f"{item.topic}: the body is {size} bytes, more than {storable.MAX_REPORT_BYTES}"
        )
