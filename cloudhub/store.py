"""The hub's resource store: objects, the global revision and the change log.

Every write happens inside :meth:`Store.writing`, which locks the revision row
first; each object written in the transaction gets the next revision, a
change-log row and that revision as its ``resourceVersion``. Reads see one
consistent revision. Node bookkeeping that writes no object (a lease flush, the
hello of a node already Ready) may run in a *lock-free* transaction instead
(``writing(lock_free=True)``), which never takes the revision lock: an object
write in it raises :class:`RevisionLockNeeded`, and the caller runs the work
again in a locking transaction. So hub replicas' heartbeats and reconnects do not
queue behind each other on one row, and no transaction ever waits for the
revision lock while holding a node's rows (no deadlock between the two).

Listeners registered with :meth:`Store.on_commit` learn the new head after each
commit (the change feed wakes on it). On PostgreSQL the same transaction also
sends the new head on the channel :data:`CHANGES_CHANNEL`, delivered at commit,
so other hub replicas' feeds wake too (cloudhub/pgnotify.py).
"""

from __future__ import annotations

import copy
import functools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    tuple_,
    update,
)

from cloudhub import schema
from cloudhub.admission import admit
from cloudhub.leases import LiveLease
from cloudhub.schema import changes, node_certs, node_leases, node_sync, objects, revision
from edgeward import storable
from edgeward.errors import AlreadyExists, Conflict, FieldCause, InvalidObject, NotFound
from edgeward.kinds import ALL_NODES, KINDS, NODE, Kind, resource_version
from edgeward.sync import ChangeRow, resume_mode

_KIND_BY_NAME = {k.name: k for k in KINDS}


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utf8_size(text: str) -> int:
    """Bytes of ``text`` as UTF-8; raises UnicodeEncodeError for a lone surrogate."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def stored_text(kind: Kind, body: dict[str, Any], spec_write: bool) -> str:
    """``body`` as the store keeps it (compact UTF-8 JSON, :func:`edgeward.storable.dumps`).

    Raises InvalidObject when it could not be served back: not valid Unicode, more than
    ``MAX_OBJECT_BYTES``, or on a spec write (create, replace, patch) more than
    ``MAX_SPEC_BYTES`` without its status — a merge patch can grow an object past the
    REST API's body limit. Costs the one encode the write needs anyway and a length check
    (the report path writes a Device status per twin report); the other storable rules
    (int64, depth) are each entrance's to check, where the value is already being walked.
    """
    name = body["metadata"]["name"]
    try:
        if spec_write:
            spec_text = storable.dumps({k: v for k, v in body.items() if k != "status"})
            spec_size = _utf8_size(spec_text)
            if spec_size > storable.MAX_SPEC_BYTES:
                raise _too_big(kind, name, "without its status", spec_size, storable.MAX_SPEC_BYTES)
            # status is the last key of every stored body: splice it on, one encode in all
            text = f'{spec_text[:-1]},"status":{storable.dumps(body.get("status", {}))}}}'
        else:
            text = storable.dumps(body)
        size = _utf8_size(text)
    except (ValueError, TypeError, RecursionError, UnicodeEncodeError):
        found = storable.problem(body, max_depth=10**9)
        cause = (
            FieldCause(found.path, found.reason)
            if found is not None
            else FieldCause("", "cannot be encoded as JSON")
        )
        raise InvalidObject(kind.name, name, [cause]) from None
    if size > storable.MAX_OBJECT_BYTES:
        raise _too_big(kind, name, "", size, storable.MAX_OBJECT_BYTES)
    return text


def _deleted_text(body: dict[str, Any]) -> str:
    """A deleted object's last state, for the change log. An object stored before the store
    refused lone surrogates (its text escaped them) can still be deleted."""
    text = storable.dumps(body)
    try:
        _utf8_size(text)
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":"))
    return text


def _too_big(kind: Kind, name: str, what: str, size: int, limit: int) -> InvalidObject:
    whole = f"the object {what}" if what else "the object"
    cause = FieldCause("", f"{whole} is {size} bytes of JSON, more than {limit}")
    return InvalidObject(kind.name, name, [cause])


#: Who last wrote an object through the API, and when (``edgeward describe`` shows it).
CHANGED_BY = "edgeward.io/last-changed-by"


def _unstamped(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without the CHANGED_BY annotation (and without annotations left empty)."""
    annotations = body["metadata"].get("annotations")
    if not annotations or CHANGED_BY not in annotations:
        return body
    rest = {k: v for k, v in annotations.items() if k != CHANGED_BY}
    meta = {k: v for k, v in body["metadata"].items() if k != "annotations"}
    if rest:
        meta["annotations"] = rest
    return {**body, "metadata": meta}


def _ns(kind: Kind, namespace: str | None) -> str:
    return (namespace or "") if kind.namespaced else ""


# Statements built once: building and hashing a Core expression per call cost more
# than running it (py-spy, scenario 6).
_OBJECT_KEY = (
    objects.c.kind == bindparam("b_kind"),
    objects.c.namespace == bindparam("b_namespace"),
    objects.c.name == bindparam("b_name"),
)
_GET_BODY = select(objects.c.body).where(*_OBJECT_KEY)
_INSERT_OBJECT = insert(objects).values(
    kind=bindparam("b_kind"),
    namespace=bindparam("b_namespace"),
    name=bindparam("b_name"),
    resource_version=bindparam("b_rv"),
    route=bindparam("b_route"),
    body=bindparam("b_body"),
)
_UPDATE_OBJECT = (
    update(objects)
    .where(*_OBJECT_KEY)
    .values(
        resource_version=bindparam("b_rv"), route=bindparam("b_route"), body=bindparam("b_body")
    )
)
_DELETE_OBJECT = delete(objects).where(*_OBJECT_KEY)
_DELETE_NODE_SYNC = delete(node_sync).where(node_sync.c.node == bindparam("b_name"))
_DELETE_NODE_LEASE = delete(node_leases).where(node_leases.c.node == bindparam("b_name"))
_REVOKE_NODE_CERTS = (
    update(node_certs)
    .where(node_certs.c.node == bindparam("b_name"), node_certs.c.revoked.is_(False))
    .values(revoked=True)
)
_LOCK_HEAD = select(revision.c.head).where(revision.c.id == 1).with_for_update()
_SET_HEAD = update(revision).where(revision.c.id == 1).values(head=bindparam("b_head"))
#: The PostgreSQL channel each write transaction notifies with its new head (a decimal
#: string: far below NOTIFY's 8000-byte payload limit).
CHANGES_CHANNEL = "edgeward_changes"
# One round trip: the notification is queued by the statement that moves the head and
# delivered only if the transaction commits.
_SET_HEAD_NOTIFY = _SET_HEAD.returning(func.pg_notify(CHANGES_CHANNEL, cast(revision.c.head, Text)))
#: The PostgreSQL channel for requests to whichever replica serves a node's session,
#: ``"resync <node>"`` (cloudhub/pgnotify.py hands them to the edge server).
SESSIONS_CHANNEL = "edgeward_sessions"
_HEAD = select(revision.c.head)
_AFTER_KEY = tuple_(bindparam("b_after_ns"), bindparam("b_after_name"))
_BOUNDS = select(revision.c.compacted, revision.c.head)
_CHANGES_AFTER = (
    select(changes)
    .where(changes.c.revision > bindparam("b_after"))
    .order_by(changes.c.revision)
    .limit(bindparam("b_limit"))
)
_CHANGES_FOR_NODE = (
    select(changes)
    .where(
        changes.c.revision > bindparam("b_after"),
        or_(
            changes.c.route == bindparam("b_node"),
            changes.c.prev_route == bindparam("b_node"),
            changes.c.route == ALL_NODES,
        ),
    )
    .order_by(changes.c.revision)
    .limit(bindparam("b_limit"))
)
_INSERT_CHANGE = insert(changes).values(
    revision=bindparam("b_rv"),
    kind=bindparam("b_kind"),
    namespace=bindparam("b_namespace"),
    name=bindparam("b_name"),
    op=bindparam("b_op"),
    route=bindparam("b_route"),
    prev_route=bindparam("b_prev_route"),
    body=bindparam("b_body"),
)


@dataclass(frozen=True)
class LogPage:
    """Change-log rows read in one transaction with the log's bounds at that moment.

    A reader that resumes from ``after`` must check ``after >= compacted``: rows
    after ``after`` may have been compacted away since it last read, and the page
    would silently skip them.
    """

    rows: list[ChangeRow]
    compacted: int
    head: int

    def complete_after(self, after: int) -> bool:
        """Whether the log still holds every row after ``after`` (else: resync)."""
        return after >= self.compacted


class StoredObject(NamedTuple):
    """An object as stored: its key, resourceVersion and JSON text (never decoded)."""

    namespace: str
    name: str
    resource_version: int
    text: str


@dataclass(frozen=True)
class ObjectPage:
    """One page of a listing read in pages, each page its own short read transaction.

    ``rows`` follow ``after`` in key order. ``written`` holds the keys of the listed
    objects written after ``written_after`` (up to ``head``), each with whether it
    lies ahead of ``after`` — an object the listing had not reached yet when it
    changed. ``compacted`` tells whether the change log still held all of them.
    """

    head: int
    compacted: int
    rows: list[StoredObject]
    written: list[tuple[str, str, bool]]
    done: bool


class RevisionLockNeeded(BaseException):
    """An object write in a lock-free transaction: run the work again in a locking one.

    A BaseException, so that handlers that roll back one failed row (``except
    Exception``) let it through to the group writer instead of counting it a refusal.
    """


class HistoryRow(NamedTuple):
    """A reported value for ``twin_history`` (cloudhub/history.py), in its columns' order."""

    namespace: str
    device: str
    property: str
    time: float  # when the value was reported (edge clock)
    received: float  # when the hub stored it (hub clock)
    value: str


@functools.cache
def _history_insert(dialect: str) -> str:
    """The INSERT of a :class:`HistoryRow` into ``twin_history_recent``, in the driver's
    own parameter style."""
    mark = "?" if dialect == "sqlite" else "%s"
    values = ", ".join(mark for _ in HistoryRow._fields)
    return f"INSERT INTO twin_history_recent ({', '.join(HistoryRow._fields)}) VALUES ({values})"


class Tx:
    """One write transaction. Each object write takes the next revision.

    ``locked``: whether it holds the revision lock. Without it (a lock-free transaction)
    ``head`` is the head as read when it began, and any object write raises
    :class:`RevisionLockNeeded`.
    """

    def __init__(
        self,
        conn: Connection,
        head: int,
        now: float,
        new_uid: Callable[[], str],
        twin_history: bool = True,
        locked: bool = True,
    ) -> None:
        self.conn = conn
        self.locked = locked
        #: Whether reported twin values are kept as history (cloudhub/history.py), and the
        #: rows waiting to be written in one statement (flush_history).
        self.twin_history = twin_history
        self.history_rows: list[HistoryRow] = []
        self.start = head
        self.head = head
        self.now = now
        self._new_uid = new_uid

    def require_lock(self) -> None:
        """Raise :class:`RevisionLockNeeded` unless this transaction holds the revision lock
        (work that may write an object, checked before it touches any node's rows)."""
        if not self.locked:
            raise RevisionLockNeeded

    def mark(self) -> tuple[int, int]:
        """Where this transaction stands, for :meth:`rewind` after a savepoint rolls back."""
        return self.head, len(self.history_rows)

    def rewind(self, mark: tuple[int, int]) -> None:
        """A savepoint rolled back: give back the revisions and history rows it took."""
        self.head = mark[0]
        del self.history_rows[mark[1] :]

    def flush_history(self) -> None:
        """Append the waiting twin history rows to ``twin_history_recent`` in one statement
        (one per row would cost the report path a quarter of its rate), handed to the
        driver as they are: SQLAlchemy's handling of each row's parameters cost more than
        SQLite's insert."""
        if self.history_rows:
            self.conn.exec_driver_sql(_history_insert(self.conn.dialect.name), self.history_rows)
            self.history_rows = []

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            _GET_BODY, {"b_kind": kind.name, "b_namespace": _ns(kind, namespace), "b_name": name}
        ).scalar_one_or_none()
        return None if row is None else json.loads(row)

    def create(self, kind: Kind, obj: dict[str, Any], absent: bool = False) -> dict[str, Any]:
        """``absent``: the caller read the object absent in this transaction, under the
        revision lock (so no other writer can have created it since)."""
        meta = obj["metadata"]
        if not absent and self.get(kind, meta.get("namespace"), meta["name"]) is not None:
            raise AlreadyExists(kind.name, _ns(kind, meta.get("namespace")), meta["name"])
        admit(kind, obj, self.get)
        body = dict(obj)
        body["metadata"] = {
            **meta,
            "uid": self._new_uid(),
            "creationTimestamp": rfc3339(self.now),
        }
        body["status"] = obj.get("status", {})
        return self._save(kind, "create", body, prev_route=None, spec_write=True)

    def replace(
        self,
        kind: Kind,
        obj: dict[str, Any],
        expected_rv: int | None = None,
        changed_by: str | None = None,
    ) -> dict[str, Any]:
        """Write ``obj``'s metadata and spec over the stored object; status is kept.

        ``changed_by`` (who, and when) is recorded in the CHANGED_BY annotation, only
        when something else changed: an unchanged object keeps its revision."""
        meta = obj["metadata"]
        current = self._current(kind, meta.get("namespace"), meta["name"], expected_rv)
        body = {k: v for k, v in obj.items() if k != "status"}
        body["metadata"] = {
            **meta,
            "uid": current["metadata"]["uid"],
            "creationTimestamp": current["metadata"]["creationTimestamp"],
            "resourceVersion": current["metadata"]["resourceVersion"],
        }
        body["status"] = current.get("status", {})
        if body == current or (changed_by is not None and _unstamped(body) == _unstamped(current)):
            return current
        if changed_by is not None:
            body["metadata"]["annotations"] = {
                **(body["metadata"].get("annotations") or {}),
                CHANGED_BY: changed_by,
            }
        admit(kind, body, self.get)
        return self._save(kind, "update", body, prev_route=kind.route(current), spec_write=True)

    def replace_status(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        status: dict[str, Any],
        current: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write a new status. Status-only writes are logged for watchers but not
        routed to edge nodes: the edge reported them, it needs no echo.

        ``current`` is the object as this transaction already read it, to save a read.
        """
        if current is None:
            current = self._current(kind, namespace, name, None)
        if current.get("status") == status:
            return current
        body = {**current, "status": status}
        return self._save(kind, "update", body, prev_route=None, route_change=False)

    def create_all(self, kind: Kind, objs: list[dict[str, Any]]) -> None:
        """:meth:`create` for objects this transaction read absent under the revision lock
        (``absent=True``) and that need no admission check (nodes): one statement per
        table for all of them. Each takes the next revision, in the order given."""
        bodies = []
        for obj in objs:
            body = dict(obj)
            body["metadata"] = {
                **obj["metadata"],
                "uid": self._new_uid(),
                "creationTimestamp": rfc3339(self.now),
            }
            body["status"] = obj.get("status", {})
            bodies.append(body)
        self._save_all(kind, "create", bodies)

    def replace_status_all(
        self, kind: Kind, writes: list[tuple[dict[str, Any], dict[str, Any]]]
    ) -> None:
        """:meth:`replace_status` for many objects as this transaction read them, each with
        its new status: one statement per table for all that change."""
        changed = [{**current, "status": status} for current, status in writes
                   if current.get("status") != status]  # fmt: skip
        self._save_all(kind, "update", changed)

    def _save_all(self, kind: Kind, op: str, bodies: list[dict[str, Any]]) -> None:
        """:meth:`_save` of creates (routed) or status-only updates (not routed), one
        statement per table for all of them."""
        if not bodies:
            return
        self.require_lock()
        create = op == "create"
        rows = [self._next_rows(kind, op, body, None, create, create) for body in bodies]
        self.conn.execute(_INSERT_OBJECT if create else _UPDATE_OBJECT, [r for r, _ in rows])
        self.conn.execute(_INSERT_CHANGE, [change for _, change in rows])

    def delete(
        self, kind: Kind, namespace: str | None, name: str, expected_rv: int | None = None
    ) -> dict[str, Any]:
        """Delete an object. A Node takes its positions (report seq, acked revision) and
        lease with it: a node registering again under that name starts from seq 0. Its
        certificates are revoked: it must join again to connect."""
        current = self._current(kind, namespace, name, expected_rv)
        if kind is NODE:
            self.require_lock()
            # leases before sync rows, in the order every hub transaction locks them
            self.conn.execute(_DELETE_NODE_LEASE, {"b_name": name})
            self.conn.execute(_DELETE_NODE_SYNC, {"b_name": name})
            self.conn.execute(_REVOKE_NODE_CERTS, {"b_name": name})
        return self._save(kind, "delete", current, prev_route=kind.route(current))

    def _current(
        self, kind: Kind, namespace: str | None, name: str, expected_rv: int | None
    ) -> dict[str, Any]:
        current = self.get(kind, namespace, name)
        if current is None:
            raise NotFound(kind.name, _ns(kind, namespace), name)
        if expected_rv is not None and expected_rv != resource_version(current):
            raise Conflict(
                kind.name, _ns(kind, namespace), name, expected_rv, resource_version(current)
            )
        return current

    def _save(
        self,
        kind: Kind,
        op: str,
        body: dict[str, Any],
        prev_route: str | None,
        route_change: bool = True,
        spec_write: bool = False,
    ) -> dict[str, Any]:
        self.require_lock()
        row, change = self._next_rows(kind, op, body, prev_route, route_change, spec_write)
        if op == "create":
            self.conn.execute(_INSERT_OBJECT, row)
        elif op == "delete":
            key = ("b_kind", "b_namespace", "b_name")
            self.conn.execute(_DELETE_OBJECT, {k: row[k] for k in key})
        else:
            self.conn.execute(_UPDATE_OBJECT, row)
        self.conn.execute(_INSERT_CHANGE, change)
        return body

    def _next_rows(
        self,
        kind: Kind,
        op: str,
        body: dict[str, Any],
        prev_route: str | None,
        route_change: bool,
        spec_write: bool,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Give ``body`` the next revision; its ``objects`` row and its ``changes`` row."""
        revision = self.head + 1
        meta = body["metadata"] = {**body["metadata"], "resourceVersion": str(revision)}
        text = _deleted_text(body) if op == "delete" else stored_text(kind, body, spec_write)
        self.head = revision  # only once the body is known to be storable
        route = kind.route(body)
        row = {
            "b_kind": kind.name,
            "b_namespace": _ns(kind, meta.get("namespace")),
            "b_name": meta["name"],
            "b_rv": self.head,
            "b_route": route,
            "b_body": text,
        }
        change = {
            **row,
            "b_op": op,
            "b_route": route if route_change else None,
            "b_prev_route": prev_route,
        }
        return row, change


class Store:
    """Objects, revisions and node bookkeeping over one SQLAlchemy engine."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float] = time.time,
        new_uid: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.engine = engine
        self.clock = clock
        self._new_uid = new_uid
        self._listeners: list[Callable[[int], None]] = []
        #: Whether reported twin values are kept as history (history_max_per_property > 0),
        #: and the properties whose values were merged into the indexed history (by any
        #: replica's reports) since take_history_written last looked.
        self.twin_history = True
        self._history_written: set[tuple[str, str, str]] = set()
        self._history_lock = threading.Lock()
        #: The per-property limit the whole history was last held to (history.prune).
        self.history_limit_checked: int | None = None
        #: What this process heard from a node since its lease was last written (set by the
        #: node registry); reads merge it over the stored lease.
        self.live_lease: Callable[[str], LiveLease | None] = lambda name: None
        postgres = engine.dialect.name == "postgresql"
        #: Whether the database locks rows (PostgreSQL), so lock-free transactions can run
        #: beside locking ones; SQLite locks the whole database at BEGIN.
        self.row_locks = postgres
        self._repeatable = {"isolation_level": "REPEATABLE READ"} if postgres else {}
        self._set_head = _SET_HEAD_NOTIFY if postgres else _SET_HEAD

    def migrate(self) -> int:
        return schema.migrate(self.engine)

    def on_commit(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(head)`` after every commit that wrote a revision."""
        self._listeners.append(listener)

    @contextmanager
    def writing(self, lock_free: bool = False) -> Iterator[Tx]:
        """A write transaction holding the revision lock; listeners run after commit.

        On PostgreSQL a transaction that moved the head also notifies
        :data:`CHANGES_CHANNEL` with it, which every listening replica hears at commit.
        ``lock_free``: one that does not take the lock, for work that writes only node
        rows (see the module's docstring); on SQLite, whose transactions take the whole
        database's write lock at BEGIN anyway, it makes no difference.
        """
        lock_free = lock_free and self.row_locks
        with self.engine.begin() as conn:
            head = conn.execute(_HEAD if lock_free else _LOCK_HEAD).scalar_one()
            tx = Tx(
                conn,
                head,
                self.clock(),
                self._new_uid,
                self.twin_history,
                locked=not lock_free,
            )
            yield tx
            tx.flush_history()
            if tx.head != tx.start:
                conn.execute(self._set_head, {"b_head": tx.head})
        if tx.head != tx.start:
            for listener in self._listeners:
                listener(tx.head)

    def note_history_merged(self, keys: set[tuple[str, str, str]]) -> None:
        """(namespace, device, property) whose values history.merge just moved."""
        with self._history_lock:
            self._history_written |= keys

    def take_history_written(self) -> set[tuple[str, str, str]]:
        """(namespace, device, property) given values in the indexed history since the last
        call: the only ones whose count can have grown."""
        with self._history_lock:
            keys, self._history_written = self._history_written, set()
        return keys

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read transaction: every statement in it sees the same revision."""
        with self.engine.connect() as conn:
            conn.execution_options(readonly=True, **self._repeatable)
            with conn.begin():
                yield conn

    # -- objects --------------------------------------------------------------

    def create(self, kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        with self.writing() as tx:
            return tx.create(kind, obj)

    def replace(
        self, kind: Kind, obj: dict[str, Any], expected_rv: int | None = None
    ) -> dict[str, Any]:
        with self.writing() as tx:
            return tx.replace(kind, obj, expected_rv)

    def delete(
        self, kind: Kind, namespace: str | None, name: str, expected_rv: int | None = None
    ) -> dict[str, Any]:
        with self.writing() as tx:
            return tx.delete(kind, namespace, name, expected_rv)

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        with self.reading() as conn:
            row = conn.execute(
                select(objects.c.body).where(
                    objects.c.kind == kind.name,
                    objects.c.namespace == _ns(kind, namespace),
                    objects.c.name == name,
                )
            ).scalar_one_or_none()
            if row is None:
                raise NotFound(kind.name, _ns(kind, namespace), name)
            body = json.loads(row)
            if kind is NODE:
                self._decorate_nodes(conn, [body])
            return body

    def list(self, kind: Kind, namespace: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """The objects of ``kind`` (in one namespace, or all) and the revision they reflect."""
        with self.reading() as conn:
            head = conn.execute(_HEAD).scalar_one()
            query = select(objects.c.body).where(objects.c.kind == kind.name)
            if namespace is not None and kind.namespaced:
                query = query.where(objects.c.namespace == namespace)
            query = query.order_by(objects.c.namespace, objects.c.name)
            items = [json.loads(b) for b in conn.execute(query).scalars()]
            if kind is NODE:
                self._decorate_nodes(conn, items)
            return items, head

    # -- serving stored text ---------------------------------------------------
    # The REST API serves objects as the JSON text they are stored as: decoding a
    # large object into dicts for every reader costs many times its size, and Python
    # keeps the arenas those dicts filled. Only Nodes are decoded (their lease is
    # merged into status); they are small.

    def get_text(self, kind: Kind, namespace: str | None, name: str) -> str:
        """The stored JSON text of one object (a Node with its lease merged)."""
        with self.reading() as conn:
            key = {"b_kind": kind.name, "b_namespace": _ns(kind, namespace), "b_name": name}
            text = conn.execute(_GET_BODY, key).scalar_one_or_none()
            if text is None:
                raise NotFound(kind.name, _ns(kind, namespace), name)
            return self._node_texts(conn, [text])[0] if kind is NODE else text

    def list_texts(self, kind: Kind, namespace: str | None = None) -> tuple[list[str], int]:
        """The stored JSON texts of ``kind`` (in one namespace, or all) and their revision."""
        with self.reading() as conn:
            head = conn.execute(_HEAD).scalar_one()
            query = (
                select(objects.c.body)
                .where(*_selection(objects, kind, namespace, None))
                .order_by(objects.c.namespace, objects.c.name)
            )
            texts = list(conn.execute(query).scalars())
            if kind is NODE:
                texts = self._node_texts(conn, texts)
            return texts, int(head)

    def object_page(
        self,
        kind: Kind,
        namespace: str | None,
        name: str | None,
        after: tuple[str, str] | None,
        written_after: int | None,
        max_rows: int = 100,
        max_chars: int = 256 * 1024,
    ) -> ObjectPage:
        """The objects of ``kind`` (one namespace or all; one name or all) after the key
        ``after``, in key order: at most ``max_rows``, and no more once ``max_chars`` of
        text are read, so a page holds about one large object at most. With
        ``written_after``, also the keys of the same selection written since then."""
        selected = _selection(objects, kind, namespace, name)
        query = select(
            objects.c.namespace, objects.c.name, objects.c.resource_version, objects.c.body
        ).where(*selected)
        params: dict[str, Any] = {}
        if after is not None:
            query = query.where(tuple_(objects.c.namespace, objects.c.name) > _AFTER_KEY)
            params = {"b_after_ns": after[0], "b_after_name": after[1]}
        query = query.order_by(objects.c.namespace, objects.c.name).limit(max_rows)
        with self.reading() as conn:
            compacted, head = conn.execute(_BOUNDS).one()
            rows: list[StoredObject] = []
            chars = 0
            # streamed (a server-side cursor on PostgreSQL): stop reading at the budget
            result = conn.execute(query.execution_options(yield_per=8), params)
            for ns, obj_name, rv, text in result:
                rows.append(StoredObject(ns, obj_name, int(rv), text))
                chars += len(text)
                if chars >= max_chars:
                    break
            result.close()
            done = len(rows) < max_rows and chars < max_chars
            if kind is NODE and rows:
                texts = self._node_texts(conn, [r.text for r in rows])
                rows = [r._replace(text=t) for r, t in zip(rows, texts, strict=True)]
            written: list[tuple[str, str, bool]] = []
            if written_after is not None:
                ahead = (
                    tuple_(changes.c.namespace, changes.c.name) > _AFTER_KEY
                    if after is not None
                    else true()
                )
                found = conn.execute(
                    select(changes.c.namespace, changes.c.name, ahead)
                    .where(changes.c.revision > written_after, changes.c.revision <= head)
                    .where(*_selection(changes, kind, namespace, name))
                    .distinct(),
                    params,
                )
                written = [(ns, obj_name, bool(is_ahead)) for ns, obj_name, is_ahead in found]
            return ObjectPage(int(head), int(compacted), rows, written, done)

    def _node_texts(self, conn: Connection, texts: list[str]) -> list[str]:
        nodes = [json.loads(t) for t in texts]
        self._decorate_nodes(conn, nodes)
        return [storable.dumps(n) for n in nodes]

    def head(self) -> int:
        with self.reading() as conn:
            return conn.execute(_HEAD).scalar_one()

    def node_conditions(self) -> dict[str, int]:
        """Nodes by their Ready condition as the database holds it: ``Ready``,
        ``NotReady``, and ``Unknown`` for a Node without a lease (it never connected)."""
        joined = objects.outerjoin(node_leases, node_leases.c.node == objects.c.name)
        query = (
            select(node_leases.c.ready, func.count())
            .select_from(joined)
            .where(objects.c.kind == NODE.name)
            .group_by(node_leases.c.ready)
        )
        counts = {"Ready": 0, "NotReady": 0, "Unknown": 0}
        with self.reading() as conn:
            for ready, count in conn.execute(query):
                name = "Unknown" if ready is None else "Ready" if ready else "NotReady"
                counts[name] += int(count)
        return counts

    def log_bounds(self) -> tuple[int, int]:
        """(compacted, head): the change log holds every revision after ``compacted``."""
        with self.reading() as conn:
            row = conn.execute(_BOUNDS).one()
            return row.compacted, row.head

    # -- change log -----------------------------------------------------------

    def changes_after(self, after: int, limit: int = 1000) -> list[ChangeRow]:
        """Change-log rows after revision ``after``, oldest first."""
        with self.reading() as conn:
            rows = conn.execute(_CHANGES_AFTER, {"b_after": after, "b_limit": limit})
            return [_change_row(r) for r in rows]

    def changes_for_node(self, node: str, after: int, limit: int = 1000) -> list[ChangeRow]:
        """Change-log rows after ``after`` that concern ``node``, oldest first."""
        with self.reading() as conn:
            rows = conn.execute(
                _CHANGES_FOR_NODE, {"b_after": after, "b_node": node, "b_limit": limit}
            )
            return [_change_row(r) for r in rows]

    def log_page(self, after: int, limit: int = 1000, node: str | None = None) -> LogPage:
        """Rows after ``after`` (for ``node``, or all) and the log's bounds, in one read."""
        with self.reading() as conn:
            compacted, head = conn.execute(_BOUNDS).one()
            if node is None:
                rows = conn.execute(_CHANGES_AFTER, {"b_after": after, "b_limit": limit})
            else:
                rows = conn.execute(
                    _CHANGES_FOR_NODE, {"b_after": after, "b_node": node, "b_limit": limit}
                )
            return LogPage([_change_row(r) for r in rows], int(compacted), int(head))

    def resume_view(
        self, node: str, revision: int, limit: int = 1000
    ) -> tuple[int, int, list[ChangeRow] | None]:
        """What a node that holds ``revision`` resumes from, in one read: the head and
        the first ``limit`` change-log rows for it, or None when it needs a snapshot."""
        with self.reading() as conn:
            compacted, head = conn.execute(_BOUNDS).one()
            if resume_mode(revision, compacted, head) == "snapshot":
                return compacted, head, None
            rows = conn.execute(
                _CHANGES_FOR_NODE, {"b_after": revision, "b_node": node, "b_limit": limit}
            )
            return compacted, head, [_change_row(r) for r in rows]

    def objects_for_node(self, node: str) -> tuple[list[dict[str, Any]], int]:
        """Every object routed to ``node`` and the revision this view reflects."""
        with self.reading() as conn:
            head = conn.execute(_HEAD).scalar_one()
            bodies = conn.execute(
                select(objects.c.body)
                .where(or_(objects.c.route == node, objects.c.route == ALL_NODES))
                .order_by(objects.c.resource_version)
            ).scalars()
            return [json.loads(b) for b in bodies], head

    def snapshot_page(
        self, node: str, after_key: tuple[str, str, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Up to ``limit`` objects routed to ``node`` (or to every node) whose key sorts after
        ``after_key`` (None: from the first), in key order, and the head at this read: a
        snapshot read a page at a time, so a session never holds a node's whole state."""
        query = select(objects.c.body).where(
            or_(objects.c.route == node, objects.c.route == ALL_NODES)
        )
        key = tuple_(objects.c.kind, objects.c.namespace, objects.c.name)
        if after_key is not None:
            query = query.where(key > tuple_(*(literal(k) for k in after_key)))
        query = query.order_by(objects.c.kind, objects.c.namespace, objects.c.name).limit(limit)
        with self.reading() as conn:
            head = conn.execute(_HEAD).scalar_one()
            return [json.loads(b) for b in conn.execute(query).scalars()], int(head)

    def compact(self, keep: int) -> int:
        """Drop change-log rows older than the newest ``keep`` revisions; returns the new bound."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(revision.c.head, revision.c.compacted)
                .where(revision.c.id == 1)
                .with_for_update()
            ).one()
            bound = row.head - keep
            if bound <= row.compacted:
                return int(row.compacted)
            conn.execute(delete(changes).where(changes.c.revision <= bound))
            conn.execute(update(revision).where(revision.c.id == 1).values(compacted=bound))
            return bound

    # -- nodes ----------------------------------------------------------------

    def decorate_node(self, body: dict[str, Any]) -> dict[str, Any]:
        """A copy of a Node body with its lease (last heartbeat, usage) merged into status."""
        body = copy.deepcopy(body)
        with self.reading() as conn:
            self._decorate_nodes(conn, [body])
        return body

    def _decorate_nodes(self, conn: Connection, nodes: list[dict[str, Any]]) -> None:
        """Merge the lease (last heartbeat, usage) and sync progress into Node status."""
        if not nodes:
            return
        names = [n["metadata"]["name"] for n in nodes]
        leases = {
            r.node: r
            for r in conn.execute(select(node_leases).where(node_leases.c.node.in_(names)))
        }
        syncs = {
            r.node: r for r in conn.execute(select(node_sync).where(node_sync.c.node.in_(names)))
        }
        for body in nodes:
            name = body["metadata"]["name"]
            status = body.setdefault("status", {})
            lease, live = leases.get(name), self.live_lease(name)
            if lease is not None:
                # this process's memory counts only while it is newer than the database: the
                # node may have moved to another replica, which wrote since
                if live is not None and live.heartbeat < lease.heartbeat:
                    live = None
                beat = rfc3339(live.heartbeat if live else lease.heartbeat)
                status["lastHeartbeatTime"] = beat
                status["usage"] = live.usage if live and live.usage else json.loads(lease.usage)
                for cond in status.get("conditions", []):
                    if cond.get("type") == "Ready":
                        cond["lastHeartbeatTime"] = beat
            sync = syncs.get(name)
            if sync is not None:
                status["sync"] = {
                    "ackedRevision": max(sync.acked_revision, live.acked_revision if live else 0),
                    "reportSeq": max(sync.report_seq, live.report_seq if live else 0),
                }


def _selection(table: Any, kind: Kind, namespace: str | None, name: str | None) -> list[Any]:
    """Conditions on ``table`` (objects or changes) for a kind, namespace and name."""
    where = [table.c.kind == kind.name]
    if namespace is not None and kind.namespaced:
        where.append(table.c.namespace == namespace)
    if name is not None:
        where.append(table.c.name == name)
    return where


def _change_row(row: Any) -> ChangeRow:
    return ChangeRow(
        revision=row.revision,
        kind=row.kind,
        namespace=row.namespace,
        name=row.name,
        op=row.op,
        route=row.route,
        prev_route=row.prev_route,
        body=json.loads(row.body),
        size=len(row.body),
    )


def kind_by_name(name: str) -> Kind:
    return _KIND_BY_NAME[name]
