"""Hub replicas on one PostgreSQL share truth only through the database (issue 14).

Real cloudhub replicas, a real PostgreSQL and real node sessions: raw websocket nodes
where a test must say exactly what a node reports, a real edgecore where it must stay
connected through a replica's stall. Each test names the finding it guards.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import Connection, create_engine, text
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from cloudhub.db import open_engine
from edgeward import protocol
from tests.integration.test_edge_endpoint import hello, open_ws, recv_skipping_changes
from tests.integration.test_ha_notify import DEVICES, device, ok
from tests.integration.test_metrics import samples, value
from tests.support.postgres import PostgresCluster
from tests.support.procs import Edge, Hub, wait_for
from tests.support.replicas import running_replicas

GRACE = "4"
LEADER_TIMEOUT = "3"


@pytest.fixture
def database(postgres: PostgresCluster, request: pytest.FixtureRequest) -> str:
    return postgres.create_database(f"ha_{request.node.name[:40].lower()}".replace("-", "_"))


@pytest.fixture
def pair(tmp_path: Path, database: str) -> Iterator[list[Hub]]:
    flags = ("--node-grace-period", GRACE, "--leader-timeout", LEADER_TIMEOUT)
    with running_replicas(tmp_path, database, 2, *flags) as hubs:
        yield hubs


def stored_lease(database: str, name: str) -> Any:
    """``name``'s row in node_leases, as the database holds it."""
    engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT owner, usage FROM node_leases WHERE node = :n"), {"n": name}
            ).one()
    finally:
        engine.dispose()


def owner(database: str, name: str) -> str | None:
    """The replica node_leases names as serving ``name``'s session."""
    return stored_lease(database, name).owner


def healthz(hub: Hub) -> dict[str, Any]:
    return hub.request("GET", "/healthz")[1]


def node(hub: Hub, name: str) -> dict[str, Any]:
    status, body = hub.request("GET", f"/api/v1/nodes/{name}")
    assert status == 200, body
    return body


def ready(hub: Hub, name: str) -> str | None:
    conditions = node(hub, name).get("status", {}).get("conditions", [])
    return next((c["status"] for c in conditions if c["type"] == "Ready"), None)


def usage(hub: Hub, name: str) -> Any:
    return node(hub, name).get("status", {}).get("usage")


def heartbeat(ws: ClientConnection, seq: int, **body: Any) -> None:
    ws.send(json.dumps({"type": "report", "items": [
        {"seq": seq, "topic": "node/status", "key": "node-status", "body": body}
    ]}))  # fmt: skip


def acked(ws: ClientConnection) -> dict[str, Any]:
    msg = recv_skipping_changes(ws)
    assert msg["type"] == "report_ack", msg
    return msg


def close_code(ws: ClientConnection, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=deadline - time.monotonic())
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, closed
        return closed.rcvd.code
    raise AssertionError("the connection stayed open")


def test_exactly_one_replica_leads_and_the_lead_moves_when_it_dies(pair: list[Hub]) -> None:
    """Item 3: one leader, through the advisory lock; kill -9 it and the other leads."""
    leaders = wait_for(
        lambda: (
            (found := [h for h in pair if healthz(h)["replica"]["leader"]])
            and len(found) == 1
            and found
        ),
        15,
        "one leader",
    )
    ids = {healthz(h)["replica"]["id"] for h in pair}
    assert len(ids) == 2
    assert [value(samples(h), "edgeward_hub_leader") for h in pair] == [
        float(h is leaders[0]) for h in pair
    ]
    leader = leaders[0]
    other = next(h for h in pair if h is not leader)
    leader.kill()
    wait_for(lambda: healthz(other)["replica"]["leader"], 15, "the other replica to lead")


def test_a_stalled_leader_hands_over_and_stops_leading_when_it_wakes(pair: list[Hub]) -> None:
    """Item 3: SIGSTOP the leader; PostgreSQL ends its idle session after the leader
    timeout and the other replica leads; woken, the old leader no longer counts itself one."""
    leader = wait_for(
        lambda: next((h for h in pair if healthz(h)["replica"]["leader"]), None), 15, "a leader"
    )
    other = next(h for h in pair if h is not leader)
    assert leader.proc is not None
    os.kill(leader.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: healthz(other)["replica"]["leader"], 20, "the other replica to lead")
    finally:
        os.kill(leader.proc.pid, signal.SIGCONT)
    assert not healthz(leader)["replica"]["leader"]
    assert healthz(other)["replica"]["leader"]
    assert "this replica now leads" in other.log()


def test_a_node_that_moved_shows_its_new_replicas_usage_everywhere(
    pair: list[Hub], database: str
) -> None:
    """Finding 4: a replica that once served a node never answers with its old usage."""
    a, b = pair
    with open_ws(a) as ws:
        hello(ws, "mover")
        assert owner(database, "mover") == healthz(a)["replica"]["id"]
        heartbeat(ws, 1, usage={"cpu": "111m"})
        acked(ws)
    wait_for(lambda: usage(a, "mover") == {"cpu": "111m"}, 10, "the usage through A")
    # the session's end is written: A gives the node up (and forgets what it heard)
    wait_for(lambda: owner(database, "mover") is None, 10, "A to release the node")
    with open_ws(b) as ws:
        hello(ws, "mover")
        heartbeat(ws, 2, usage={"cpu": "222m"})
        acked(ws)
        for hub in (a, b):
            wait_for(lambda h=hub: usage(h, "mover") == {"cpu": "222m"}, 10, "B's usage")


def test_a_node_on_two_replicas_keeps_only_its_newer_session(
    pair: list[Hub], database: str
) -> None:
    """Item 4: the node says hello on B while its old connection to A is still open. A's
    session writes nothing more — not a heartbeat it absorbs, not a report — and A
    closes it as replaced; the node's state is what it said through B."""
    a, b = pair
    old = open_ws(a)
    new = open_ws(b)
    try:
        hello(old, "twin")
        heartbeat(old, 1, usage={"cpu": "100m"})
        acked(old)
        wait_for(lambda: "100m" in stored_lease(database, "twin").usage, 10, "A's flush")
        hello(new, "twin")
        heartbeat(new, 2, usage={"cpu": "222m"})
        acked(new)
        # stored by B's lease flush: A reads it from the database
        wait_for(lambda: usage(a, "twin") == {"cpu": "222m"}, 10, "B's usage through A")
        # a heartbeat A absorbs in memory: its flush finds the session taken and closes it,
        # having written nothing
        heartbeat(old, 3, usage={"cpu": "999m"})
        assert close_code(old) == protocol.CLOSE_REPLACED
        assert usage(a, "twin") == usage(b, "twin") == {"cpu": "222m"}
        # and a report that needs a transaction, on a second stale session: refused
        stale = open_ws(a)
        try:
            hello(stale, "twin")  # takes the node back to A (a newer hello always wins) …
            hello(new_session := open_ws(b), "twin")  # … and B takes it again
            try:
                stale.send(json.dumps({"type": "report", "items": [
                    {"seq": 4, "topic": "node/status", "key": "node-status",
                     "body": {"capacity": {"cpu": "64"}}},
                ]}))  # fmt: skip
                assert close_code(stale) == protocol.CLOSE_REPLACED
                heartbeat(new_session, 5, usage={"cpu": "333m"})
                acked(new_session)
            finally:
                new_session.close()
        finally:
            stale.close()
        for hub in (a, b):
            wait_for(lambda h=hub: usage(h, "twin") == {"cpu": "333m"}, 10, "the newest usage")
            assert node(hub, "twin")["status"].get("capacity") != {"cpu": "64"}
        assert "another hub replica took its session over" in a.log()
    finally:
        old.close()
        new.close()


def test_a_node_of_a_stalled_replica_is_ready_again_soon_after_it_resumes(
    pair: list[Hub], tmp_path: Path
) -> None:
    """Finding 2: a replica stalled past the grace period has its node marked NotReady by
    the other; once it resumes, the node — still connected to it, never reconnecting — is
    Ready again within a status interval, without waiting for a new session."""
    a, b = pair
    # pings that outlast any stall here: the link must stay up, however slow the machine
    config = tmp_path / "edgecore.yaml"
    config.write_text("hub:\n  ping_interval: 60\n  ping_timeout: 120\n")
    edge = Edge(
        tmp_path / "edge", "stuck", a.edge, "--status-interval", "1", "--config", str(config)
    )
    edge.start()
    try:
        wait_for(lambda: a.request("GET", "/api/v1/nodes/stuck")[0] == 200, 20, "the node")
        wait_for(lambda: ready(b, "stuck") == "True", 20, "the node Ready")
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: ready(b, "stuck") != "True", 30, "B to mark the node NotReady")
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        wait_for(lambda: ready(b, "stuck") == "True", 20, "the node Ready again")
        assert ready(a, "stuck") == "True"
        assert a.log().count("node stuck: connected from") == 1, a.log()
        assert "node stuck: connected from" not in b.log()
    finally:
        edge.stop()


def test_each_replica_publishes_up_to_when_its_heartbeats_are_written(
    pair: list[Hub], database: str
) -> None:
    """The leader counts a live replica's node silent from ``hub_replicas.flushed``: each
    replica must keep it moving, past a heartbeat it absorbed once its flush wrote it."""
    a, _b = pair
    replica = healthz(a)["replica"]["id"]
    with open_ws(a) as ws:
        hello(ws, "steady")
        heartbeat(ws, 1, usage={"cpu": "3m"})
        acked(ws)
        heard = time.time()

        def flushed() -> float | None:
            engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://", 1))
            try:
                with engine.connect() as conn:
                    return conn.execute(
                        text("SELECT flushed FROM hub_replicas WHERE id = :r"), {"r": replica}
                    ).scalar_one_or_none()
            finally:
                engine.dispose()

        wait_for(lambda: (flushed() or 0) > heard, 30, "A's row to pass the heartbeat")
        assert "3m" in stored_lease(database, "steady").usage


def test_only_the_leader_marks_silent_nodes_not_ready(pair: list[Hub]) -> None:
    """Item 3: a node gone silent is marked NotReady once, by whichever replica leads."""
    a, _b = pair
    with open_ws(a) as ws:
        hello(ws, "quiet")
    wait_for(lambda: ready(a, "quiet") not in (None, "True"), 30, "the node NotReady")
    marked = [h for h in pair if "node quiet is NotReady" in h.log()]
    assert len(marked) == 1, [h.log() for h in pair]


def test_a_node_deleted_through_one_replica_is_closed_on_the_other(pair: list[Hub]) -> None:
    """Item 1: any replica answers any call — deleting a Node through A ends its session
    on B (4001: register again), as it would on A."""
    a, b = pair
    with open_ws(b) as ws:
        hello(ws, "doomed")
        assert a.request("DELETE", "/api/v1/nodes/doomed")[0] == 200
        assert close_code(ws) == protocol.CLOSE_NODE_DELETED
    wait_for(lambda: "node doomed: disconnected" in b.log(), 10, "B to log the session's end")


def test_a_resync_asked_through_one_replica_reaches_the_node_on_the_other(
    pair: list[Hub],
) -> None:
    """Item 1: a resync through A closes the node's session on B at once (4002), so it
    reconnects and takes a snapshot; the API says it is reconnecting."""
    a, b = pair
    with open_ws(b) as ws:
        hello(ws, "again")
        status, body = a.request("POST", "/api/v1/nodes/again/resync")
        assert status == 202, body
        assert "is reconnecting and takes a snapshot now" in body["message"]
        assert close_code(ws) == protocol.CLOSE_RESYNC
    with open_ws(a) as ws:
        assert hello(ws, "again")["mode"] == "snapshot"


def test_a_dead_replicas_nodes_get_a_grace_period_from_its_death(
    tmp_path: Path, database: str
) -> None:
    """A replica killed takes its nodes' unflushed contact with it: the leader counts their
    silence from the replica's last sign of life, not from their older stored heartbeat, so
    a node that says hello elsewhere within the grace period is never NotReady. Here the
    node never comes back: it goes NotReady a grace period after its replica died, not
    after its last report."""
    grace = 12.0
    flags = ("--node-grace-period", f"{grace:g}", "--leader-timeout", LEADER_TIMEOUT)
    with running_replicas(tmp_path, database, 2, *flags) as (a, b):
        ws = open_ws(a)
        try:
            hello(ws, "orphan")
            heartbeat(ws, 1, usage={"cpu": "7m"})
            acked(ws)
            wait_for(lambda: "7m" in stored_lease(database, "orphan").usage, 10, "A's flush")
            time.sleep(grace - 2)  # silent, not yet for a grace period
            killed = time.time()
            a.kill()
            wait_for(lambda: ready(b, "orphan") != "True", 60, "the node NotReady")
        finally:
            ws.close()
        conditions = node(b, "orphan")["status"]["conditions"]
        since = next(c for c in conditions if c["type"] == "Ready")["lastTransitionTime"]
        marked = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
        # A's row was refreshed every 2 s until the kill (allow 4 under load), and the
        # transition time is written to the second: counted from the last report, it would
        # be at most 5 s after the kill
        assert marked >= killed + grace - 4 - 1, (since, killed)


def _backends_of(hub: Hub, database: str) -> set[int]:
    """The PostgreSQL backend pids serving ``hub``'s connections (matched by client port)."""
    assert hub.proc is not None
    pg_port = int(database.rsplit(":", 1)[1].split("/", 1)[0])
    ports = [
        c.laddr.port
        for c in psutil.Process(hub.proc.pid).net_connections("tcp")
        if c.raddr and c.raddr.port == pg_port
    ]
    with _admin(database) as conn:
        rows = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(:ports)"),
            {"ports": ports},
        )
        return {int(pid) for (pid,) in rows}


@contextmanager
def _admin(database: str) -> Iterator[Connection]:
    engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _blocked_by(database: str, backends: set[int]) -> bool:
    """Whether some backend waits for a lock one of ``backends`` holds."""
    with _admin(database) as conn:
        rows = conn.execute(text("SELECT pg_blocking_pids(pid) FROM pg_stat_activity"))
        return any(set(blockers or ()) & backends for (blockers,) in rows)


def test_a_replica_stopped_inside_a_transaction_does_not_block_the_others_for_long(
    pair: list[Hub], database: str
) -> None:
    """A replica frozen (SIGSTOP, a frozen VM) in the middle of a write holds the revision
    row's lock, which every write in the fleet takes. PostgreSQL ends its transaction once
    it has sat idle for three leader timeouts, so the other replica's writes go on while
    it stays frozen; after it resumes it serves writes again on a new connection."""
    a, b = pair
    idle_limit = 3 * float(LEADER_TIMEOUT)
    stop = threading.Event()
    names = itertools.count()

    def keep_writing() -> None:  # so that a stop is likely to find A inside a transaction
        while not stop.is_set():
            try:
                a.request("POST", DEVICES, device(f"busy-{next(names)}"))
            except OSError:
                time.sleep(0.05)

    writers = [threading.Thread(target=keep_writing, daemon=True) for _ in range(3)]
    for writer in writers:
        writer.start()
    assert a.proc is not None
    pool = concurrent.futures.ThreadPoolExecutor(1)
    b.request_timeout = idle_limit + 30
    try:
        for attempt in range(200):
            os.kill(a.proc.pid, signal.SIGSTOP)
            backends = _backends_of(a, database)
            started = time.monotonic()
            write = pool.submit(b.request, "POST", DEVICES, device(f"other-{attempt}"))
            time.sleep(0.5)
            if not write.done() and _blocked_by(database, backends):
                break
            os.kill(a.proc.pid, signal.SIGCONT)
            ok(write.result(), 201)
            time.sleep(0.1 * (attempt % 5))
        else:
            raise AssertionError("A never held a lock B waited for when it was stopped")
        ok(write.result(timeout=idle_limit + 30), 201)
        took = time.monotonic() - started
        assert took >= idle_limit - 1, took  # it did wait for A, then went on without it
    finally:
        stop.set()
        os.kill(a.proc.pid, signal.SIGCONT)
        pool.shutdown(wait=False)
    for writer in writers:
        writer.join(30)
    ok(a.request("POST", DEVICES, device("after-the-stop")), 201)
    assert a.request("GET", f"{DEVICES}/after-the-stop")[0] == 200


def test_the_idle_transaction_limit_keeps_the_urls_own_options(database: str) -> None:
    """The limit rides on libpq's ``options``; a URL that sets its own keeps them, and one
    that sets the limit itself wins."""
    settings = "?options=-c%20statement_timeout%3D4321"
    engine = open_engine(database + settings, 2.5)
    try:
        with engine.connect() as conn:
            show = {
                name: conn.execute(text(f"SHOW {name}")).scalar_one()
                for name in ("idle_in_transaction_session_timeout", "statement_timeout")
            }
            assert show == {
                "idle_in_transaction_session_timeout": "2500ms",
                "statement_timeout": "4321ms",
            }
    finally:
        engine.dispose()
    engine = open_engine(database + "?options=-c%20idle_in_transaction_session_timeout%3D777", 2)
    try:
        with engine.connect() as conn:
            shown = conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one()
            assert shown == "777ms"
    finally:
        engine.dispose()
    twice = "?options=-c%20statement_timeout%3D4321&options=-c%20lock_timeout%3D1234"
    engine = open_engine(database + twice, 2)
    try:
        with engine.connect() as conn:
            shown = [conn.execute(text(f"SHOW {n}")).scalar_one()
                     for n in ("statement_timeout", "lock_timeout",
                               "idle_in_transaction_session_timeout")]  # fmt: skip
            assert shown == ["4321ms", "1234ms", "2s"]
    finally:
        engine.dispose()
