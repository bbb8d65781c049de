"""Databases as older cloudhubs left them, for the upgrade tests."""

from __future__ import annotations

from sqlalchemy import Engine, text

from cloudhub import schema


def make_v3(engine: Engine) -> None:
    """The schema as cloudhub 0.1.0 left it (schema 3), with one node's positions in it."""
    with engine.begin() as conn:
        for step in schema.MIGRATIONS[:3]:
            step(conn)
        conn.execute(text("DROP TABLE node_sync"))
        conn.execute(
            text(
                "CREATE TABLE node_sync (node VARCHAR(253) PRIMARY KEY, "
                "report_seq BIGINT NOT NULL, acked_revision BIGINT NOT NULL)"
            )
        )
        conn.execute(text("INSERT INTO node_sync VALUES ('gw-1', 41, 7)"))
        conn.execute(text("DROP TABLE node_leases"))
        conn.execute(
            text(
                "CREATE TABLE node_leases (node VARCHAR(253) PRIMARY KEY, "
                "heartbeat FLOAT NOT NULL, ready BOOLEAN NOT NULL, usage TEXT NOT NULL)"
            )
        )
        conn.execute(text("INSERT INTO node_leases VALUES ('gw-1', 1700000000, true, '{}')"))
        schema.schema_version.create(conn)
        conn.execute(schema.schema_version.insert().values(id=1, version=3))
