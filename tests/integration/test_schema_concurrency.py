"""Hubs started together migrate one database once, whoever comes first (issue 14, item 1).

Replicas behind a load balancer start at the same moment on a new database and during an
upgrade; the schema check, create and upgrade run under one lock (cloudhub/schema.py), so
the others wait for it and then find the schema made. PostgreSQL's DDL log (an event
trigger) shows what was created or altered, counted across every process.
"""

from __future__ import annotations

import itertools
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import Connection, Engine, create_engine, text

from cloudhub import schema
from cloudhub.db import open_engine
from tests.support.oldschemas import make_v3
from tests.support.postgres import PostgresCluster
from tests.support.procs import Hub, wait_for

HUBS = 6
#: Processes collide by chance: without the lock one group of hubs failed 3 times in 4 on
#: a new database and 2 in 4 during an upgrade, so each test runs this many groups.
ATTEMPTS = 3
THREADS = 8
ROUNDS = 8
LATEST = len(schema.MIGRATIONS)

_names = itertools.count()

T = TypeVar("T")

#: Each CREATE, ALTER … a committed transaction ran, recorded by the transaction itself.
DDL_LOG = """
CREATE TABLE ddl_log (tag TEXT NOT NULL, identity TEXT NOT NULL);
CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    INSERT INTO ddl_log VALUES (r.command_tag, r.object_identity);
  END LOOP;
END $$;
CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION log_ddl();
"""


def new_database(kind: str, tmp_path: Path, postgres: Callable[[], PostgresCluster]) -> str:
    """A new, empty database; on PostgreSQL with the DDL log in it."""
    name = f"race{next(_names)}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / f'{name}.db'}"
    url = postgres().create_database(name)
    # a plain engine: the DDL log is the test's, not the hub's
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(DDL_LOG)
    finally:
        engine.dispose()
    return url


def ddl_applied(engine: Engine) -> Counter[tuple[str, str]]:
    """How many committed transactions created or altered each object."""
    with engine.connect() as conn:
        return Counter(
            (tag, identity)
            for tag, identity in conn.execute(text("SELECT tag, identity FROM ddl_log"))
        )


def stored_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT version FROM schema_version")).scalar_one()


@pytest.fixture
def counted_steps(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """Counts the runs of each schema step (the real steps, in every thread), committed
    or not: a step run twice is a race even when its transaction later rolls back."""
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    def counted(number: int, step: Callable[[Connection], None]) -> Callable[[Connection], None]:
        def run(conn: Connection) -> None:
            with lock:
                runs[number] += 1
            step(conn)

        return run

    monkeypatch.setattr(
        schema,
        "MIGRATIONS",
        [counted(i + 1, step) for i, step in enumerate(schema.MIGRATIONS)],
    )
    return runs


def at_once(url: str, call: Callable[[Engine], T]) -> list[T | Exception]:
    """THREADS engines on ``url`` each make ``call`` at the same moment: what each got."""
    engines = [open_engine(url) for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)

    def run(engine: Engine) -> T | Exception:
        barrier.wait()
        try:
            return call(engine)
        except Exception as exc:
            return exc

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(run, engines))
    finally:
        for engine in engines:
            engine.dispose()


def journal_mode(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()


@pytest.fixture(params=["sqlite", "postgresql"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> Callable[[], PostgresCluster]:
    """The session's PostgreSQL, started only by a test that asks for it."""
    return lambda: request.getfixturevalue("postgres")


def test_threads_migrating_a_new_database_at_once_all_succeed(
    kind: str, tmp_path: Path, pg: Callable[[], PostgresCluster], counted_steps: Counter[int]
) -> None:
    """Eight migrations at the same moment, on a new database, round after round: every
    one returns the latest version and each step runs once, in one of them."""
    for _ in range(ROUNDS):
        url = new_database(kind, tmp_path, pg)
        counted_steps.clear()
        results = at_once(url, schema.migrate)
        assert results == [LATEST] * THREADS, results
        assert counted_steps == dict.fromkeys(range(1, LATEST + 1), 1)
        engine = open_engine(url)
        try:
            assert stored_version(engine) == LATEST
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM revision")).scalar_one() == 1
            if kind == "postgresql":
                assert set(ddl_applied(engine).values()) == {1}
        finally:
            engine.dispose()


def test_a_repeatable_read_default_does_not_hide_the_schema_made_meanwhile(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    """A database whose default isolation is REPEATABLE READ: a migration that waited for
    the lock still sees the tables the one before it committed."""
    for _ in range(ROUNDS // 2):
        url = new_database("postgresql", tmp_path, lambda: postgres)
        name = url.rsplit("/", 1)[1]
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(
                    f"ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'"
                )
        finally:
            engine.dispose()
        results = at_once(url, schema.migrate)
        assert results == [LATEST] * THREADS, results


def test_connections_opening_a_new_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL needs its exclusive lock, and SQLite answers busy at
    once rather than wait for it: eight first connections at once, a hundred times over
    (without the retry in cloudhub/db.py about one round in fifteen failed)."""
    for n in range(100):
        results = at_once(f"sqlite:///{tmp_path / f'{n}.db'}", journal_mode)
        assert results == ["wal"] * THREADS, results


def test_threads_upgrading_an_old_database_at_once_apply_each_step_once(
    kind: str, tmp_path: Path, pg: Callable[[], PostgresCluster], counted_steps: Counter[int]
) -> None:
    """A schema 3 database migrated by eight at once: steps 4 and 5 run once, rows kept."""
    for _ in range(ROUNDS // 2):
        url = new_database(kind, tmp_path, pg)
        engine = open_engine(url)
        try:
            make_v3(engine)
            counted_steps.clear()
            results = at_once(url, schema.migrate)
            assert results == [LATEST] * THREADS, results
            assert counted_steps == {n: 1 for n in range(4, LATEST + 1)}
            assert stored_version(engine) == LATEST
            with engine.connect() as conn:
                row = conn.execute(text("SELECT report_seq, resync FROM node_sync")).one()
            assert (row[0], bool(row[1])) == (41, False)
            if kind == "postgresql":
                applied = ddl_applied(engine)
                assert applied[("ALTER TABLE", "public.node_sync")] == 1
                assert applied[("CREATE TABLE", "public.twin_history")] == 1
        finally:
            engine.dispose()


def healthz(hub: Hub) -> int:
    with urllib.request.urlopen(f"{hub.api}/healthz", timeout=10) as resp:
        return resp.status


@pytest.fixture
def hubs(tmp_path: Path) -> Iterator[Callable[..., Hub]]:
    """Make cloudhubs, each with its own data directory and ports; all killed at the end."""
    made: list[Hub] = []

    def make(*extra: str) -> Hub:
        hub = Hub(tmp_path / f"hub{len(made)}", *extra)
        made.append(hub)
        return hub

    yield make
    for hub in made:
        hub.kill()


#: What each hub runs: the cloudhub console script's ``main``, held back once imported
#: until every hub of the group is, so they reach the database within milliseconds of each
#: other rather than as the two shared cores finish their imports. ``known`` makes it an
#: older cloudhub, one that knows the schema steps up to that version only.
GATED_CLOUDHUB = """
import os, sys, time
from pathlib import Path
from typing import TypeVar
from cloudhub import main, schema
del schema.MIGRATIONS[{known}:]
gate = Path({gate!r})
(gate.parent / f"loaded-{{os.getpid()}}").touch()
while not gate.exists():
    time.sleep(0.002)
sys.exit(main.main(sys.argv[2:]))
"""


def start_together(group: list[Hub], known: dict[Hub, int] | None = None) -> dict[Hub, str]:
    """Start every hub at once; the ones that never came to listen, with why."""
    gate = group[0].data_dir.parent / "gate" / "open"
    gate.parent.mkdir()
    for hub in group:
        code = GATED_CLOUDHUB.format(known=(known or {}).get(hub, LATEST), gate=str(gate))
        hub.wrapper = [sys.executable, "-c", code]

    def start(hub: Hub) -> str | None:
        try:
            hub.start()
        except AssertionError as exc:  # it exited, or never listened
            return str(exc)
        return None

    with ThreadPoolExecutor(len(group)) as pool:
        started = [pool.submit(start, hub) for hub in group]
        wait_for(lambda: len(list(gate.parent.glob("loaded-*"))) == len(group), 20, "hubs to load")
        gate.touch()
        outcomes = [s.result() for s in started]
    return {hub: why for hub, why in zip(group, outcomes, strict=True) if why is not None}


@pytest.mark.parametrize("attempt", range(ATTEMPTS))
def test_hubs_started_together_on_a_new_database_all_serve(
    attempt: int, postgres: PostgresCluster, tmp_path: Path, hubs: Callable[..., Hub]
) -> None:
    """The issue's failure: six cloudhub processes at once on a new PostgreSQL database.
    Every one comes up and serves /healthz; the schema was made once."""
    url = new_database("postgresql", tmp_path, lambda: postgres)
    group = [hubs("--database", url) for _ in range(HUBS)]
    failed = start_together(group)
    assert not failed, "\n\n".join(f"{h.log()}\n{exc}" for h, exc in failed.items())
    for hub in group:
        assert hub.running, hub.log()
        assert healthz(hub) == 200
    engine = open_engine(url)
    try:
        assert stored_version(engine) == LATEST
        applied = ddl_applied(engine)
        assert applied[("CREATE TABLE", "public.schema_version")] == 1
        assert set(applied.values()) == {1}
    finally:
        engine.dispose()


@pytest.mark.parametrize("attempt", range(ATTEMPTS))
def test_hubs_started_together_during_an_upgrade(
    attempt: int, postgres: PostgresCluster, tmp_path: Path, hubs: Callable[..., Hub]
) -> None:
    """A rolling upgrade gone all at once: a schema 3 database, five new cloudhubs and
    one that knows schema 4 start together. The new ones all serve and the upgrade ran
    once; the old one either came first (and serves, its schema current) or refuses the
    newer schema with the message that says so, exit 2 — never a traceback."""
    url = new_database("postgresql", tmp_path, lambda: postgres)
    engine = open_engine(url)
    try:
        make_v3(engine)
        old = hubs("--database", url)
        new = [hubs("--database", url) for _ in range(HUBS - 1)]
        failed = start_together([old, *new], known={old: 4})
        assert set(failed) <= {old}, "\n\n".join(f"{h.log()}\n{e}" for h, e in failed.items())
        for hub in new:
            assert hub.running, hub.log()
            assert healthz(hub) == 200
        if old in failed:
            assert old.proc is not None and old.proc.wait(10) == 2, old.log()
            assert "newer than this cloudhub understands (4)" in old.log()
            assert "Traceback" not in old.log()
        else:
            assert healthz(old) == 200
        assert stored_version(engine) == LATEST
        applied = ddl_applied(engine)
        assert applied[("ALTER TABLE", "public.node_sync")] == 1
        assert applied[("CREATE TABLE", "public.twin_history")] == 1
        with engine.connect() as conn:
            assert conn.execute(text("SELECT report_seq FROM node_sync")).scalar_one() == 41
    finally:
        engine.dispose()


def test_an_older_cloudhub_refuses_a_newer_schema_clearly(
    kind: str, tmp_path: Path, pg: Callable[[], PostgresCluster], hubs: Callable[..., Hub]
) -> None:
    """Once a newer replica has upgraded, an older one started on the database exits 2
    with one line that names both versions, and changes nothing."""
    url = new_database(kind, tmp_path, pg)
    engine = open_engine(url)
    try:
        schema.migrate(engine)
        old = hubs("--database", url)
        assert set(start_together([old], known={old: 4})) == {old}
        assert old.proc is not None and old.proc.wait(10) == 2, old.log()
        assert (
            f"the database schema is version {LATEST}, newer than this cloudhub understands "
            "(4); upgrade cloudhub"
        ) in old.log()
        assert "Traceback" not in old.log()
        assert stored_version(engine) == LATEST
    finally:
        engine.dispose()
