"""edgecore's Prometheus metrics from a real edgecore, hub and Mosquitto: the counters move
with twin traffic and the hub link, nothing listens without the setting, and a port
already taken or a bad setting is said in one line (docs/metrics.md)."""

from __future__ import annotations

import http.client
import socket
import subprocess
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_twins import NS, D, device, model, update
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.postgres import free_port
from tests.support.procs import BIN, Edge, Hub, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body)
        assert resp.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    finally:
        conn.close()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }


def value(port: int, name: str, **labels: str) -> float:
    return scrape(port)[(name, tuple(sorted(labels.items())))]


def listening(edge: Edge) -> list[tuple[str, int]]:
    assert edge.proc is not None
    conns = psutil.Process(edge.proc.pid).net_connections(kind="inet")
    return [tuple(c.laddr) for c in conns if c.status == psutil.CONN_LISTEN]


def registered(hub: Hub, node: str) -> bool:
    return hub.request("GET", f"/api/v1/nodes/{node}")[0] == 200


def test_counters_follow_twin_traffic_and_the_hub_link(
    hub: Hub, start_edge: Any, own_broker: Mosquitto
) -> None:
    """A desired value sent to the mapper, a reported value taken from it, rows waiting in
    the outbox while the hub is down and drained once it is back, the link going down and
    up again: each moves its metric."""
    port = free_port()
    assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
    assert hub.request("POST", f"{NS}/devices", device("thermo", "edge-m"))[0] == 201
    mapper = FakeMapper(own_broker, f"{D}/thermo/twin/update/#")
    try:
        edge = start_edge("edge-m", "--metrics-listen", str(port), mqtt=own_broker)
        wait_for(lambda: value(port, "edgecore_hub_connected") == 1, 30, "the hub link")
        assert listening(edge) == [("127.0.0.1", port)]

        mapper.expect(f"{D}/thermo/twin/update/delta")  # the desired target of 21
        wait_for(lambda: value(port, "edgecore_mqtt_connected") == 1, 30, "the broker link")
        before = scrape(port)
        # one delta, published with the namespaced id and the bare one: the mapper has not
        # spoken yet, so edgecore does not know which it listens on (docs/KUBEEDGE-MQTT.md)
        assert before[("edgecore_twin_deltas_sent_total", ())] == 2
        assert before[("edgecore_mqtt_messages_published_total", ())] >= 1
        assert before[("edgecore_mqtt_messages_received_total", ())] == 0
        assert before[("edgecore_twin_reported_updates_total", ())] == 0
        assert before[("edgecore_hub_reconnects_total", ())] == 0

        mapper.publish(f"{D}/thermo/twin/update", update("r1", temperature="20.5"))
        assert mapper.expect(f"{D}/thermo/twin/update/result")["event_id"] == "r1"
        after = scrape(port)
        assert after[("edgecore_mqtt_messages_received_total", ())] == 1
        assert after[("edgecore_twin_reported_updates_total", ())] == 1
        published = ("edgecore_mqtt_messages_published_total", ())
        assert after[published] > before[published]  # the result and the document
        commits = ("edgecore_store_commit_duration_seconds_count", ())
        assert after[commits] > 0
        assert (
            after[("edgecore_store_commit_duration_seconds_bucket", (("le", "+Inf"),))]
            == (after[commits])
        )

        hub.kill()
        wait_for(lambda: value(port, "edgecore_hub_connected") == 0, 60, "the link to drop")
        mapper.publish(f"{D}/thermo/twin/update", update("r2", temperature="21.5"))
        assert mapper.expect(f"{D}/thermo/twin/update/result")["event_id"] == "r2"
        # written before the result was sent, and nothing takes it while the hub is away
        assert value(port, "edgecore_outbox_rows", kind="twin/reported") == 1
        assert value(port, "edgecore_outbox_bytes", kind="twin/reported") > 0
        wait_for(
            lambda: value(port, "edgecore_outbox_rows", kind="node/status") == 1,
            30,
            "a node status row to wait",
        )

        hub.start()  # on the same ports
        wait_for(lambda: value(port, "edgecore_hub_connected") == 1, 60, "the link to return")
        assert value(port, "edgecore_hub_reconnects_total") == 1
        assert value(port, "edgecore_hub_connect_attempts_total") >= 2
        wait_for(
            lambda: value(port, "edgecore_outbox_rows", kind="twin/reported") == 0,
            30,
            "the outbox to drain",
        )
        assert value(port, "edgecore_outbox_bytes", kind="twin/reported") == 0
    finally:
        mapper.close()


def test_without_the_setting_nothing_listens(hub: Hub, start_edge: Any) -> None:
    edge = start_edge("edge-quiet")
    wait_for(lambda: registered(hub, "edge-quiet"), 30, "the edge to register")
    assert listening(edge) == []


def test_a_port_in_use_is_one_logged_line_and_the_edge_runs_on(
    hub: Hub, start_edge: Any, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        edge = start_edge("edge-busy", "--metrics-listen", f"127.0.0.1:{port}")
        line = (
            f"metrics: cannot listen on 127.0.0.1:{port}: address already in use; "
            "edgecore runs on without metrics"
        )
        wait_for(lambda: line in edge.log(), 30, "the line")
        wait_for(lambda: registered(hub, "edge-busy"), 30, "the edge to register")
        assert edge.running
        assert listening(edge) == []


def test_a_bad_or_remote_listen_address_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """Exit 2, as every configuration problem: restarting cannot mend it."""
    for given, said in [
        ("nine", "edgecore: metrics.listen: 'nine' is not PORT, HOST:PORT or [IPV6]:PORT"),
        ("0.0.0.0:9101", 'edgecore: metrics.listen: "0.0.0.0:9101" is not a loopback address'),
        ("gw.example:9101", "edgecore: metrics.listen: 'gw.example' in 'gw.example:9101' is not"),
    ]:
        done = subprocess.run(
            [str(BIN / "edgecore"), "--node", "e", "--hub", "ws://127.0.0.1:1", "--insecure",
             "--no-mqtt", "--data-dir", str(tmp_path / "e"), "--metrics-listen", given],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(said), done.stderr
