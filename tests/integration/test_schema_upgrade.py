"""A hub database made by an older cloudhub is brought up to date, rows kept (SQLite and
PostgreSQL): what `cloudhub --migrate` and the package's postinst rely on."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from cloudhub import history, schema
from cloudhub.store import HistoryRow, Store
from tests.support.oldschemas import make_v3


def test_a_v3_database_gains_the_resync_column_and_keeps_its_rows(engine: Engine) -> None:
    """And every step after it: the twin history table (schema 5), session ownership and
    the replicas' table (schema 6), the replicas' flushed time (schema 7), and the table
    of history values not yet merged (schema 8)."""
    make_v3(engine)
    assert Store(engine).migrate() == len(schema.MIGRATIONS) == 8
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("node_sync")}
        lease_columns = {c["name"] for c in inspect(conn).get_columns("node_leases")}
        assert inspect(conn).has_table("twin_history")
        assert inspect(conn).has_table("hub_replicas")
        assert inspect(conn).has_table("twin_history_recent")
        row = conn.execute(text("SELECT report_seq, acked_revision, resync FROM node_sync")).one()
        lease = conn.execute(text("SELECT node, ready, owner, session FROM node_leases")).one()
    assert "resync" in columns
    assert {"owner", "session"} <= lease_columns
    assert (row[0], row[1], bool(row[2])) == (41, 7, False)
    assert (lease[0], bool(lease[1]), lease[2], lease[3]) == ("gw-1", True, None, 0)
    assert Store(engine).migrate() == 8  # again: nothing to do


def test_a_v6_database_gains_the_replicas_flushed_column(engine: Engine) -> None:
    """Schema 7 adds ``hub_replicas.flushed`` to a table schema 6 made without it, rows kept."""
    Store(engine).migrate()
    with engine.begin() as conn:  # back to what a schema-6 hub left
        conn.execute(text("ALTER TABLE hub_replicas DROP COLUMN flushed"))
        conn.execute(text("UPDATE schema_version SET version = 6"))
        conn.execute(text("INSERT INTO hub_replicas VALUES ('r1', 1.0, 2.0, 3, false)"))
    assert Store(engine).migrate() == 8
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id, sessions, flushed FROM hub_replicas")).one()
    assert tuple(row) == ("r1", 3, None)


def test_a_v7_database_keeps_its_history_and_merges_new_values_after_it(
    engine: Engine,
) -> None:
    """Schema 8 adds ``twin_history_recent``; the history a schema-7 hub kept is read back
    with what is written after the upgrade."""
    store = Store(engine)
    store.migrate()
    with engine.begin() as conn:  # back to what a schema-7 hub left
        conn.execute(text("DROP TABLE twin_history_recent"))
        conn.execute(text("UPDATE schema_version SET version = 7"))
        conn.execute(
            text(
                "INSERT INTO twin_history (namespace, device, property, time, received, value)"
                " VALUES ('default', 'thermo', 'temperature', 100.0, 100.0, '20.5')"
            )
        )
    assert Store(engine).migrate() == 8
    with store.writing() as tx:
        tx.history_rows.append(HistoryRow("default", "thermo", "temperature", 200.0, 200.0, "21.5"))
    query = history.Query("default", "thermo", "temperature")
    assert [i["value"] for i in history.read(engine, query)] == ["20.5", "21.5"]
    assert history.merge(store) == 1
    assert [i["value"] for i in history.read(engine, query)] == ["20.5", "21.5"]
