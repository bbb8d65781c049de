"""Change notification between hub replicas on one PostgreSQL (LISTEN/NOTIFY).

The replicas run with ``--change-poll-interval 3600``: a write through one that reaches
a watch or an edge on the other within the (generous, hang-guard) deadline came by
notification, not by the poll. The poll itself, the fallback, is proven on its own with
a feed that has no listener.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cloudhub.changefeed import ChangeFeed
from cloudhub.db import open_engine
from cloudhub.groupwriter import GroupWriter
from cloudhub.pgnotify import APPLICATION_NAME
from cloudhub.store import CHANGES_CHANNEL, Store
from edgeward.kinds import DEVICE
from tests.support.postgres import PostgresCluster
from tests.support.procs import Edge, Hub, wait_for
from tests.support.replicas import running_replicas
from tests.support.watching import Watch

DEVICES = "/api/v1/namespaces/default/devices"
NO_POLL = ("--change-poll-interval", "3600")


def device(name: str, node: str | None = None, **desired: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "deviceModelRef": {"name": "thermostat"},
        "properties": [{"name": k, "desired": {"value": v}} for k, v in desired.items()],
    }
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def ok(result: tuple[int, Any], code: int = 200) -> dict[str, Any]:
    status, body = result
    assert status == code, (status, body)
    return body


def desired(obj: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["desired"]["value"] for p in obj["spec"].get("properties", [])}


def seen(watch: Watch, written: dict[str, Any]) -> dict[str, Any]:
    """The watch's event for ``written`` (an edge's status reports may come before it)."""
    while True:
        [event] = watch.take(1)
        rv = int(event["object"]["metadata"]["resourceVersion"])
        if rv >= int(written["metadata"]["resourceVersion"]):
            assert event["object"] == written, event
            return event


def libpq(url: str) -> str:
    """The psycopg (libpq) form of a ``postgresql+psycopg://`` URL."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def listeners(url: str) -> set[int]:
    """Backend pids of the hubs' listening connections."""
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = "
            "current_database()",
            (APPLICATION_NAME,),
        ).fetchall()
    return {pid for (pid,) in rows}


@pytest.fixture
def pg_url(postgres: PostgresCluster, request: pytest.FixtureRequest) -> str:
    return postgres.create_database(f"notify_{request.node.name.lower()[-40:]}")


@pytest.fixture
def replicas(tmp_path: Path, pg_url: str) -> Iterator[list[Hub]]:
    """Two insecure hubs on one PostgreSQL database that never poll (an hour apart)."""
    with running_replicas(tmp_path, pg_url, 2, *NO_POLL) as hubs:
        wait_for(lambda: len(listeners(pg_url)) == 2, 10, "both replicas to listen")
        yield hubs


@pytest.fixture
def edge(tmp_path: Path, replicas: list[Hub]) -> Iterator[Edge]:
    """An edgecore connected to the second replica."""
    e = Edge(tmp_path / "edge1", "edge1", replicas[1].edge, "--no-mqtt")
    e.start()
    try:
        yield e
    finally:
        e.kill()


def test_a_write_through_one_replica_reaches_a_watch_and_an_edge_on_another(
    replicas: list[Hub], edge: Edge
) -> None:
    """With the poll an hour apart, a write through A reaches B's watch and B's edge:
    A's commit notified B."""
    a, b = replicas
    first = ok(a.request("POST", DEVICES, device("thermo", "edge1", target="21")), 201)
    wait_for(lambda: ("default", "thermo") in edge.cached(), 10, "the device to reach the edge")
    watch = Watch(b, f"{DEVICES}?watch=1&resourceVersion={first['metadata']['resourceVersion']}")
    try:
        assert watch.status == 200
        changed = ok(a.request("PUT", f"{DEVICES}/thermo", device("thermo", "edge1", target="23")))
        assert seen(watch, changed)["type"] == "MODIFIED"
        wait_for(
            lambda: desired(edge.cached()[("default", "thermo")]) == {"target": "23"},
            10,
            "the update through A to reach the edge on B",
        )
    finally:
        watch.close()


def test_the_listener_reconnects_and_catches_up_after_its_backend_is_terminated(
    replicas: list[Hub], pg_url: str
) -> None:
    """Killing every listening backend loses notifications; each replica reconnects, wakes
    its feed once (catching up on what it missed) and hears later commits again."""
    a, b = replicas
    first = ok(a.request("POST", DEVICES, device("before")), 201)
    watch = Watch(b, f"{DEVICES}?watch=1&resourceVersion={first['metadata']['resourceVersion']}")
    try:
        assert watch.status == 200
        old = listeners(pg_url)
        with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
            for pid in old:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # written while the listeners may be gone: only the reconnect's wake finds it
        during = ok(a.request("POST", DEVICES, device("during")), 201)
        [event] = watch.take(1)
        assert (event["type"], event["object"]) == ("ADDED", during)
        wait_for(
            lambda: len(now := listeners(pg_url)) == 2 and not now & old,
            10,
            "both replicas to listen again",
        )
        after = ok(a.request("POST", DEVICES, device("after")), 201)
        [event] = watch.take(1)
        assert (event["type"], event["object"]) == ("ADDED", after)
    finally:
        watch.close()
    for hub in replicas:
        log = hub.log()
        assert log.count("change notification: not listening") == 1, log
        assert log.count("change notification: listening again") == 1, log


def test_a_hub_write_notifies_its_head_once_at_commit(pg_url: str) -> None:
    """Each write transaction that moved the head notifies it once, a group commit too;
    a transaction that wrote nothing, or rolled back, notifies nothing."""
    engine = open_engine(pg_url)
    try:
        store = Store(engine)
        store.migrate()
        with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANGES_CHANNEL}")

            def heard() -> list[str]:
                return [n.payload for n in conn.notifies(timeout=0.5)]

            obj = store.create(DEVICE, device("one"))
            assert heard() == [obj["metadata"]["resourceVersion"]]
            with store.writing():
                pass
            with pytest.raises(RuntimeError), store.writing() as tx:
                tx.create(DEVICE, device("rolled-back"))
                raise RuntimeError("abandon the transaction")
            assert heard() == []

            async def group() -> int:
                writer = GroupWriter(store)
                running = asyncio.create_task(writer.run())
                try:
                    jobs = [
                        writer.submit(lambda tx, n=n: tx.create(DEVICE, device(f"g{n}")))
                        for n in range(5)
                    ]
                    await asyncio.gather(*jobs)
                finally:
                    running.cancel()
                return store.head()

            head = asyncio.run(group())
            notes = heard()
            assert notes[-1] == str(head) and len(notes) <= 5
    finally:
        engine.dispose()


def test_the_poll_alone_delivers_another_replicas_writes(pg_url: str) -> None:
    """The fallback: a feed that hears no notification (no listener, and the writer is
    another store) still finds another replica's commit by polling."""
    writer_engine, reader_engine = open_engine(pg_url), open_engine(pg_url)
    try:
        other = Store(writer_engine)
        other.migrate()
        mine = Store(reader_engine)

        async def scenario() -> list[str]:
            feed = ChangeFeed(mine.log_page, start=mine.head(), poll_interval=0.2)
            sub = feed.subscribe_all()
            running = asyncio.create_task(feed.run())
            try:
                await asyncio.to_thread(other.create, DEVICE, device("polled"))
                names: list[str] = []
                async with asyncio.timeout(10):
                    while not names:
                        await sub.wait()
                        names += [row.name for row in sub.take()]
                return names
            finally:
                running.cancel()

        assert asyncio.run(scenario()) == ["polled"]
    finally:
        writer_engine.dispose()
        reader_engine.dispose()
