"""A hub database made by an older cloudhub is brought up to date, rows kept (SQLite and
PostgreSQL): what `cloudhub --migrate` and the package's postinst rely on."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from cloudhub import schema
from cloudhub.store import Store
from tests.support.oldschemas import make_v3


def test_a_v3_database_gains_the_resync_column_and_keeps_its_rows(engine: Engine) -> None:
    """And every step after it: the twin history table (schema 5), session ownership and
    the replicas' table (schema 6)."""
    make_v3(engine)
    assert Store(engine).migrate() == len(schema.MIGRATIONS) == 6
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
    assert Store(engine).migrate() == 6  # again: nothing to do
