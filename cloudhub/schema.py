"""The hub's tables and their migrations (SQLAlchemy Core, SQLite and PostgreSQL).

``revision`` is a one-row table: every write bumps ``head`` first, which takes
the row lock, so writes (from any hub replica) commit in revision order and a
reader that sees revision N sees every revision before it. ``changes`` is the
change log the edges resume from; ``compacted`` is the highest revision
already dropped from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    insert,
    inspect,
    select,
    text,
    update,
)

from edgeward.errors import SchemaTooNew

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
)

revision = Table(
    "revision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("head", BigInteger, nullable=False),
    Column("compacted", BigInteger, nullable=False),
)

objects = Table(
    "objects",
    metadata,
    Column("kind", String(64), primary_key=True),
    Column("namespace", String(63), primary_key=True),  # "" for cluster-scoped kinds
    Column("name", String(253), primary_key=True),
    Column("resource_version", BigInteger, nullable=False),
    Column("route", String(253), nullable=True),  # node name, "*" for every node, or NULL
    Column("body", Text, nullable=False),
)
Index("objects_route", objects.c.route)

changes = Table(
    "changes",
    metadata,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(64), nullable=False),
    Column("namespace", String(63), nullable=False),
    Column("name", String(253), nullable=False),
    Column("op", String(8), nullable=False),  # create | update | delete
    Column("route", String(253), nullable=True),
    Column("prev_route", String(253), nullable=True),
    Column("body", Text, nullable=False),
)
Index("changes_route", changes.c.route, changes.c.revision)
Index("changes_prev_route", changes.c.prev_route, changes.c.revision)

node_leases = Table(
    "node_leases",
    metadata,
    Column("node", String(253), primary_key=True),
    Column("heartbeat", Float, nullable=False),  # seconds since the epoch, hub clock
    Column("ready", Boolean, nullable=False),
    Column("usage", Text, nullable=False),  # the node's last reported usage, JSON
    # the hub replica serving the node's session (NULL: none), and that session's number:
    # each hello takes the next, and a replica writes for a node only under its own (v6)
    Column("owner", String(64), nullable=True),
    Column("session", BigInteger, nullable=False, server_default=text("0")),
)

node_sync = Table(
    "node_sync",
    metadata,
    Column("node", String(253), primary_key=True),
    Column("report_seq", BigInteger, nullable=False),  # highest outbox seq persisted
    Column("acked_revision", BigInteger, nullable=False),  # highest revision the edge acked
    # an operator asked that the node's next session start with a snapshot (schema v4)
    Column("resync", Boolean, nullable=False, server_default=false()),
)


tokens = Table(
    "tokens",
    metadata,
    Column("id", String(16), primary_key=True),  # public half of a token, shown in lists
    Column("secret_sha256", String(64), nullable=False),  # the secret half is never stored
    Column("role", String(16), nullable=False),  # admin | viewer | node
    Column("node", String(253), nullable=True),  # a node token bound to one node name
    Column("created", Float, nullable=False),
    Column("expires", Float, nullable=True),  # NULL: never (the admin credential)
    Column("single_use", Boolean, nullable=False),
    Column("used", Float, nullable=True),  # when a single-use token joined a node
    Column("revoked", Float, nullable=True),
    Column("created_by", String(253), nullable=False),
    Column("description", String(253), nullable=False),
)

node_certs = Table(
    "node_certs",
    metadata,
    Column("serial", String(40), primary_key=True),  # lowercase hex, no leading zeros
    Column("node", String(253), nullable=False),
    Column("not_after", Float, nullable=False),
    Column("revoked", Boolean, nullable=False),
)
Index("node_certs_node", node_certs.c.node)


#: Apps' uploads ($hw/events/upload/…), kept once per (node, seq) for ``event_retention``
#: (cloudhub/events.py). ``id`` orders them for readers and watches across nodes.
events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("node", String(253), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("device", String(512), nullable=True),  # the topic after $hw/events/upload/
    Column("received", Float, nullable=False),  # seconds since the epoch, hub clock
    Column("body", Text, nullable=False),  # {"topic", "payload"[, "encoding"]} as JSON
    sqlite_autoincrement=True,  # ids never reused: watches resume from one
)
Index("events_node_seq", events.c.node, events.c.seq, unique=True)
Index("events_received", events.c.received)


def _history_columns() -> list[Column[Any]]:
    return [
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("namespace", String(63), nullable=False),
        Column("device", String(63), nullable=False),
        Column("property", String(128), nullable=False),
        Column("time", Float, nullable=False),  # when the value was reported (edge clock)
        Column("received", Float, nullable=False),  # when the hub stored it (hub clock)
        Column("value", Text, nullable=False),
    ]


#: Each reported value of each twin property, with its time (cloudhub/history.py), kept
#: for ``history_retention`` and at most ``history_max_per_property`` per property.
twin_history = Table("twin_history", metadata, *_history_columns(), sqlite_autoincrement=True)
Index(
    "twin_history_property_time",
    twin_history.c.namespace,
    twin_history.c.device,
    twin_history.c.property,
    twin_history.c.time,
)

#: History rows as the report path writes them (schema 8): appended, with no index but the
#: primary key, and moved into ``twin_history`` in arrival order about once a second
#: (cloudhub/history.py ``merge``). A frame's values land on a few pages here instead of
#: one page of the per-property index each; reads look at both tables.
twin_history_recent = Table(
    "twin_history_recent", metadata, *_history_columns(), sqlite_autoincrement=True
)


#: The hub replicas sharing this database (docs/ha.md): each refreshes its row every few
#: seconds; ``seen`` is the database's clock, so replicas' clocks never disagree on it.
hub_replicas = Table(
    "hub_replicas",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("started", Float, nullable=False),
    Column("seen", Float, nullable=False),
    Column("sessions", Integer, nullable=False),
    Column("leader", Boolean, nullable=False),
    # every contact the replica heard before this time is written (schema 7)
    Column("flushed", Float, nullable=True),
)


def _v1(conn: Connection) -> None:
    metadata.create_all(
        conn, tables=[revision, objects, changes, node_leases, node_sync], checkfirst=True
    )
    conn.execute(insert(revision).values(id=1, head=0, compacted=0))


def _v2(conn: Connection) -> None:
    metadata.create_all(conn, tables=[tokens, node_certs], checkfirst=True)


def _v3(conn: Connection) -> None:
    metadata.create_all(conn, tables=[events], checkfirst=True)


def _v4(conn: Connection) -> None:
    if "resync" not in {c["name"] for c in inspect(conn).get_columns("node_sync")}:
        default = "false" if conn.dialect.name == "postgresql" else "0"
        conn.execute(
            text(f"ALTER TABLE node_sync ADD COLUMN resync BOOLEAN NOT NULL DEFAULT {default}")
        )


def _v5(conn: Connection) -> None:
    metadata.create_all(conn, tables=[twin_history], checkfirst=True)


def _v6(conn: Connection) -> None:
    present = {c["name"] for c in inspect(conn).get_columns("node_leases")}
    if "owner" not in present:
        conn.execute(text("ALTER TABLE node_leases ADD COLUMN owner VARCHAR(64)"))
    if "session" not in present:
        conn.execute(text("ALTER TABLE node_leases ADD COLUMN session BIGINT NOT NULL DEFAULT 0"))
    metadata.create_all(conn, tables=[hub_replicas], checkfirst=True)


def _v7(conn: Connection) -> None:
    if "flushed" not in {c["name"] for c in inspect(conn).get_columns("hub_replicas")}:
        conn.execute(text("ALTER TABLE hub_replicas ADD COLUMN flushed FLOAT"))


def _v8(conn: Connection) -> None:
    metadata.create_all(conn, tables=[twin_history_recent], checkfirst=True)


#: Ordered schema steps; step i brings the schema from version i to i + 1.
#: Append only: an installed hub runs the steps it has not run yet.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8]


#: The key of the PostgreSQL advisory lock that migrations hold: "edgeward" in ASCII, as a
#: bigint. Advisory locks are per database, so only hubs sharing this database wait on it.
MIGRATION_LOCK = 0x6564676577617264


def migrate(engine: Engine) -> int:
    """Bring the database to the latest schema; returns the version it is at.

    The check, the create and every upgrade step run in one transaction that first takes a
    lock, so hubs started together on one database migrate it once: the others wait, then
    find it at the latest version. On PostgreSQL the lock is a transaction-level advisory
    lock (its DDL is transactional); on SQLite it is the write lock that ``BEGIN
    IMMEDIATE`` takes (``cloudhub.db.open_engine``). Raises SchemaTooNew when a newer
    cloudhub has migrated the database past what this one knows.
    """
    with engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            # Each statement after the lock must see what the hub that held it committed;
            # a REPEATABLE READ default would keep the snapshot from before the wait.
            conn.execution_options(isolation_level="READ COMMITTED")
        with conn.begin():
            if postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            if not inspect(conn).has_table("schema_version"):
                schema_version.create(conn)
                conn.execute(insert(schema_version).values(id=1, version=0))
            current = conn.execute(select(schema_version.c.version)).scalar_one()
            if current > len(MIGRATIONS):
                raise SchemaTooNew(current, len(MIGRATIONS))
            for step in MIGRATIONS[current:]:
                step(conn)
            conn.execute(update(schema_version).values(version=len(MIGRATIONS)))
    return len(MIGRATIONS)
