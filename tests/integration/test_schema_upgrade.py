"""A hub database made by an older cloudhub is brought up to date, rows kept (SQLite and
PostgreSQL): what `cloudhub --migrate` and the package's postinst rely on."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from cloudhub import schema
from cloudhub.store import Store
from tests.support.oldschemas import make_v3


def test_a_v3_database_gains_the_resync_column_and_keeps_its_rows(engine: Engine) -> None:
    """And every step after it: the twin history table (schema 5)."""
    make_v3(engine)
    assert Store(engine).migrate() == len(schema.MIGRATIONS) == 5
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("node_sync")}
        assert inspect(conn).has_table("twin_history")
        row = conn.execute(text("SELECT report_seq, acked_revision, resync FROM node_sync")).one()
    assert "resync" in columns
    assert (row[0], row[1], bool(row[2])) == (41, 7, False)
    assert Store(engine).migrate() == 5  # again: nothing to do
