"""Real cloudhub and edgecore processes talking sd_notify to a real NOTIFY_SOCKET, as under
systemd with Type=notify and WatchdogSec= (docs/packaging.md)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.notify import NotifySocket
from tests.support.postgres import free_port
from tests.support.procs import Edge, Hub, Process, wait_for
from tests.support.stall import OutputPipe
from tests.support.units import seconds, settings

#: WatchdogSec= for these daemons: a ping every half second.
WATCHDOG = 1.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path)
    yield sock
    sock.close()


def stop_as_systemd_would(proc: Process, unit: str, listener: NotifySocket) -> None:
    """SIGTERM: STOPPING=1 and exit 0 within the unit's TimeoutStopSec (after which systemd
    would kill it)."""
    since = len(listener.messages)
    timeout = seconds(settings(unit)["Service.TimeoutStopSec"][0])
    assert proc.stop(timeout=timeout) == 0, proc.log()
    stopping = listener.having("STOPPING", since)
    assert [m.fields for m in stopping] == [{"STOPPING": "1", "STATUS": "stopping"}]


def edge_for(tmp_path: Path, hub_url: str, listener: NotifySocket, *extra: str) -> Edge:
    edge = Edge(tmp_path / "edge", "edge-1", hub_url, "--status-interval", "60", *extra)
    edge.env = listener.environ(watchdog=WATCHDOG)
    return edge


def test_hub_is_ready_once_it_serves_and_keeps_its_status_current(
    tmp_path: Path, listener: NotifySocket
) -> None:
    """READY=1 comes once the API answers; the status counts connected nodes; the watchdog
    is pinged; SIGTERM stops it cleanly and quickly."""
    hub = Hub(tmp_path / "hub")
    hub.env = listener.environ(watchdog=WATCHDOG)
    hub.start()
    try:
        ready = listener.wait(lambda m: "READY" in m.fields, "READY=1")
        status, health = hub.request("GET", "/healthz")
        assert status == 200 and health["status"] == "ok"
        assert listener.messages[ready].fields["STATUS"] == "0 nodes connected, revision 0"
        edge = Edge(tmp_path / "edge", "edge-1", hub.edge, "--no-mqtt")
        edge.start()
        try:
            listener.wait_status("1 node connected, revision ")
        finally:
            edge.kill()
        listener.wait_status("0 nodes connected")
        listener.wait_pings(3, since=ready)
        stop_as_systemd_would(hub, "cloudhub.service", listener)
    finally:
        hub.kill()


def test_edge_is_ready_with_its_cache_open_and_says_when_the_hub_comes(
    tmp_path: Path, listener: NotifySocket, own_broker: Mosquitto
) -> None:
    """READY=1 once the cache is open and the link and MQTT bridge started, while the hub is
    still down; the status line goes from unreachable to connected and counts devices."""
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    # a broker of its own: the shared one holds messages queued for earlier tests' sessions
    edge = edge_for(tmp_path, url, listener, "--mqtt", f"{own_broker.host}:{own_broker.port}")
    edge.start()
    hub = Hub(tmp_path / "hub")
    hub.edge_port = port
    try:
        ready = listener.wait(lambda m: "READY" in m.fields, "READY=1")
        with edge.db() as db:  # the cache exists, and belongs to this node
            assert db.execute("SELECT value FROM meta WHERE key = 'node'").fetchone() == ("edge-1",)
        assert listener.messages[ready].fields["STATUS"].startswith(f"connecting to hub {url}")
        listener.wait_status("hub unreachable (retrying), 0 devices, outbox 1")
        listener.wait_pings(2, since=ready)

        hub.start()
        listener.wait_status(f"connected to hub {url}, 0 devices, outbox 0")
        device = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": "thermo-1"},
            "spec": {"deviceModelRef": {"name": "thermostat"}, "nodeName": "edge-1"},
        }
        status, body = hub.request("POST", "/api/v1/namespaces/default/devices", device)
        assert status == 201, body
        since = listener.wait_status(f"connected to hub {url}, 1 device, outbox 0")
        # (the shared broker's count of drops is global, from other tests: not checked here)
        assert not any("MQTT broker not connected" in s for s in listener.statuses(since))
        stop_as_systemd_would(edge, "edgecore.service", listener)
    finally:
        edge.kill()
        hub.kill()


def stops_pinging(listener: NotifySocket, proc: Process) -> None:
    """Wait until no ping came for three watchdog periods (systemd would have killed the
    daemon twice over) while the process is alive."""

    def silent() -> bool:
        pings = listener.having("WATCHDOG")
        return bool(pings) and time.monotonic() - pings[-1].at > 3 * WATCHDOG

    wait_for(silent, 20, "the watchdog pings to stop")
    assert proc.running


def test_a_hung_edge_database_stops_the_pings_while_the_loop_runs_on(
    tmp_path: Path, listener: NotifySocket
) -> None:
    """Another process holds edge.db's write lock, so the store thread's next call hangs:
    the pings stop, and the status line (sent from the still-running loop) says why. When
    the lock goes, the pings come back."""
    hub = Hub(tmp_path / "hub")
    hub.start()
    edge = edge_for(tmp_path, hub.edge, listener, "--no-mqtt")
    edge.start()
    try:
        listener.wait_status("connected to hub")
        listener.wait_pings(2)
        blocker = sqlite3.connect(edge.data_dir / "edge.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        stuck = listener.wait_status("database not answering")
        stops_pinging(listener, edge)
        later = listener.wait_status("database not answering for 3 s", since=stuck)
        assert listener.having("WATCHDOG", since=stuck) == []
        blocker.execute("ROLLBACK")
        blocker.close()
        listener.wait_pings(2, since=later)
        assert "not answering" not in listener.statuses()[-1]
        assert "the database has not answered" in edge.log()
        stop_as_systemd_would(edge, "edgecore.service", listener)
    finally:
        edge.kill()
        hub.kill()


def test_a_hung_hub_database_stops_the_pings_while_the_api_answers(
    tmp_path: Path, listener: NotifySocket
) -> None:
    """Another process holds hub.db's write lock: the group writer's next batch waits, so the
    pings stop, while reads (/healthz) still answer. When the lock goes, they come back."""
    hub = Hub(tmp_path / "hub")
    hub.env = listener.environ(watchdog=WATCHDOG)
    hub.start()
    try:
        listener.wait_pings(2)
        blocker = sqlite3.connect(hub.data_dir / "hub.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        stuck = listener.wait_status("database not answering")
        stops_pinging(listener, hub)
        assert hub.request("GET", "/healthz")[0] == 200
        assert listener.having("WATCHDOG", since=stuck) == []
        blocker.execute("ROLLBACK")
        blocker.close()
        listener.wait_pings(2, since=stuck)
        stop_as_systemd_would(hub, "cloudhub.service", listener)
    finally:
        hub.kill()


def test_an_edge_whose_loop_blocks_on_its_log_stops_pinging(
    tmp_path: Path, listener: NotifySocket
) -> None:
    """Nobody reads edgecore's output (a journald that stopped reading): its next log line
    blocks the event loop in write(2), and the pings stop with it. Once the output is read
    again, the loop goes on and so do the pings."""
    hub = Hub(tmp_path / "hub")
    hub.start()
    output = OutputPipe(tmp_path / "edge.log")
    edge = edge_for(tmp_path, hub.edge, listener, "--no-mqtt")
    edge.output = output.write_end
    edge.start()
    try:
        listener.wait_status("connected to hub")
        listener.wait_pings(2)
        output.block()
        hub.kill()  # edgecore logs the lost link from its event loop
        stops_pinging(listener, edge)
        since = len(listener.messages)
        output.unblock()
        listener.wait_pings(2, since=since)
        wait_for(lambda: "connection lost" in edge.log(), 10, "the blocked log line")
        stop_as_systemd_would(edge, "edgecore.service", listener)
    finally:
        edge.kill()
        hub.kill()
        output.close()
