"""A hub database made by an older cloudhub is brought up to date, rows kept (SQLite and
PostgreSQL): what `cloudhub --migrate` and the package's postinst rely on."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from cloudhub import schema
from cloudhub.store import Store
from tests.support.oldschemas import make_v3


def test_a_v3_database_gains_the_resync_column_and_keeps_its_rows(engine: Engine) -> None:
    """And every step after it: the twin history table (schema 5), session ownership and
    the replicas' table (schema 6), and the replicas' flushed time (schema 7)."""
    make_v3(engine)
    assert Store(engine).migrate() == len(schema.MIGRATIONS) == 7
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("node_sync")}
        lease_columns = {c["name"] for c in inspect(conn).get_columns("node_leases")}
        assert inspect(conn).has_table("twin_history")
        assert inspect(conn).has_table("hub_replicas")
        row = conn.execute(text("SELECT report_seq, acked_revision, resync FROM node_sync")).one()
        lease = conn.execute(text("SELECT node, ready, owner, session FROM node_leases")).one()
    assert "resync" in columns
    assert {"owner", "session"} <= lease_columns
    assert (row[0], row[1], bool(row[2])) == (41, 7, False)
    assert (lease[0], bool(lease[1]), lease[2], lease[3]) == ("gw-1", True, None, 0)
    assert Store(engine).migrate() == 7  # again: nothing to do


def test_a_v6_database_gains_the_replicas_flushed_column(engine: Engine) -> None:
    """Schema 7 adds ``hub_replicas.flushed`` to a table schema 6 made without it, rows kept."""
    Store(engine).migrate()
    with engine.begin() as conn:  # back to what a schema-6 hub left
        conn.execute(text("ALTER TABLE hub_replicas DROP COLUMN flushed"))
        conn.execute(text("UPDATE schema_version SET version = 6"))
        conn.execute(text("INSERT INTO hub_replicas VALUES ('r1', 1.0, 2.0, 3, false)"))
    assert Store(engine).migrate() == 7
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id, sessions, flushed FROM hub_replicas")).one()
    assert tuple(row) == ("r1", 3, None)
