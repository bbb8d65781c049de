"""Fixtures shared by the whole suite: real hubs, edges and a real PostgreSQL."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cloudhub.db import open_engine
from cloudhub.store import Store
from tests.support.clock import ManualClock
from tests.support.mosquitto import Mosquitto, running
from tests.support.postgres import PostgresCluster
from tests.support.procs import Edge, Hub

_db_names = itertools.count()

#: Tests whose premise is a timing or a load: a flood outrunning edgecore, a ping timeout,
#: a watchdog, random kills. `make test` runs them alone, after the rest has run three at a
#: time (pytest-xdist), so another test's load never decides their outcome.
SERIAL = {
    "test_chaos.py",
    "test_mqtt_flood.py",
    "test_kill9.py",
    "test_hostile_crowds.py",
    "test_hostile_peers.py",
    "test_systemd_notify.py",
    "test_disk_full.py",
    "test_half_open.py",
    "test_outage.py",
    "test_broker_drops.py",
    "test_edge_metrics_hostile.py",
    "test_watchdog.py",
}


def pytest_configure(config: pytest.Config) -> None:
    """A run started in the background of a script inherits SIGINT ignored and would pass
    that on to every process a test starts: the tests that press Ctrl-C need it heard."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SERIAL:
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the session; each test takes a fresh database in it."""
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[Mosquitto]:
    """One Mosquitto for the session; tests keep apart by using their own device ids."""
    broker = Mosquitto()
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture
def own_broker() -> Iterator[Mosquitto]:
    """A Mosquitto for one test, which the test may stop and restart."""
    with running() as broker:
        yield broker


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database(f"t{next(_db_names)}")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the fresh database of ``database_url``."""
    eng = open_engine(database_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(engine: Engine, clock: ManualClock) -> Store:
    """A migrated hub store on each database, with a hand-driven clock."""
    s = Store(engine, clock=clock)
    s.migrate()
    return s


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """A running cloudhub on SQLite with a 2-second node grace period."""
    h = Hub(tmp_path / "hub", "--node-grace-period", "2")
    h.start()
    try:
        yield h
    finally:
        h.kill()


@pytest.fixture
def start_edge(tmp_path: Path, hub: Hub) -> Iterator[object]:
    """Start edgecore processes against ``hub``: ``start_edge("edge1", mqtt=broker)``.

    Without a broker the edge runs with --no-mqtt, never touching the machine's own."""
    edges: list[Edge] = []

    def start(node: str, *extra: str, mqtt: Mosquitto | None = None) -> Edge:
        broker = ["--mqtt", f"{mqtt.host}:{mqtt.port}"] if mqtt else ["--no-mqtt"]
        edge = Edge(tmp_path / node, node, hub.edge, "--status-interval", "0.5", *broker, *extra)
        edge.start()
        edges.append(edge)
        return edge

    yield start
    for edge in edges:
        edge.kill()
