"""The edge's SQLite file: the cache of desired state and the outbox to the hub.

The standard library's sqlite3 is used directly rather than SQLAlchemy: on a
gateway SQLAlchemy's import alone costs about 13 MB of RSS (measured; see
docs/DESIGN.md, "Decisions"). The file is in WAL mode with synchronous=FULL:
once a transaction returns, it survives a power cut.

Tables::

    meta(key, value)                   node, revision (last applied hub revision)
    objects(kind, namespace, name, resource_version, body)
    snapshot_staging(…as objects)      a snapshot being received, until its final frame
    outbox(seq, topic, key, body, created)   seq only grows (AUTOINCREMENT)
    twins(device_id, body)             device twin state

One transaction applies a batch of changes together with its revision; one
transaction writes an outbox row, replacing an older row with the same key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from edgecore import outboxrows
from edgecore.drops import Drops
from edgecore.outage import TOPIC as OUTAGE_TOPIC
from edgecore.outage import OutageLog
from edgeward.errors import ConfigError
from edgeward.protocol import MAX_FRAME_BYTES, TOPIC_NODE_STATUS, Change, ReportItem

T = TypeVar("T")

#: The node's own rows, which an outage report does not count as reports it buffered.
UNCOUNTED = frozenset({TOPIC_NODE_STATUS, OUTAGE_TOPIC})

#: The largest integer SQLite stores (a seq bound no row reaches).
SQLITE_MAX_INT = 2**63 - 1

#: Meta key present once the file has been aligned with the hub's seq (align_outbox).
ALIGNED = "outbox_aligned"

#: A row's share of the outbox quota: the bytes of its topic, key and body as stored.
ROW_BYTES = (
    "length(CAST(topic AS BLOB)) + coalesce(length(CAST(key AS BLOB)), 0) "
    "+ length(CAST(body AS BLOB))"
)


@dataclass(frozen=True)
class OutboxLimits:
    """How much the outbox keeps for the hub (edgecore.config.OutboxConfig)."""

    quota_bytes: int = 256 * 2**20
    event_ttl: float = 7 * 24 * 3600.0


log = logging.getLogger(__name__)

#: Rows checked when they were written, parsed as they are read (json.loads builds a
#: decoder per call; one is enough).
_decode_json = json.JSONDecoder().decode


def _parse_checked(raw: bytes) -> Any:
    try:
        return _decode_json(raw.decode("utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON: the file was damaged since
        raise outboxrows.Refused(outboxrows.UNSTORABLE, f"the body is not JSON: {exc}") from None


#: JSON as stored: compact. One encoder for every row (json.dumps builds one per call).
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _v1(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE objects (
            kind TEXT NOT NULL,
            namespace TEXT NOT NULL,
            name TEXT NOT NULL,
            resource_version INTEGER NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (kind, namespace, name)
        );
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            key TEXT,
            body TEXT NOT NULL,
            created REAL NOT NULL
        );
        CREATE UNIQUE INDEX outbox_key ON outbox (key) WHERE key IS NOT NULL;
        """,
    )


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the migration's open transaction first
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _v2(db: sqlite3.Connection) -> None:
    # device twin state (devicetwin.DeviceTwin.to_dict()), one row per device bound here
    db.execute("CREATE TABLE twins (device_id TEXT PRIMARY KEY, body TEXT NOT NULL)")


def _v3(db: sqlite3.Connection) -> None:
    # a snapshot from the hub, frame by frame, until its final frame replaces the cache
    db.execute(
        "CREATE TABLE snapshot_staging (kind TEXT NOT NULL, namespace TEXT NOT NULL, "
        "name TEXT NOT NULL, resource_version INTEGER NOT NULL, body TEXT NOT NULL, "
        "PRIMARY KEY (kind, namespace, name))"
    )


def _v4(db: sqlite3.Connection) -> None:
    # 1: the row was checked when it was written (outboxrows.encode) and is sent as it is;
    # 0: an older edgecore wrote it, so it is checked where it is read for sending
    db.execute("ALTER TABLE outbox ADD COLUMN checked INTEGER NOT NULL DEFAULT 0")


#: Ordered schema steps (PRAGMA user_version counts the steps run). Append only:
#: gateways are upgraded in place and run the steps they have not run yet.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3, _v4]


@dataclass(frozen=True)
class Applied:
    """One cached object as a batch from the hub changed it (None: absent)."""

    kind: str
    namespace: str
    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class CacheCounts(NamedTuple):
    """What the cache holds, for the daemon's status line."""

    devices: int
    outbox: int


#: Runs inside the transaction that applied a batch and gets what changed; what it
#: returns is handed back to the caller after the commit.
Observer = Callable[[list[Applied]], Any]


class EdgeStore:
    """Synchronous access to edge.db; use it from one thread (see :class:`StoreThread`)."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.time,
        limits: OutboxLimits = OutboxLimits(),
    ) -> None:
        self.path = path
        self.clock = clock
        self.limits = limits
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        # 1 MiB of page cache instead of 2: the working set is small, RSS is the budget
        self.db.execute("PRAGMA cache_size=-1024")
        self._transaction = _Transaction(self.db)
        #: Outbox rows refused when written (too_large, unstorable) or deleted unsent
        #: (quarantined), by reason: see the outbox section.
        self.outbox_drops = Drops(log)
        #: Failures logged at a limited rate that drop nothing (outage bookkeeping).
        self._problems = Drops(log)
        self._migrate()
        #: Bytes the outbox's rows take (ROW_BYTES), kept current by every write and delete,
        #: and the (rows, bytes) of each topic among them (a new tuple each time: another
        #: thread may take a copy of the dict at any moment).
        self.outbox_bytes = 0
        self.outbox_kinds: dict[str, tuple[int, int]] = {}
        self._count_outbox_bytes()
        self._transaction.on_rollback = self._count_outbox_bytes
        #: (revision, digest) of the cache, as last computed (cache_digest).
        self._digest: tuple[int, str] | None = None
        #: The open outage, counting what the node does alone (edgecore.outage).
        self.outages = OutageLog(self._meta, self._set_meta, clock)
        #: A state row edge.db could not take (a full disk), sent from memory (hold_state),
        #: and the seq it took: rows written later take seqs above it.
        self._held: ReportItem | None = None
        self._reserved_seq = 0

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise ConfigError(
                [
                    f"{self.path} has schema version {version}, newer than this edgecore "
                    f"understands ({len(MIGRATIONS)}); upgrade edgecore"
                ]
            )
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                step(self.db)
                self.db.execute(f"PRAGMA user_version = {number}")
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:  # a full disk may have rolled it back already
                    self.db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.db.close()

    # -- meta -----------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def claim(self, node: str) -> None:
        """Bind this file to ``node``; refuse a file that belongs to another node."""
        owner = self._meta("node")
        if owner is None:
            with self._tx():
                self._set_meta("node", node)
        elif owner != node:
            raise ConfigError(
                [
                    f"{self.path} holds the cache of node {owner!r}, not {node!r}: "
                    "use another data_dir or the original node name"
                ]
            )

    def revision(self) -> int:
        value = self._meta("revision")
        return 0 if value is None else int(value)

    # -- desired state --------------------------------------------------------

    def apply_changes(
        self, revision: int, changes: Iterable[Change], observe: Observer | None = None
    ) -> Any:
        """Apply a batch and record ``revision``, all in one transaction.

        A change older than what is stored is skipped, so replays are harmless.
        ``observe`` sees what changed, inside the same transaction (so what it
        writes, e.g. twin state and outbox rows, commits or fails with the batch).
        """
        with self._tx():
            applied = []
            for change in changes:
                key = (change.kind, change.namespace, change.name)
                row = self.db.execute(
                    "SELECT resource_version, body FROM objects "
                    "WHERE kind = ? AND namespace = ? AND name = ?",
                    key,
                ).fetchone()
                if row is not None and row[0] > change.resource_version:
                    continue
                before = None if row is None else json.loads(row[1])
                if change.op == "put":
                    self._put(change)
                elif row is not None:
                    self.db.execute(
                        "DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?", key
                    )
                if before is not None or change.object is not None:
                    applied.append(Applied(*key, before, change.object))
            self._set_meta("revision", str(revision))
            return observe(applied) if observe is not None else None

    def stage_snapshot(
        self,
        revision: int,
        changes: Iterable[Change],
        first: bool,
        final: bool,
        observe: Observer | None = None,
    ) -> Any:
        """Keep a snapshot frame's objects aside (``first``: drop what an unfinished earlier
        snapshot left); with ``final``, make the cache exactly what is staged and record
        ``revision``, all in one transaction. A snapshot never sits in memory whole."""
        with self._tx():
            if first:
                self.db.execute("DELETE FROM snapshot_staging")
            self.db.executemany(
                "INSERT INTO snapshot_staging (kind, namespace, name, resource_version, body) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, namespace, name) DO UPDATE SET "
                "resource_version = excluded.resource_version, body = excluded.body",
                [(*c.key, c.resource_version, _encode(c.object)) for c in changes],
            )
            if not final:
                return None
            return self._replace_from_staging(revision, observe)

    def _replace_from_staging(self, revision: int, observe: Observer | None) -> Any:
        before = {
            (kind, ns, name): body
            for kind, ns, name, body in self.db.execute(
                "SELECT kind, namespace, name, body FROM objects"
            )
        }
        applied = []
        for kind, ns, name, body in self.db.execute(
            "SELECT kind, namespace, name, body FROM snapshot_staging"
        ).fetchall():
            old = before.pop((kind, ns, name), None)
            if old != body:  # unchanged objects need no observer: nothing about them moved
                was = None if old is None else json.loads(old)
                applied.append(Applied(kind, ns, name, was, json.loads(body)))
        applied.extend(Applied(*key, json.loads(body), None) for key, body in before.items())
        self.db.execute("DELETE FROM objects")
        self.db.execute(
            "INSERT INTO objects (kind, namespace, name, resource_version, body) "
            "SELECT kind, namespace, name, resource_version, body FROM snapshot_staging"
        )
        self.db.execute("DELETE FROM snapshot_staging")
        self._set_meta("revision", str(revision))
        return observe(applied) if observe is not None else None

    def replace_all(
        self, revision: int, changes: Iterable[Change], observe: Observer | None = None
    ) -> Any:
        """Make the cache exactly the snapshot, and record its revision, in one transaction."""
        return self.stage_snapshot(revision, changes, first=True, final=True, observe=observe)

    def get_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT body FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
            (kind, namespace, name),
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def _put(self, change: Change) -> None:
        self.db.execute(
            "INSERT INTO objects (kind, namespace, name, resource_version, body) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, namespace, name) DO UPDATE SET "
            "resource_version = excluded.resource_version, body = excluded.body",
            (
                change.kind,
                change.namespace,
                change.name,
                change.resource_version,
                _encode(change.object),
            ),
        )

    def objects(self, kind: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT body FROM objects WHERE kind = ? ORDER BY namespace, name", (kind,)
        )
        return [json.loads(body) for (body,) in rows]

    # -- outbox ---------------------------------------------------------------
    #
    # The hub could never take a row whose body is not storable JSON or is larger than
    # storable.MAX_REPORT_BYTES: such a row is refused where it is written (counted in
    # outbox_drops, logged at a limited rate, never sent). A row already stored that the hub
    # could not take (an older edgecore wrote it) is deleted where it is read for sending,
    # counted as quarantined and logged: sent, it would be refused, or, larger than a frame,
    # close the link every time and hold back every row behind it.

    def report_state(self, topic: str, key: str, body: dict[str, Any]) -> int | None:
        """Queue the latest value of ``key``; an older unacknowledged value is replaced.
        Returns the row's seq, None when it is refused (the older value is kept)."""
        text = self.encode_row(topic, key, body)
        if text is None:
            return None
        with self._tx():
            replaced = self._delete("DELETE FROM outbox WHERE key = ?", (key,))
            if topic not in UNCOUNTED:
                self.outages.count("coalesced", replaced)
            seq = self._append(topic, key, text)
        if self._held is not None and self._held.key == key:
            self._held = None  # the stored row is newer
        return seq

    def hold_state(self, topic: str, key: str, body: dict[str, Any]) -> int | None:
        """Keep in memory, to be sent with the outbox's rows, the latest value of ``key``
        when edge.db cannot take it (a full disk): the node's status then still reaches
        the hub, which would otherwise see a connected node go silent and mark it NotReady
        just when it most needs to see its disk. The row takes a seq above every row
        issued so far, reserved in memory: rows written later are numbered above it (see
        _follow_reserved), and after a restart the hub's higher seq is followed by
        :meth:`align_outbox`. A later value of ``key`` replaces it, in memory or stored.
        Returns its seq, None when the row is refused."""
        text = self.encode_row(topic, key, body)
        if text is None:
            return None
        seq = max(self._high_seq(), self._reserved_seq) + 1  # a read works on a full disk
        self._reserved_seq = seq
        self._held = ReportItem(seq=seq, topic=topic, key=key, body=json.loads(text))
        return seq

    def _follow_reserved(self) -> None:
        """In a transaction about to insert outbox rows: number them above any seq a held
        row took (hold_state)."""
        if self._reserved_seq and self._high_seq() < self._reserved_seq:
            self._set_high_seq(self._reserved_seq)

    def report_event(self, topic: str, body: dict[str, Any]) -> int | None:
        """Queue an event; events never replace each other. Returns the row's seq, None when
        it is refused."""
        text = self.encode_row(topic, None, body)
        if text is None:
            return None
        with self._tx():
            return self._append(topic, None, text)

    def _append(self, topic: str, key: str | None, text: str) -> int:
        self._follow_reserved()
        cur = self.db.execute(
            "INSERT INTO outbox (topic, key, body, created, checked) VALUES (?, ?, ?, ?, 1)",
            (topic, key, text, self.clock()),
        )
        assert cur.lastrowid is not None
        self._tally(topic, 1, _row_bytes(topic, key, text))
        if topic not in UNCOUNTED:
            self.outages.count("buffered")
        self._keep_quota()
        return cur.lastrowid

    def _count_outbox_bytes(self) -> None:
        """outbox_bytes and outbox_kinds from the table itself: at start, and after a
        rolled-back write."""
        try:
            rows = self.db.execute(
                f"SELECT CAST(topic AS BLOB), count(*), total({ROW_BYTES}) FROM outbox "
                "GROUP BY topic"
            ).fetchall()
        except sqlite3.Error:
            return  # the counts stay as they were; the next rollback or start counts again
        self.outbox_kinds = {_kind(raw): (n, int(size)) for raw, n, size in rows}
        self.outbox_bytes = sum(size for _, size in self.outbox_kinds.values())

    def _tally(self, topic: str, rows: int, size: int) -> None:
        """``rows`` rows of ``size`` bytes in all were added to (or, negative, deleted from)
        the outbox."""
        self.outbox_bytes += size
        n, b = self.outbox_kinds.get(topic, (0, 0))
        self.outbox_kinds[topic] = (n + rows, b + size)

    def _delete(self, statement: str, params: tuple[Any, ...]) -> int:
        """Run a DELETE on the outbox, keeping outbox_bytes current; the rows deleted."""
        # the topic as bytes: a damaged row's may not be UTF-8 (see pending)
        freed = self.db.execute(
            f"{statement} RETURNING CAST(topic AS BLOB), {ROW_BYTES}", params
        ).fetchall()
        for raw, size in freed:
            self._tally(_kind(raw), -1, -size)
        return len(freed)

    def _keep_quota(self) -> None:
        """Past the quota, delete the oldest events until the outbox fits (in the caller's
        transaction); rows with a key (the latest state of something) are never deleted."""
        dropped = 0
        while self.outbox_bytes > self.limits.quota_bytes:
            excess = self.outbox_bytes - self.limits.quota_bytes
            oldest = self.db.execute(
                f"SELECT seq, {ROW_BYTES} FROM outbox WHERE key IS NULL ORDER BY seq LIMIT 256"
            ).fetchall()
            if not oldest:
                break  # only latest states left: those are kept whatever the quota says
            last = oldest[-1][0]
            for seq, size in oldest:
                excess -= size
                if excess <= 0:
                    last = seq
                    break
            dropped += self._delete("DELETE FROM outbox WHERE key IS NULL AND seq <= ?", (last,))
        if dropped:
            self.outages.count("dropped", dropped)
            self.outbox_drops.add(
                "quota",
                f"outbox: over its quota of {self.limits.quota_bytes / 2**20:g} MiB; deleted "
                f"the {dropped} oldest events unsent (outbox.quota_mb)",
                dropped,
            )

    def expire_events(self) -> int:
        """Delete events older than the event TTL, unsent; the number deleted (counted)."""
        with self._tx():
            expired = self._delete(
                "DELETE FROM outbox WHERE key IS NULL AND created < ?",
                (self.clock() - self.limits.event_ttl,),
            )
            self.outages.count("expired", expired)
        if expired:
            self.outbox_drops.add(
                "expired",
                f"outbox: {expired} events waited longer than "
                f"{self.limits.event_ttl:g} s for the hub and were deleted unsent "
                "(outbox.event_ttl)",
                expired,
            )
        return expired

    def encode_row(self, topic: str, key: str | None, body: dict[str, Any]) -> str | None:
        """The body's text as stored, or None (counted and logged) when the hub could not
        take it."""
        try:
            return outboxrows.encode(body)
        except outboxrows.Refused as refused:
            about = topic if key is None else f"{topic} ({key})"
            self.outbox_drops.add(
                refused.reason, f"outbox: refused a row on {about}, never sent: {refused.detail}"
            )
            return None

    def report_many(self, rows: Iterable[tuple[str, str | None, dict[str, Any]]]) -> None:
        """Queue ``(topic, key, body)`` rows in order, as report_state (a key) or report_event
        (None) would one by one: of several rows with one key only the last is written, at
        the place of its last occurrence. A refused row is left out (an older row of its key
        stays)."""
        latest: dict[object, tuple[str, str | None, dict[str, Any]]] = {}
        for n, row in enumerate(rows):
            slot = n if row[1] is None else row[1]  # events never share a slot
            latest.pop(slot, None)
            latest[slot] = row
        encoded = []
        for topic, key, body in latest.values():
            text = self.encode_row(topic, key, body)
            if text is not None:
                encoded.append((topic, key, text))
        self.write_rows(encoded)

    def write_rows(self, rows: Iterable[tuple[str, str | None, str]]) -> None:
        """Queue ``(topic, key, text)`` rows, in order, encoded by :meth:`encode_row` and
        with at most one row per key: each replaces its key's unacknowledged row."""
        created = self.clock()
        written = [(topic, key, text, created) for topic, key, text in rows]
        with self._tx():
            for topic, key, _, _ in written:
                if key is not None:
                    replaced = self._delete("DELETE FROM outbox WHERE key = ?", (key,))
                    if topic not in UNCOUNTED:
                        self.outages.count("coalesced", replaced)
            self._follow_reserved()
            self.db.executemany(
                "INSERT INTO outbox (topic, key, body, created, checked) VALUES (?, ?, ?, ?, 1)",
                written,
            )
            for topic, key, text, _ in written:
                self._tally(topic, 1, _row_bytes(topic, key, text))
            self.outages.count("buffered", sum(t not in UNCOUNTED for t, _, _, _ in written))
            self._keep_quota()
        if self._held is not None and any(key == self._held.key for _, key, _, _ in written):
            self._held = None  # the stored row is newer

    def pending(
        self, after: int, limit: int = 500, max_bytes: int = 256 * 1024
    ) -> list[ReportItem]:
        """Outbox rows after seq ``after``, oldest first, at most ``limit`` rows or about
        ``max_bytes`` of bodies (always at least one row when any is pending). The frame
        they make is never larger than protocol.MAX_FRAME_BYTES; rows the hub could not take
        are quarantined on the way."""
        budget = MAX_FRAME_BYTES - outboxrows.FRAME_OVERHEAD
        items: list[ReportItem] = []
        size = frame = 0
        # a held row (hold_state) goes alone, once every stored row below it has gone
        held = self._held if self._held is not None and self._held.seq > after else None
        below = held.seq if held is not None else SQLITE_MAX_INT
        # Bytes, not text: a row's text may not even be UTF-8.
        rows = self.db.execute(
            "SELECT seq, checked, CAST(topic AS BLOB), CAST(key AS BLOB), CAST(body AS BLOB) "
            "FROM outbox WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?",
            (after, below, limit),
        )
        bad: list[int] = []
        for seq, checked, raw_topic, raw_key, raw_body in rows:
            try:
                topic, key = _text(raw_topic), None if raw_key is None else _text(raw_key)
                if not topic:
                    raise outboxrows.Refused(outboxrows.UNSTORABLE, "the topic is empty")
                if checked:  # checked when it was written: parse it, nothing more
                    body, body_bytes = _parse_checked(raw_body), len(raw_body)
                else:
                    body, body_bytes = outboxrows.decode(raw_body)
                item_bytes = (
                    body_bytes
                    + outboxrows.text_bytes(topic)
                    + outboxrows.text_bytes(key)
                    + outboxrows.ITEM_OVERHEAD
                )
                if item_bytes > budget:
                    raise outboxrows.Refused(
                        outboxrows.TOO_LARGE, f"the row is {item_bytes} bytes, more than a frame"
                    )
            except outboxrows.Refused as refused:
                self._quarantined(seq, raw_topic, refused)
                bad.append(seq)
                continue
            if items and (size + body_bytes > max_bytes or frame + item_bytes > budget):
                break
            size += body_bytes
            frame += item_bytes
            items.append(ReportItem(seq=seq, topic=topic, key=key, body=body))
        rows.close()
        if bad:
            with self._tx():
                for seq in bad:
                    self._delete("DELETE FROM outbox WHERE seq = ?", (seq,))
        if not items and held is not None:
            return [held]
        return items

    def _quarantined(self, seq: int, raw_topic: bytes, refused: outboxrows.Refused) -> None:
        self.outbox_drops.count("quarantined")
        log.warning(
            "outbox: deleted row %d (%s) unsent, the hub could not take it: %s",
            seq,
            raw_topic[:100].decode("utf-8", "replace"),
            refused.detail,
        )

    def count_rejected(self, rows: int) -> None:
        """The hub rejected ``rows`` rows for good (the session logged them): count them."""
        for _ in range(rows):
            self.outbox_drops.count("rejected")

    def acknowledge(self, seq: int) -> None:
        """The hub holds every row up to ``seq``: delete them.

        Without waiting for a disk sync: if power fails before the delete reaches the disk,
        the rows are sent again and the hub, which dedupes by seq, ignores them. The sync
        would otherwise delay the next twin update queued behind it.
        """
        if self._held is not None and self._held.seq <= seq:
            self._held = None
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._tx():
                self._delete("DELETE FROM outbox WHERE seq <= ?", (seq,))
                self.outages.live()
        finally:
            self.db.execute("PRAGMA synchronous=FULL")

    def align_outbox(self, hub_seq: int) -> None:
        """Reconcile with the highest seq the hub says it persisted for this node.

        Normally that acknowledges rows. The hub may hold seqs above any this file
        recorded issuing: a status sent from memory on a full disk (:meth:`hold_state`)
        took one, and rows below it the hub had acknowledged may still be here, undeleted;
        they are deleted like any acknowledged row. But a file that has never been aligned
        with the hub is a new one (the edge's data was wiped and the node came back under
        the same name): its rows are renumbered to follow ``hub_seq``, in order, so the hub
        does not take them for replays and drop them.

        On a full disk nothing is deleted (the next alignment or acknowledgement does it)
        and rows written later are numbered above ``hub_seq``: the link comes up anyway.
        Not for a file never aligned: its rows must be renumbered before any is sent, so
        the failure ends the session, which tries again.
        """
        if self._held is not None and self._held.seq <= hub_seq:
            self._held = None
        aligned_before = self._meta(ALIGNED) is not None
        try:
            with self._tx():
                high = self._high_seq()
                if hub_seq > high and not aligned_before:
                    self._renumber_after(hub_seq, high)
                else:
                    self._delete("DELETE FROM outbox WHERE seq <= ?", (hub_seq,))
                    if hub_seq > high:
                        self._set_high_seq(hub_seq)
                if not aligned_before:
                    self._set_meta(ALIGNED, "1")
        except sqlite3.OperationalError as exc:
            if not (aligned_before and is_storage_failure(exc)):
                raise
            self._reserved_seq = max(self._reserved_seq, hub_seq)
            self._problems.add(
                "align", f"outbox: could not delete the rows the hub holds ({exc}); later"
            )

    def _renumber_after(self, hub_seq: int, high: int) -> None:
        low = self.db.execute("SELECT min(seq) FROM outbox").fetchone()[0]
        if low is not None:
            # every new seq is above every old one (hub_seq > high): no clash on the way
            shift = hub_seq + 1 - int(low)
            self.db.execute("UPDATE outbox SET seq = seq + ?", (shift,))
            high += shift
        self._set_high_seq(max(high, hub_seq))

    def _high_seq(self) -> int:
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return 0 if row is None else int(row[0])

    def _set_high_seq(self, seq: int) -> None:
        if (
            self.db.execute(
                "UPDATE sqlite_sequence SET seq = ? WHERE name = 'outbox'", (seq,)
            ).rowcount
            == 0
        ):
            self.db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (seq,))

    # -- device twins --------------------------------------------------------

    def twins(self) -> dict[str, dict[str, Any]]:
        """Every stored twin state, by device id."""
        return dict(self.iter_twins())

    def iter_twins(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored twin state, one at a time: decoding them all first doubled
        edgecore's start-up peak (and so its RSS) with 1,000 devices."""
        for device_id, body in self.db.execute("SELECT device_id, body FROM twins"):
            yield device_id, json.loads(body)

    def save_twins(self, bodies: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Store each ``(device id, twin state)``, in one transaction. Each is encoded as it
        is written: a batch's states all decoded at once set edgecore's peak memory."""
        with self._tx():
            self.db.executemany(
                "INSERT INTO twins (device_id, body) VALUES (?, ?) "
                "ON CONFLICT (device_id) DO UPDATE SET body = excluded.body",
                ((device_id, _encode(body)) for device_id, body in bodies),
            )

    def delete_twins(self, device_ids: Iterable[str]) -> None:
        with self._tx():
            self.db.executemany("DELETE FROM twins WHERE device_id = ?", [(d,) for d in device_ids])

    # -- outages (edgecore.outage) ------------------------------------------------

    # Outage bookkeeping is best effort: a full disk must not stop the hub link or the
    # daemon over it. A failed write leaves memory as the disk has it.

    def outage_started(self) -> None:
        self._outage_step(self.outages.started)

    def outage_lost(self) -> None:
        self._outage_step(self.outages.lost)

    def outage_closed(self) -> dict[str, Any] | None:
        """The link is live: close the open outage, queuing its report when it has one."""

        def close() -> dict[str, Any] | None:
            report = self.outages.close()
            if report is not None:
                self.report_state(OUTAGE_TOPIC, f"outage/{report['start']!r}", report)
            return report

        return self._outage_step(close)

    def _outage_step(self, step: Callable[[], T]) -> T | None:
        before = None if self.outages.open is None else dict(self.outages.open)
        try:
            with self._tx():
                return step()
        except sqlite3.OperationalError as exc:
            self.outages.open = before
            self._problems.add("outage", f"could not record the node's outage: {exc}")
            return None

    def remember_batch(self, mids: list[int]) -> None:
        """The packet ids of the MQTT batch this transaction stores (see edgecore.twins)."""
        self._set_meta("mqtt_batch", json.dumps(mids))

    def unstored(self) -> dict[str, int]:
        """MQTT messages refused since this cache was made because edge.db could not store
        them (edgecore.twins), by kind, as last recorded."""
        raw = self._meta("unstored")
        if not raw:
            return {}
        if raw.isdigit():  # recorded before the count was split by kind
            return {"updates": int(raw)}
        try:
            kinds = json.loads(raw)
        except ValueError:
            return {}
        if not isinstance(kinds, dict):
            return {}
        return {k: v for k, v in kinds.items() if isinstance(k, str) and type(v) is int}

    def remember_unstored(self, kinds: dict[str, int]) -> None:
        """Record the refusal counts in the transaction under way (the first one that could
        be stored after them): a restart then still reports them."""
        self._set_meta("unstored", json.dumps(kinds, sort_keys=True))

    def last_batch(self) -> list[int]:
        raw = self._meta("mqtt_batch")
        try:
            mids = json.loads(raw) if raw else []
        except ValueError:
            return []
        return [m for m in mids if isinstance(m, int)] if isinstance(mids, list) else []

    def cache_digest(self) -> tuple[int, str]:
        """The revision the cache is at and the digest of what it holds (edgeward.sync),
        computed again only when the revision moved."""
        from edgeward.sync import cache_digest

        with self._tx():  # one snapshot: the revision and the objects agree
            revision = self.revision()
            if self._digest is None or self._digest[0] != revision:
                rows = self.db.execute("SELECT kind, namespace, name, body FROM objects")
                digest = cache_digest((k, ns, n, json.loads(b)) for k, ns, n, b in rows)
                self._digest = (revision, digest)
            return self._digest

    def outbox_size(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def outbox_status(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """What the node reports of its outbox: as usage (changing with every report: rows
        and bytes waiting) and as status (changing rarely: the quota, and the rows deleted
        unsent since edgecore started, by reason). The hub revisions the Node only for the
        second."""
        usage = {"outboxRows": self.outbox_size(), "outboxBytes": self.outbox_bytes}
        status = {
            "quotaBytes": self.limits.quota_bytes,
            "dropped": dict(sorted(self.outbox_drops.counts.items())),
        }
        return usage, status

    def health(self) -> CacheCounts:
        """The counts the status line shows, read holding the write lock: the watchdog's
        proof that the file takes writes. Nothing is written, so it costs no disk sync."""
        with self._tx():
            devices = self.db.execute("SELECT count(*) FROM objects WHERE kind = 'Device'")
            n_devices = int(devices.fetchone()[0])
            n_outbox = self.outbox_size()
        return CacheCounts(n_devices, n_outbox)

    # -- transactions ---------------------------------------------------------

    def transaction(self) -> _Transaction:
        """One transaction around several calls; the calls inside join it."""
        return self._tx()

    def observe_commits(self, observe: Callable[[float], None]) -> None:
        """Give ``observe`` the seconds each COMMIT of a transaction that wrote takes
        (edgecore.metrics; set before the store's thread starts)."""
        self._transaction.observe_commit = observe

    def _tx(self) -> _Transaction:
        return self._transaction


def _row_bytes(topic: str, key: str | None, text: str) -> int:
    """ROW_BYTES of a row about to be written."""
    return len(topic.encode()) + (0 if key is None else len(key.encode())) + len(text.encode())


def _kind(raw_topic: bytes) -> str:
    """A row's topic as outbox_kinds counts it: a damaged row's may not be UTF-8."""
    return raw_topic.decode("utf-8", "replace")


def _text(raw: bytes) -> str:
    """A topic or key as stored; Refused when it is not UTF-8 text."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise outboxrows.Refused(outboxrows.UNSTORABLE, "the topic or key is not UTF-8") from None


def open_store(path: Path, limits: OutboxLimits = OutboxLimits()) -> EdgeStore:
    """The edge store at ``path``; ConfigError with a one-line reason when it cannot be opened."""
    try:
        return EdgeStore(path, limits=limits)
    except sqlite3.DatabaseError as exc:
        raise ConfigError(
            [
                f"cannot open the edge cache {path}: {exc} (move it aside to start from an empty "
                "cache; the hub resends the desired state)"
            ]
        ) from None


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error); nested uses join the outer one.

    Whatever fails, the connection is left outside any transaction and the error that
    failed it is what the caller sees. SQLite may already have rolled back on its own
    (a full disk or an I/O error during a statement), and a COMMIT that fails (a
    deferred constraint, an I/O error) can leave the transaction open: without a
    ROLLBACK then, every later BEGIN would fail.
    """

    def __init__(
        self, db: sqlite3.Connection, on_rollback: Callable[[], None] | None = None
    ) -> None:
        self.db = db
        self.depth = 0
        #: Called after a rollback, to drop what the caller kept in memory of the transaction.
        self.on_rollback = on_rollback
        #: Given the seconds of each COMMIT of a transaction that wrote (None: not timed).
        self.observe_commit: Callable[[float], None] | None = None
        self._changes = 0  # the connection's total_changes at BEGIN

    def __enter__(self) -> None:
        if self.depth == 0:
            self.db.execute("BEGIN IMMEDIATE")
            self._changes = self.db.total_changes
        self.depth += 1

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.depth -= 1
        if self.depth > 0:
            return
        if exc_type is not None:
            self._roll_back()
            return
        observe = self.observe_commit
        # a transaction that only read (the watchdog's health check) syncs nothing
        if observe is None or self.db.total_changes == self._changes:
            self._commit()
            return
        started = time.perf_counter()
        self._commit()
        observe(time.perf_counter() - started)

    def _commit(self) -> None:
        try:
            self.db.execute("COMMIT")
        except BaseException:
            self._roll_back()
            raise

    def _roll_back(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        if self.on_rollback is not None:
            self.on_rollback()


class StoreThread:
    """Runs EdgeStore calls on one dedicated thread so the event loop never waits on fsync."""

    def __init__(self, store: EdgeStore) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-db")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()


def is_storage_failure(exc: sqlite3.OperationalError) -> bool:
    """SQLite could not write: a full disk, or an I/O error (not a bug, not a lock)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
    text = str(exc)
    return "disk is full" in text or "disk I/O error" in text
