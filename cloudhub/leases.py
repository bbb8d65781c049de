"""Live leases: what connected nodes' heartbeats say, kept in memory and flushed in bulk.

Ten thousand nodes heartbeating every 30 s are 333 reports a second that
almost always change nothing an operator watches: only the heartbeat time,
the usage figures and the node's outbox seq move. Writing each one would cost
a transaction; instead the registry records them here and
:func:`write_leases` writes every changed lease in one transaction every
few seconds (before each expiry check). Losing the unflushed part in a crash
is harmless: it is a few seconds of heartbeat, usage that the next heartbeat
replaces, and the seqs of ``node/status`` rows, which the edge then resends
as rows the hub has not seen (they are state, applying them again is a no-op).

Reads merge the live lease over the stored one (``Store.live_lease``), so
``get nodes`` shows the heartbeat that just arrived, not the last flushed one.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Float, Text, bindparam, case, func, select, update
from sqlalchemy.sql.elements import ColumnElement

from cloudhub.schema import node_leases, node_sync
from edgeward import storable

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LiveLease:
    """One node's contact as this hub process last heard it."""

    heartbeat: float
    #: True only while the stored lease is known Ready and no expiry check has touched it since.
    ready: bool
    report_seq: int
    acked_revision: int = 0
    usage: dict[str, Any] | None = None
    #: The capacity, nodeInfo and outbox counts the stored Node holds, as last written by
    #: this process.
    capacity: Any = None
    node_info: Any = None
    outbox: Any = None
    dirty: bool = False
    #: The number of the session this process serves the node under (schema.node_leases);
    #: None for a lease written outside a session (tools, tests), which is never checked.
    session: int | None = None
    #: The session ended: the next flush writes what is left, gives up the node's ownership,
    #: and forgets the lease, so this process's memory never speaks for a node it left.
    released: bool = False


class LeaseBook:
    """The live leases of the nodes this hub process talks to; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, LiveLease] = {}

    def get(self, name: str) -> LiveLease | None:
        return self._leases.get(name)

    def usages(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Each node's last reported usage, as this process heard it."""
        with self._lock:
            return [(name, lease.usage) for name, lease in self._leases.items()]

    def record_contact(
        self,
        name: str,
        now: float,
        report_seq: int,
        acked_revision: int,
        usage: dict[str, Any] | None,
    ) -> bool:
        """A report absorbed without a transaction; False when the node is not known Ready."""
        with self._lock:
            lease = self._leases.get(name)
            if lease is None or not lease.ready:
                return False
            lease.heartbeat = max(lease.heartbeat, now)
            lease.report_seq = max(lease.report_seq, report_seq)
            lease.acked_revision = max(lease.acked_revision, acked_revision)
            if usage is not None:
                lease.usage = usage
            lease.dirty = True
            return True

    def touch(self, name: str, now: float) -> None:
        """Contact that is about to be written: keeps an expiry check from racing it."""
        with self._lock:
            lease = self._leases.get(name)
            if lease is not None:
                lease.heartbeat = max(lease.heartbeat, now)

    def record_written(self, name: str, now: float, report_seq: int, **fields: Any) -> None:
        """A transaction that made the stored lease Ready, at ``report_seq``, has committed."""
        with self._lock:
            lease = self._leases.get(name)
            if lease is None:
                lease = self._leases[name] = LiveLease(now, True, report_seq)
            lease.heartbeat = max(lease.heartbeat, now)
            lease.ready = True
            if fields.get("session", lease.session) != lease.session:
                lease.released = False  # a new session; a late write of an ended one is not
            lease.report_seq = max(lease.report_seq, report_seq)
            for field, value in fields.items():
                setattr(lease, field, value)

    def release(self, name: str, session: int | None) -> None:
        """The session ``session`` of ``name`` ended here; a newer one keeps the lease."""
        with self._lock:
            lease = self._leases.get(name)
            if lease is not None and lease.session == session:
                lease.released = True

    def superseded(self, name: str, session: int | None) -> None:
        """Another replica took ``name`` over: this process's lease of ``session`` is void."""
        with self._lock:
            lease = self._leases.get(name)
            if lease is not None and lease.session == session:
                del self._leases[name]

    def claim_silent(self, name: str, cutoff: float) -> bool:
        """Whether ``name`` may be marked NotReady: not heard from since ``cutoff``.

        A claimed node's live lease stops absorbing reports, so the next one it
        sends goes through a transaction that makes it Ready again.
        """
        with self._lock:
            lease = self._leases.get(name)
            if lease is None:
                return True
            if lease.heartbeat >= cutoff:
                return False
            lease.ready = False
            return True

    def drop(self, name: str) -> None:
        """Forget ``name`` (its Node was deleted): nothing of it is flushed again."""
        with self._lock:
            self._leases.pop(name, None)

    def take_dirty(self) -> list[dict[str, Any]]:
        """The leases changed since the last take, as rows for :func:`write_leases`, sorted
        by node name; they count as clean until :meth:`restore` says otherwise."""
        with self._lock:
            rows = [
                {
                    "b_node": name,
                    "b_beat": lease.heartbeat,
                    "b_usage": None if lease.usage is None else storable.dumps(lease.usage),
                    "b_seq": lease.report_seq,
                    "b_acked": lease.acked_revision,
                    "b_session": lease.session,
                    "released": lease.released,
                }
                for name, lease in self._leases.items()
                if lease.dirty or lease.released
            ]
            for row in rows:
                self._leases[row["b_node"]].dirty = False
        rows.sort(key=lambda row: row["b_node"])
        return rows

    def forget_released(self, rows: list[dict[str, Any]]) -> None:
        """``rows`` are written: the leases among them whose session ended are forgotten."""
        with self._lock:
            for row in rows:
                lease = self._leases.get(row["b_node"])
                if (
                    row["released"]
                    and lease is not None
                    and lease.released
                    and lease.session == row["b_session"]
                ):
                    del self._leases[row["b_node"]]

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Writing ``rows`` failed: their leases are dirty again, for the next flush."""
        with self._lock:
            for row in rows:
                if (lease := self._leases.get(row["b_node"])) is not None:
                    lease.dirty = True


def write_leases(conn: Connection, rows: list[dict[str, Any]]) -> list[str]:
    """Write lease rows (from :meth:`LeaseBook.take_dirty`) in the caller's transaction: a
    group-writer job (lock-free, cloudhub/store.py), so a flush and a batch of the same
    replica never wait on each other's node rows.

    All rows in one statement per table; when that fails, each row alone. A row that
    fails alone is dropped and logged; returns the names of the nodes dropped.
    """
    if _write_in_savepoint(conn, rows) is None:
        return []
    dropped = []
    for row in rows:
        exc = _write_in_savepoint(conn, [row])
        if exc is not None:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            log.warning(
                "node %s: dropped a heartbeat that cannot be written: %s: %s",
                row["b_node"],
                type(exc).__name__,
                first_line,
            )
            dropped.append(row["b_node"])
    return dropped


def _write_in_savepoint(conn: Connection, rows: list[dict[str, Any]]) -> Exception | None:
    savepoint = conn.begin_nested()
    try:
        conn.execute(_UPDATE_LEASE, rows)
        conn.execute(_UPDATE_SYNC, rows)
        released = [row for row in rows if row["released"] and row["b_session"] is not None]
        if released:
            conn.execute(_RELEASE, released)
    except Exception as exc:
        savepoint.rollback()
        return exc
    savepoint.commit()
    return None


def session_states(conn: Connection, names: list[str]) -> dict[str, tuple[int, bool]]:
    """Each node's stored (session, ready), for the nodes among ``names`` that have a lease."""
    found: dict[str, tuple[int, bool]] = {}
    for start in range(0, len(names), 1000):  # bounded IN lists
        chunk = names[start : start + 1000]
        for row in conn.execute(
            select(node_leases.c.node, node_leases.c.session, node_leases.c.ready).where(
                node_leases.c.node.in_(chunk)
            )
        ):
            found[row.node] = (int(row.session), bool(row.ready))
    return found


def _at_least(column: Any, param: str, type_: Any) -> ColumnElement[Any]:
    """``column`` raised to the bound value, never lowered: a flush may race a transaction."""
    value = bindparam(param, type_=type_)
    return case((column < value, value), else_=column)


#: A replica writes a node's lease only under the session it serves (or, outside a
#: session, b_session NULL): once another replica took the node, this one's writes are void.
_OWN_SESSION = node_leases.c.session == func.coalesce(
    bindparam("b_session", type_=node_leases.c.session.type), node_leases.c.session
)
_UPDATE_LEASE = (
    update(node_leases)
    .where(node_leases.c.node == bindparam("b_node"), _OWN_SESSION)
    .values(
        heartbeat=_at_least(node_leases.c.heartbeat, "b_beat", Float()),
        usage=func.coalesce(bindparam("b_usage", type_=Text()), node_leases.c.usage),
    )
)
_UPDATE_SYNC = (
    update(node_sync)
    .where(
        node_sync.c.node == bindparam("b_node"),
        node_sync.c.node.in_(
            select(node_leases.c.node).where(
                node_leases.c.node == bindparam("b_node"), _OWN_SESSION
            )
        ),
    )
    .values(
        report_seq=_at_least(node_sync.c.report_seq, "b_seq", node_sync.c.report_seq.type),
        acked_revision=_at_least(
            node_sync.c.acked_revision, "b_acked", node_sync.c.acked_revision.type
        ),
    )
)
_RELEASE = (
    update(node_leases)
    .where(
        node_leases.c.node == bindparam("b_node"),
        node_leases.c.session == bindparam("b_session", type_=node_leases.c.session.type),
    )
    .values(owner=None)
)
