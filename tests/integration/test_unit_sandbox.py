"""The daemons at work under their units' system call sandbox (tests/support/sandbox.py):
SystemCallFilter=, RestrictAddressFamilies= and MemoryDenyWriteExecute= as systemd 252
enforces them. A call the units refuse kills the process here (@chown aside: see the
sandbox), where systemd would fail it with EPERM: so these paths make none."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import sandbox
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.nodecerts import join
from tests.support.notify import NotifySocket
from tests.support.postgres import PostgresCluster
from tests.support.procs import Edge, Hub, Process, wait_for

why_not = sandbox.supported() or (
    None if shutil.which("systemd-analyze") else "systemd-analyze is not installed"
)
pytestmark = pytest.mark.skipif(why_not is not None, reason=why_not or "")

NS = "/api/v1/namespaces/default"
D = "$hw/events/device/default"


PROBE = """
import ctypes, errno, mmap, os, socket
def refused(call, *args):
    try:
        call(*args)
    except OSError as exc:
        return exc.errno
    return 0
libc = ctypes.CDLL(None, use_errno=True)
page = mmap.mmap(-1, 4096)
address = ctypes.addressof(ctypes.c_char.from_buffer(page))
libc.mprotect(address, 4096, mmap.PROT_READ | mmap.PROT_EXEC)
print(
    refused(socket.socket, socket.AF_NETLINK, socket.SOCK_RAW),
    refused(mmap.mmap, -1, 4096, mmap.MAP_PRIVATE, mmap.PROT_WRITE | mmap.PROT_EXEC),
    ctypes.get_errno(),
    refused(os.setuid, 0),
    refused(socket.socket, socket.AF_INET6, socket.SOCK_STREAM),
)
"""


def test_the_sandbox_refuses_what_the_units_refuse() -> None:
    """The harness is no no-op: netlink sockets, writable+executable memory, making memory
    executable and @privileged calls are refused with the units' errors; AF_INET6 is not."""
    run = [sys.executable, "-m", "tests.support.sandbox", "edgecore.service", "--"]
    done = subprocess.run(
        [*run, sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    eperm, eafnosupport = 1, 97
    assert done.stdout.split() == [str(eafnosupport), str(eperm), str(eperm), str(eperm), "0"]
    run.insert(3, "--kill")
    killed = subprocess.run([*run, sys.executable, "-c", "import os; os.setuid(0)"], timeout=30)
    assert killed.returncode == -signal.SIGSYS


def sandboxed(proc: Process, unit: str, listener: NotifySocket) -> None:
    proc.wrapper = [sys.executable, "-m", "tests.support.sandbox", "--kill", unit, "--"]
    proc.env = listener.environ(watchdog=1.0)


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[tuple[NotifySocket, NotifySocket]]:
    (tmp_path / "hub-notify").mkdir()
    (tmp_path / "edge-notify").mkdir()
    pair = NotifySocket(tmp_path / "hub-notify"), NotifySocket(tmp_path / "edge-notify")
    yield pair
    for listener in pair:
        listener.close()


def test_hub_and_edge_serve_twins_renew_and_stop_inside_the_sandbox(
    tmp_path: Path, listeners: tuple[NotifySocket, NotifySocket], mqtt_broker: Mosquitto
) -> None:
    """TLS both ways, SQLite, the twin loop over MQTT, psutil's usage figures, sd_notify and
    a certificate renewal (whose CSR child inherits the filter) on the secure path a
    gateway runs; then a clean stop."""
    hub_notify, edge_notify = listeners
    # 8.6 s certificates: the node renews about 6 s after joining
    hub = Hub(tmp_path / "hub", "--node-certificate-days", "0.0001", secure=True)
    sandboxed(hub, "cloudhub.service", hub_notify)
    hub.start()
    edge: Edge | None = None
    mapper: FakeMapper | None = None
    try:
        hub_notify.wait(lambda m: "READY" in m.fields, "the hub's READY=1")
        model = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": "thermostat"},
            "spec": {"properties": [{"name": "temperature", "type": "FLOAT"}]},
        }
        assert hub.request("POST", f"{NS}/devicemodels", model)[0] == 201
        device = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": "thermo"},
            "spec": {
                "deviceModelRef": {"name": "thermostat"},
                "nodeName": "gw-1",
                "properties": [{"name": "temperature"}],
            },
        }
        assert hub.request("POST", f"{NS}/devices", device)[0] == 201
        credentials = join(hub, "gw-1", tmp_path / "gw-1")
        first_cert = credentials.cert.read_bytes()
        edge = Edge(
            tmp_path / "gw-1",
            "gw-1",
            hub.edge,
            "--mqtt",
            f"{mqtt_broker.host}:{mqtt_broker.port}",
            "--status-interval",
            "0.5",
        )
        sandboxed(edge, "edgecore.service", edge_notify)
        edge.start()
        edge_notify.wait_status(f"connected to hub {hub.edge}, 1 device")

        mapper = FakeMapper(mqtt_broker, f"{D}/thermo/twin/update/#")
        update = {
            "event_id": "s1",
            "timestamp": 0,
            "twin": {"temperature": {"actual": {"value": "20.5"}}},
        }
        mapper.publish(f"{D}/thermo/twin/update", update)
        mapper.expect(f"{D}/thermo/twin/update/result")

        def reported() -> bool:
            body = hub.request("GET", f"{NS}/devices/thermo")[1]
            twins = body.get("status", {}).get("twins", [])
            return any(t.get("reported", {}).get("value") == "20.5" for t in twins)

        wait_for(reported, 15, "the mapper's report to reach the hub")
        wait_for(
            lambda: hub.request("GET", "/api/v1/nodes/gw-1")[1]["status"]["usage"]["memoryBytes"],
            15,
            "the node's usage figures",
        )
        wait_for(lambda: credentials.cert.read_bytes() != first_cert, 30, "a renewal")
        edge_notify.wait_pings(2)
        hub_notify.wait_pings(2)

        assert edge.stop() == 0, edge.log()
        assert hub.stop() == 0, hub.log()
    finally:
        if mapper is not None:
            mapper.close()
        if edge is not None:
            edge.kill()
        hub.kill()


def test_the_hub_on_postgresql_inside_the_sandbox(
    tmp_path: Path, listeners: tuple[NotifySocket, NotifySocket], postgres: PostgresCluster
) -> None:
    """libpq (psycopg's binary build) under the hub's filter: migrate, write, stop."""
    hub_notify, _ = listeners
    url = postgres.create_database("sandboxed")
    hub = Hub(tmp_path / "hub", "--database", url)
    sandboxed(hub, "cloudhub.service", hub_notify)
    hub.start()
    try:
        hub_notify.wait(lambda m: "READY" in m.fields, "the hub's READY=1")
        model = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": "m"},
            "spec": {},
        }
        assert hub.request("POST", f"{NS}/devicemodels", model)[0] == 201
        hub_notify.wait_pings(2)
        assert hub.stop() == 0, hub.log()
    finally:
        hub.kill()
