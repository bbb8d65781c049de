"""Engine creation: SQLite (the default) or any SQLAlchemy URL, e.g. PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from edgeward.errors import ConfigError

#: The application_name of the hub's pooled PostgreSQL connections.
POOL_NAME = "cloudhub"


def open_engine(url: str, idle_transaction_timeout: float | None = None) -> Engine:
    """An engine for ``url``, tuned for the hub's access pattern.

    SQLite runs in WAL mode with synchronous=FULL (a write the hub
    acknowledged survives power loss) and takes its write lock at BEGIN, so
    concurrent writers queue instead of failing mid-transaction.
    ``postgresql://`` URLs use psycopg 3.

    ``idle_transaction_timeout`` (PostgreSQL): seconds after which the server ends a
    connection left idle inside a transaction. A replica that stalls (SIGSTOP, a frozen
    VM) mid-transaction holds its row locks — the revision row, nodes' leases — and
    every other replica's writes wait on them; without a limit, until PostgreSQL notices
    the dead TCP connection, which can take hours.
    """
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError([f"database: cannot parse URL {url!r}"]) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    connect_args: dict[str, Any] = {}
    if "application_name" not in parsed.query:
        # named in pg_stat_activity beside cloudhub-notify and cloudhub-leader
        connect_args["application_name"] = POOL_NAME
    if idle_transaction_timeout is not None:
        millis = max(1, int(idle_transaction_timeout * 1000))
        limit = f"-c idle_in_transaction_session_timeout={millis}"
        # the URL's own options come after: a setting it names wins
        theirs = parsed.query.get("options", ())
        theirs = (theirs,) if isinstance(theirs, str) else theirs  # given more than once
        connect_args["options"] = " ".join((limit, *theirs))
    try:
        return create_engine(
            parsed, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args
        )
    except Exception as exc:  # e.g. a driver that is not installed
        raise ConfigError([f"database: {exc}"]) from None


def connect_params(engine: Engine, application_name: str, timeout: float) -> dict[str, Any]:
    """psycopg connection arguments for a connection of its own (outside the pool) to the
    PostgreSQL database of ``engine``: what its dialect would pass (host, port, user,
    password, dbname, sslmode and the URL's other query options), named
    ``application_name`` in pg_stat_activity, with a connect timeout unless the URL sets one."""
    _args, params = engine.dialect.create_connect_args(engine.url)
    params = {k: v for k, v in params.items() if k != "context"}
    params.setdefault("connect_timeout", max(1, int(timeout)))
    params["application_name"] = application_name
    return params


def _sqlite_engine(url: Any) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        _set_wal(cur)
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = "DEFERRED" if conn.get_execution_options().get("readonly") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


#: How long a connection retries switching a new SQLite file to WAL (the busy timeout).
WAL_SWITCH_TIMEOUT = 30.0


def _set_wal(cur: sqlite3.Cursor) -> None:
    # Switching to WAL needs the file's exclusive lock, and SQLite answers SQLITE_BUSY at
    # once, without its busy handler, while another connection is switching it: hubs
    # opening one new file together would fail. The mode persists in the file, so only
    # its first connections contend, and a retry finds it switched.
    deadline = time.monotonic() + WAL_SWITCH_TIMEOUT
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
