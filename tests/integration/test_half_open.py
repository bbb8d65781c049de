"""Half-open links: a path that silently stops passing packets, with neither end told (a NAT
that forgot the flow, a pulled cable). Both sides find it by their websocket pings within
the configured timeout, and the edge links up again once the path carries packets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.frames import Frame, Opcode
from websockets.sync.client import ClientConnection, connect

from tests.integration.test_edge_endpoint import hello
from tests.support.faultproxy import FaultProxy
from tests.support.procs import Edge, Hub, wait_for

PING = 1.0  # interval and timeout, both sides
#: Pings and the close timeout take 3 s here; websockets' defaults took 40 s, and the close
#: handshake on a dead link another 10
DETECTED = 9.0


def sessions(hub: Hub) -> int:
    return int(hub.request("GET", "/healthz")[1]["edge"]["sessions"])


def node_ready(hub: Hub, node: str) -> bool:
    status, body = hub.request("GET", f"/api/v1/nodes/{node}")
    conditions = body.get("status", {}).get("conditions", []) if status == 200 else []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[tuple[Hub, FaultProxy, Edge]]:
    hub = Hub(
        tmp_path / "hub",
        "--node-grace-period",
        "60",  # readiness is not how the link is found dead here
        "--edge-ping-interval",
        str(PING),
        "--edge-ping-timeout",
        str(PING),
    )
    hub.start()
    proxy = FaultProxy("127.0.0.1", hub.edge_port)
    config = tmp_path / "edge.yaml"
    config.write_text(
        "hub:\n"
        f"  ping_interval: {PING}\n  ping_timeout: {PING}\n"
        "  reconnect_initial_delay: 0.2\n  reconnect_max_delay: 1\n"
    )
    edge = Edge(
        tmp_path / "edge1",
        "edge1",
        f"ws://127.0.0.1:{proxy.port}",
        "--no-mqtt",
        "--config",
        str(config),
    )
    edge.start()
    try:
        wait_for(lambda: node_ready(hub, "edge1"), 20, "edge1 to be Ready through the proxy")
        yield hub, proxy, edge
    finally:
        edge.kill()
        proxy.close()
        hub.kill()


def test_a_blackholed_link_is_found_by_both_sides_and_the_edge_links_up_again(
    linked: tuple[Hub, FaultProxy, Edge], tmp_path: Path
) -> None:
    hub, proxy, _edge = linked
    assert sessions(hub) == 1
    # the open link passes nothing from now on; new ones are turned away for the moment
    proxy.set("blackhole", new=False)
    proxy.set("refuse", existing=False)
    attempts = proxy.connections
    wait_for(lambda: sessions(hub) == 0, DETECTED, "the hub to close the dead link")
    wait_for(lambda: proxy.connections > attempts, DETECTED, "the edge to try a new link")
    assert "keepalive ping timeout" in (tmp_path / "edge1.log").read_text()

    proxy.set("pass", existing=False)
    wait_for(lambda: sessions(hub) == 1, 20, "the edge to link up again")
    assert proxy.open_links() == 1
    # the new link carries work: a device bound to the node reaches the edge's cache
    device: dict[str, Any] = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "after-blackhole", "namespace": "default"},
        "spec": {"nodeName": "edge1"},
    }
    assert hub.request("POST", "/api/v1/namespaces/default/devices", device)[0] == 201
    wait_for(lambda: _edge_has(linked[2], "after-blackhole"), 20, "the device to reach the edge")


def _edge_has(edge: Edge, name: str) -> bool:
    db = edge.db()
    try:
        return db.execute("SELECT 1 FROM objects WHERE name = ?", (name,)).fetchone() is not None
    finally:
        db.close()


class CountingPings(ClientConnection):
    """A client connection that counts the pings it receives (websockets answers them)."""

    pings = 0

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings += 1
        super().process_event(event)


def test_the_hub_pings_only_a_link_that_has_gone_quiet(tmp_path: Path) -> None:
    """Anything an edge sends shows its link passes packets, so the hub pings only a link
    silent for a whole interval (answering pings both ways was ~40% of an idle hub's CPU):
    an edge that talks gets no ping; a quiet one is pinged each interval and stays linked
    while it answers."""
    hub = Hub(tmp_path / "hub", "--edge-ping-interval", str(PING), "--edge-ping-timeout", "2")
    hub.start()
    try:
        options: dict[str, Any] = {"compression": None, "proxy": None, "ping_interval": None}
        with (
            connect(hub.edge, create_connection=CountingPings, **options) as talking,
            connect(hub.edge, create_connection=CountingPings, **options) as quiet,
        ):
            assert isinstance(talking, CountingPings) and isinstance(quiet, CountingPings)
            hello(talking, "talking")
            hello(quiet, "quiet")
            end = time.monotonic() + 6 * PING
            while time.monotonic() < end:
                talking.ping()  # an edge's own keepalive
                time.sleep(PING / 4)
            assert talking.pings == 0
            assert quiet.pings >= 3
            assert sessions(hub) == 2
    finally:
        hub.kill()
