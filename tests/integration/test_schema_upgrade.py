"""A hub database made by an older cloudhub is brought up to date, rows kept (SQLite and
PostgreSQL): what `cloudhub --migrate` and the package's postinst rely on."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from cloudhub import schema
from cloudhub.store import Store


def test_a_v3_database_gains_the_resync_column_and_keeps_its_rows(engine: Engine) -> None:
    """And every step after it: the twin history table (schema 5)."""
    with engine.begin() as conn:
        for step in schema.MIGRATIONS[:3]:
            step(conn)
        # node_sync as cloudhub 0.1.0 before schema 4 made it
        conn.execute(text("DROP TABLE node_sync"))
        conn.execute(
            text(
                "CREATE TABLE node_sync (node VARCHAR(253) PRIMARY KEY, "
                "report_seq BIGINT NOT NULL, acked_revision BIGINT NOT NULL)"
            )
        )
        conn.execute(text("INSERT INTO node_sync VALUES ('gw-1', 41, 7)"))
        schema.schema_version.create(conn)
        conn.execute(schema.schema_version.insert().values(id=1, version=3))
    assert Store(engine).migrate() == len(schema.MIGRATIONS) == 5
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("node_sync")}
        assert inspect(conn).has_table("twin_history")
        row = conn.execute(text("SELECT report_seq, acked_revision, resync FROM node_sync")).one()
    assert "resync" in columns
    assert (row[0], row[1], bool(row[2])) == (41, 7, False)
    assert Store(engine).migrate() == 5  # again: nothing to do
