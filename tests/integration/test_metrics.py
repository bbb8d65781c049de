"""The hub's Prometheus metrics at /metrics, scraped from a real cloudhub with a real edgecore
and parsed with prometheus_client's own parser: what an operator's Prometheus would read."""

from __future__ import annotations

import contextlib
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_security import node_ready
from tests.support.procs import Hub, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
TURNED_AWAY = "edgeward_edge_connections_turned_away_total"


def scrape(hub: Hub, token: str | None = None, accept: str = "") -> tuple[int, str, str]:
    """GET /metrics: (status, content type, body)."""
    token = hub.token if token is None else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if accept:
        headers["Accept"] = accept
    req = urllib.request.Request(hub.api + "/metrics", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10, context=hub.tls()) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def samples(hub: Hub) -> Samples:
    status, _, text = scrape(hub)
    assert status == 200, text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(got: Samples, name: str, **labels: str) -> float:
    return got.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_fleet_the_api_and_the_edge_port_are_measured(hub: Hub, start_edge: Any) -> None:
    edge = start_edge("edge1")
    wait_for(lambda: node_ready(hub, "edge1"), 20, "edge1 to be Ready")
    before = samples(hub)
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "ghost"}}
    assert hub.request("POST", "/api/v1/nodes", node)[0] == 201  # never connects
    assert hub.request("GET", "/api/v1/namespaces/default/devices/missing")[0] == 404

    def reported() -> Samples | None:
        got = samples(hub)
        return got if value(got, "edgeward_edge_report_rows_received_total") else None

    got = wait_for(reported, 20, "a status report to be counted")
    status, content_type, _ = scrape(hub)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert value(got, "edgeward_nodes", condition="Ready") == 1
    assert value(got, "edgeward_nodes", condition="Unknown") == 1
    assert value(got, "edgeward_nodes", condition="NotReady") == 0
    assert value(got, "edgeward_edge_sessions") == 1
    assert value(got, "edgeward_hub_leader") == 1  # a lone hub leads
    assert value(got, "edgeward_edge_frames_received_total") >= 2  # hello, then reports
    assert value(got, "edgeward_group_commit_jobs_count") >= 1  # the node's registration
    assert value(got, "edgeward_group_commit_duration_seconds_count") >= 1
    for method, code in (("GET", "404"), ("POST", "201")):
        counted = [
            value(s, "edgeward_api_requests_total", method=method, code=code) for s in (before, got)
        ]
        assert counted[1] - counted[0] == 1, (method, code)
    head = hub.request("GET", "/healthz")[1]["revision"]
    assert value(got, "edgeward_change_log_revision") == head
    assert value(got, "edgeward_change_log_depth") == head  # nothing compacted yet
    assert value(got, "edgeward_history_values_waiting") >= 0  # read from the database

    edge.kill()
    wait_for(
        lambda: value(samples(hub), "edgeward_nodes", condition="NotReady") == 1,
        20,
        "edge1 counted NotReady once its grace period is over",
    )
    assert value(samples(hub), "edgeward_edge_sessions") == 0


def test_metrics_need_a_viewer_or_an_admin_token(tmp_path: Path) -> None:
    hub = Hub(tmp_path / "hub", secure=True)
    hub.start()
    try:
        status, _, body = scrape(hub, token="")
        assert status == 401 and "Unauthorized" in body
        assert scrape(hub, token="edgeward-not-a-token")[0] == 401
        status, node = hub.request("POST", "/api/v1/tokens", {"role": "node", "node": "gw-1"})
        assert status == 201
        status, _, body = scrape(hub, token=node["token"])
        assert status == 403 and "need a viewer" in body
        status, viewer = hub.request("POST", "/api/v1/tokens", {"role": "viewer"})
        assert scrape(hub, token=viewer["token"])[0] == 200
        got = samples(hub)  # the refusals above were counted, by code
        assert value(got, "edgeward_api_requests_total", method="GET", code="401") == 2
        assert value(got, "edgeward_api_requests_total", method="GET", code="403") == 1
    finally:
        hub.kill()


def test_the_edge_port_counts_the_connections_it_turns_away(tmp_path: Path) -> None:
    """A TLS client with no certificate, and one speaking plain HTTP to the TLS port, are
    each counted once, under tls_refused; the other reasons are there, at 0."""
    hub = Hub(tmp_path / "hub", secure=True)
    hub.start()
    try:
        no_certificate = ssl.create_default_context(cafile=str(hub.ca))
        with (
            socket.create_connection(("127.0.0.1", hub.edge_port), timeout=10) as raw,
            contextlib.suppress(ssl.SSLError, ConnectionError),
            no_certificate.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\n\r\n")
            tls.recv(4096)  # TLS 1.3: the refusal arrives on the first read
        with socket.create_connection(("127.0.0.1", hub.edge_port), timeout=10) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                raw.recv(4096)  # the hub's alert, or nothing, then the close

        def counted() -> Samples | None:
            got = samples(hub)
            return got if value(got, TURNED_AWAY, reason="tls_refused") == 2 else None

        got = wait_for(counted, 10, "both refused handshakes to be counted")
        for reason in ("handshake_timeout", "hello_timeout", "refused"):
            assert got[(TURNED_AWAY, (("reason", reason),))] == 0, reason
        assert hub.request("GET", "/healthz")[1]["edge"]["handshakeFailures"] == 2
    finally:
        hub.kill()


def test_any_accept_header_gets_metrics_in_a_format_it_names(hub: Hub) -> None:
    """OpenMetrics when asked for; the text format for anything else, garbage included."""
    status, content_type, body = scrape(hub, accept="application/openmetrics-text")
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")
    for accept in ("garbage", "application/openmetrics-text;;;==", "x" * 6000, "*/*"):
        status, content_type, body = scrape(hub, accept=accept)
        assert status == 200, accept[:40]
        assert content_type.startswith(("text/plain", "application/openmetrics-text"))
        assert "edgeward_nodes" in body
