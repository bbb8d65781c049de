"""Twin history: each reported value of each device property, with its time.

Written in the transaction that stores a ``twin/reported`` row (cloudhub/devicestatus.py),
one history row per property whose reported value or timestamp changed: the values the
hub received, after the edge coalesced what it could not send at once (an outage keeps
each property's latest value, not every one). Its time is the edge's timestamp of the
value, so values buffered through an outage keep the time they were measured; a
timestamp that is not a plausible time (before 2000, or a day ahead of the hub's clock)
is replaced by the time the hub received it.

The report path appends history rows to ``twin_history_recent``, which has no index but
its primary key; the leader moves them into ``twin_history``, indexed by property and time,
about once a second (:func:`merge`). Reads look at both. Inserting each value into the
per-property index as it arrived dirtied one index page per value, which cost the report
path up to a fifth of its rate; a merge writes each page once for all the values it
moves (docs/performance.md §9).

Bounded by ``history_retention`` (seconds since the hub received a value) and
``history_max_per_property`` (rows per property), both applied every minute
(:func:`prune`); docs/history.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, func, literal, select, text, union_all

from cloudhub.schema import twin_history, twin_history_recent
from cloudhub.store import HistoryRow, Store, Tx
from edgeward.watchdog import counted

#: Seconds between merges: values wait at most about this long in the unindexed table
#: that every read scans (at 10,000 values a second, a few milliseconds of a read).
MERGE_INTERVAL = 1.0
#: While merges keep failing (a full disk), one log line per this many failures.
FAILURES_PER_LINE = 60
#: Values a read returns at most.
MAX_PAGE = 10_000
#: Unmerged values :func:`waiting` counts at most, so that counting stays cheap however far
#: failing merges let the table grow.
MAX_COUNTED = 1_000_000
#: Epoch seconds of 2000-01-01: an edge timestamp before it is a clock that was never set.
_EARLIEST = 946_684_800.0
#: How far ahead of the hub an edge's clock may be before its timestamps are not believed.
_AHEAD = 24 * 3600.0

log = logging.getLogger(__name__)


def record(tx: Tx, device: dict[str, Any], entries: list[dict[str, Any]]) -> int:
    """Queue history rows for the reported values in ``entries`` (status.twins entries)
    that differ from those ``device``'s status holds; the number queued. They are written
    by ``tx.flush_history()``, at the latest when the transaction commits."""
    before = {
        t.get("propertyName"): t.get("reported")
        for t in device.get("status", {}).get("twins", [])
        if isinstance(t, dict)
    }
    meta = device["metadata"]
    rows = []
    for entry in entries:
        reported = entry.get("reported")
        if reported is None or reported == before.get(entry["propertyName"]):
            continue
        rows.append(
            HistoryRow(
                meta["namespace"],
                meta["name"],
                entry["propertyName"],
                _time(reported["metadata"].get("timestamp"), tx.now),
                tx.now,
                reported["value"],
            )
        )
    tx.history_rows.extend(rows)  # written by tx.flush_history(), before the commit
    return len(rows)


def _time(stamp: Any, now: float) -> float:
    """The value's time from the edge's timestamp (milliseconds), or ``now``."""
    try:
        seconds = int(stamp) / 1000.0
    except (TypeError, ValueError):
        return now
    return seconds if _EARLIEST <= seconds <= now + _AHEAD else now


@dataclass(frozen=True)
class Query:
    namespace: str
    device: str
    property: str
    since: float = 0.0
    limit: int = 1000


def read(engine: Engine, query: Query) -> list[dict[str, Any]]:
    """The newest ``limit`` values since ``since``, oldest first.

    One statement over both tables, so a merge committing meanwhile can neither hide a
    value nor show it twice. Of two values with one time, the later arrival is newer: a
    value not yet merged arrived after every merged one."""
    both = union_all(
        select(_newest(twin_history, query, arrival=0)),
        select(_newest(twin_history_recent, query, arrival=1)),
    ).subquery()
    statement = (
        select(both.c.time, both.c.value)
        .order_by(both.c.time.desc(), both.c.arrival.desc(), both.c.id.desc())
        .limit(query.limit)
    )
    with engine.connect() as conn:
        rows = conn.execute(statement).all()
    return [{"time": _rfc3339_ms(r.time), "value": r.value} for r in reversed(rows)]


def _newest(table: Any, query: Query, arrival: int) -> Any:
    """The newest ``limit`` values of ``query`` in ``table``, ranked by ``arrival``."""
    t = table
    return (
        select(t.c.time, t.c.value, literal(arrival).label("arrival"), t.c.id)
        .where(
            t.c.namespace == query.namespace,
            t.c.device == query.device,
            t.c.property == query.property,
            t.c.time >= query.since,
        )
        .order_by(t.c.time.desc(), t.c.id.desc())
        .limit(query.limit)
        .subquery()
    )


_COLUMNS = "namespace, device, property, time, received, value"
#: PostgreSQL: the rows deleted are the rows inserted, in one statement, so a report
#: committing meanwhile is neither lost nor moved twice, even by two merges at once.
_MOVE_POSTGRESQL = text(
    f"WITH moved AS (DELETE FROM twin_history_recent RETURNING id, {_COLUMNS}), "
    f"kept AS (INSERT INTO twin_history ({_COLUMNS}) "
    f"SELECT {_COLUMNS} FROM moved ORDER BY id) "
    "SELECT namespace, device, property, count(*) FROM moved GROUP BY 1, 2, 3"
)
#: SQLite: up to the newest staged id, under the write lock that the transaction takes at
#: BEGIN, so nothing is inserted between the statements.
_MOVING_SQLITE = text(
    "SELECT namespace, device, property, count(*) FROM twin_history_recent "
    "WHERE id <= :high GROUP BY 1, 2, 3"
)
_COPY_SQLITE = text(
    f"INSERT INTO twin_history ({_COLUMNS}) "
    f"SELECT {_COLUMNS} FROM twin_history_recent WHERE id <= :high ORDER BY id"
)
_DELETE_SQLITE = text("DELETE FROM twin_history_recent WHERE id <= :high")
_WAITING = text("SELECT count(*) FROM (SELECT 1 FROM twin_history_recent LIMIT :most) AS staged")


def merge(store: Store) -> int:
    """Move the values written since the last merge, by this hub or any replica, into
    ``twin_history`` in the order they arrived (ids there grow with the time a value was
    received, which the age limit's search needs), and note their properties for the
    count limit; the number moved."""
    with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            moved = conn.execute(_MOVE_POSTGRESQL).all()
        else:
            high = conn.execute(select(func.max(twin_history_recent.c.id))).scalar()
            if high is None:
                return 0
            moved = conn.execute(_MOVING_SQLITE, {"high": high}).all()
            conn.execute(_COPY_SQLITE, {"high": high})
            conn.execute(_DELETE_SQLITE, {"high": high})
    store.note_history_merged({(ns, device, prop) for ns, device, prop, _ in moved})
    return sum(count for *_, count in moved)


def waiting(engine: Engine) -> int:
    """Values not merged yet, up to MAX_COUNTED: about a second's worth while merges work,
    growing while they fail (and every read scans them)."""
    with engine.connect() as conn:
        return int(conn.execute(_WAITING, {"most": MAX_COUNTED}).scalar_one())


def _waiting_note(engine: Engine) -> str:
    try:
        count = waiting(engine)
    except Exception:  # the database may be what fails the merges
        return ""
    if count >= MAX_COUNTED:
        return f"; {MAX_COUNTED:,} or more values waiting"
    return f"; {counted(count, 'value')} waiting"


async def merge_forever(
    store: Store, leading: Callable[[], bool], interval: float = MERGE_INTERVAL
) -> None:
    """The leader's merges, every ``interval`` seconds. Values wait in the table reads
    already look at while merges fail (a full disk), so nothing is lost; a failure that
    repeats every second is logged once with its traceback, then once per
    FAILURES_PER_LINE with the count, and once more when merges work again."""
    failures = 0
    while True:
        if leading():
            try:
                await asyncio.to_thread(merge, store)
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.exception("moving the newest twin history values failed; retrying")
                elif failures % FAILURES_PER_LINE == 0:
                    note = await asyncio.to_thread(_waiting_note, store.engine)
                    log.error(
                        "moving the newest twin history values still fails "
                        "(%d times in a row%s): %s",
                        failures,
                        note,
                        (str(exc).splitlines() or [type(exc).__name__])[0],
                    )
            else:
                if failures:
                    log.warning("twin history values move again, after %d failures", failures)
                failures = 0
        await asyncio.sleep(interval)


def _rfc3339_ms(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def prune(store: Store, before: float, max_per_property: int) -> int:
    """Delete values received before ``before`` and, per property, all but the newest
    ``max_per_property``; the number deleted.

    The count is checked over the whole table once per process and limit (a sort of every
    row); after that only for the properties given rows since the last prune, the only
    ones that can have grown, so a prune costs what was written meanwhile."""
    t = twin_history
    merge(store)  # the values written since the last merge count too
    written = store.take_history_written()
    deleted = 0
    with store.engine.begin() as conn:
        first_kept = _first_received_since(conn, before)
        deleted += conn.execute(delete(t).where(t.c.id < first_kept)).rowcount
        if store.history_limit_checked != max_per_property:
            everyone = delete(t).where(t.c.id.in_(_surplus(max_per_property)))
            deleted += conn.execute(everyone).rowcount
            store.history_limit_checked = max_per_property
        else:
            for namespace, device, prop in sorted(written):
                mine = (t.c.namespace == namespace, t.c.device == device, t.c.property == prop)
                surplus = (
                    select(t.c.id)
                    .where(*mine)
                    .order_by(t.c.time.desc(), t.c.id.desc())
                    .offset(max_per_property)
                    .scalar_subquery()
                )
                deleted += conn.execute(delete(t).where(*mine, t.c.id.in_(surplus))).rowcount
    return int(deleted)


def _surplus(max_per_property: int) -> Any:
    """The ids past the newest ``max_per_property`` of every property."""
    t = twin_history
    rank = (
        func.row_number()
        .over(
            partition_by=(t.c.namespace, t.c.device, t.c.property),
            order_by=(t.c.time.desc(), t.c.id.desc()),
        )
        .label("rank")
    )
    ranked = select(t.c.id, rank).subquery()
    return select(ranked.c.id).where(ranked.c.rank > max_per_property)


def _first_received_since(conn: Any, before: float) -> int:
    """The first id received at ``before`` or later (one past the last id when none).

    Ids grow with the time the hub received each row, so a binary search over the primary
    key finds it, and the age limit needs no index of its own: one would cost every
    report a tenth more (the hub's clock stepping back only shifts the cut a little)."""
    t = twin_history
    low, high = conn.execute(select(func.min(t.c.id), func.max(t.c.id))).one()
    if low is None:
        return 0
    high += 1
    while low < high:
        mid = (low + high) // 2
        row = conn.execute(
            select(t.c.id, t.c.received).where(t.c.id >= mid).order_by(t.c.id).limit(1)
        ).one()
        if row.received < before:
            low = row.id + 1
        else:
            high = mid
    return int(low)
