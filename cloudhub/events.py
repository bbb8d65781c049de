"""Apps' uploads, kept by the hub: what mappers and apps publish on ``$hw/events/upload/#``
(and KubeEdge's ``SYS/dis/upload_records``) reaches the hub as an ``upload`` report row and
is stored once per (node, seq) for ``event_retention`` seconds.

An upload's *device* is its topic after ``$hw/events/upload/`` (``meter-7``, or
``default/meter-7``), empty for a bare ``$hw/events/upload`` or ``SYS/dis/upload_records``:
KubeEdge gives uploads no fixed shape, so the topic is what names their source. The body is
kept as JSON text (``topic``, ``payload``, and ``encoding: base64`` for a payload that was not
UTF-8), so any storable string survives PostgreSQL's TEXT, which refuses NUL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cloudhub.schema import events
from cloudhub.store import Tx
from devicetwin.topics import UPLOAD_PREFIX, UPLOAD_RECORDS
from edgeward import storable
from edgeward.errors import ReportRefused
from edgeward.protocol import ReportItem

#: The longest topic kept; MQTT allows 64 KiB, no mapper needs more than a few hundred.
MAX_TOPIC_CHARS = 1024
#: events.device is VARCHAR(512): PostgreSQL refuses longer, SQLite would not notice.
MAX_DEVICE_CHARS = 512
#: The most events one read returns.
MAX_PAGE = 1000


@dataclass(frozen=True)
class EventFilter:
    node: str | None = None
    device: str | None = None

    def where(self, query: Any) -> Any:
        if self.node is not None:
            query = query.where(events.c.node == self.node)
        if self.device is not None:
            under = events.c.device.startswith(self.device + "/", autoescape=True)
            query = query.where((events.c.device == self.device) | under)
        return query


def device_of(topic: str) -> str | None:
    """The upload's source as its topic names it; None when the topic names none."""
    rest = topic.removeprefix(UPLOAD_PREFIX)
    return rest[1:] if rest.startswith("/") and len(rest) > 1 else None


def record_upload(tx: Tx, node: str, item: ReportItem) -> None:
    """Keep one upload row; a seq already kept for the node is left as it is."""
    topic, payload = item.body.get("topic"), item.body.get("payload")
    if not isinstance(topic, str) or not (
        topic in (UPLOAD_PREFIX, UPLOAD_RECORDS) or topic.startswith(UPLOAD_PREFIX + "/")
    ):
        raise ReportRefused(f"upload: topic must be {UPLOAD_PREFIX}/… or {UPLOAD_RECORDS}")
    if len(topic) > MAX_TOPIC_CHARS or any(ord(c) < 32 for c in topic):
        raise ReportRefused(
            f"upload: the topic must be at most {MAX_TOPIC_CHARS} printable characters"
        )
    device = device_of(topic)
    if device is not None and len(device) > MAX_DEVICE_CHARS:  # the column's width
        raise ReportRefused(f"upload: the device part of the topic is over {MAX_DEVICE_CHARS}")
    if not isinstance(payload, str):
        raise ReportRefused("upload: payload must be a string")
    body: dict[str, Any] = {"topic": topic, "payload": payload}
    if item.body.get("encoding") == "base64":
        body["encoding"] = "base64"
    try:
        storable.check(body, storable.MAX_REPORT_BYTES, "upload")
    except storable.Unstorable as exc:
        raise ReportRefused(str(exc)) from None
    values = {
        "node": node,
        "seq": item.seq,
        "device": device,
        "received": tx.now,
        "body": storable.dumps(body),
    }
    dialect = tx.conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        make = pg_insert if dialect == "postgresql" else sqlite_insert
        tx.conn.execute(make(events).values(**values).on_conflict_do_nothing())
    else:  # pragma: no cover - the hub runs on SQLite or PostgreSQL
        tx.conn.execute(insert(events).values(**values))


def as_object(row: Any) -> dict[str, Any]:
    """An event as the API serves it."""
    body = json.loads(row.body)
    return {
        "id": int(row.id),
        "node": row.node,
        "seq": int(row.seq),
        "device": row.device,
        "receivedTime": row.received,
        **body,
    }


def read(engine: Engine, where: EventFilter, after: int, limit: int) -> list[dict[str, Any]]:
    """Events with an id above ``after``, oldest first, at most ``limit``."""
    query = where.where(select(events).where(events.c.id > after))
    query = query.order_by(events.c.id).limit(min(limit, MAX_PAGE))
    with engine.connect() as conn:
        return [as_object(row) for row in conn.execute(query)]


def newest(engine: Engine, where: EventFilter, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` newest events, oldest first."""
    query = where.where(select(events)).order_by(events.c.id.desc()).limit(min(limit, MAX_PAGE))
    with engine.connect() as conn:
        rows = [as_object(row) for row in conn.execute(query)]
    return rows[::-1]


def head(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one())


def expire(engine: Engine, before: float) -> int:
    """Delete events received before ``before``; the number deleted."""
    with engine.begin() as conn:
        return int(conn.execute(delete(events).where(events.c.received < before)).rowcount)
