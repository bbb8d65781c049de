"""Engine creation: SQLite (the default) or any SQLAlchemy URL, e.g. PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from edgeward.errors import ConfigError


def open_engine(url: str) -> Engine:
    """An engine for ``url``, tuned for the hub's access pattern.

    SQLite runs in WAL mode with synchronous=FULL (a write the hub
    acknowledged survives power loss) and takes its write lock at BEGIN, so
    concurrent writers queue instead of failing mid-transaction.
    ``postgresql://`` URLs use psycopg 3.
    """
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError([f"database: cannot parse URL {url!r}"]) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    try:
        return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except Exception as exc:  # e.g. a driver that is not installed
        raise ConfigError([f"database: {exc}"]) from None


def _sqlite_engine(url: Any) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = "DEFERRED" if conn.get_execution_options().get("readonly") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine
