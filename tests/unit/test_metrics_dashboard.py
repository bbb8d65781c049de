"""The Grafana dashboards we ship query only metrics the hub and edgecore export: a metric
renamed in cloudhub/metrics.py or edgecore/metrics.py without the dashboard would leave
its panel empty, without an error."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from cloudhub.metrics import HubMetrics
from edgecore.metrics import COMMIT_BUCKETS, Histogram, Readings, families, render

GRAFANA = Path(__file__).parents[2] / "packaging" / "grafana"
DASHBOARD = GRAFANA / "edgeward-hub.json"
EDGE_DASHBOARD = GRAFANA / "edgeward-edge.json"
#: What a query's metric names look like: ours, and the process_ one edgecore exports.
METRIC = re.compile(r"\b(?:edgeward|edgecore|process)_\w+")


class FleetStore:
    """What the scrape-time collector reads, without a database."""

    def node_conditions(self) -> dict[str, int]:
        return {"Ready": 2, "NotReady": 1, "Unknown": 0}

    def log_bounds(self) -> tuple[int, int]:
        return 10, 25


def exported() -> set[str]:
    metrics = HubMetrics(
        FleetStore(),  # type: ignore[arg-type]
        sessions=lambda: 2,
        turned_away=lambda: {"tls_refused": 1},
        history_waiting=lambda: 7,
    )
    metrics.api_requests.labels("GET", "200").inc()
    metrics.api_seconds.labels("GET").observe(0.01)
    metrics.committed(3, 0.0)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    return {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def edge_exported() -> set[str]:
    """Every sample name edgecore can export: MQTT on, the broker's drops known."""
    commits = Histogram(COMMIT_BUCKETS)
    commits.observe(0.01)
    readings = Readings(mqtt_connected=True, broker_dropped=0, commits=commits.snapshot(),
                        rss_bytes=1)  # fmt: skip
    body = render(families(readings)).decode()
    return {s.name for f in text_string_to_metric_families(body) for s in f.samples}


def queried(dashboard: Path) -> set[str]:
    panels = json.loads(dashboard.read_text())["panels"]
    return {name for p in panels for t in p["targets"] for name in METRIC.findall(t["expr"])}


def test_every_dashboard_query_names_an_exported_metric() -> None:
    names = queried(DASHBOARD)
    assert names, "the dashboard queries nothing"
    assert names <= exported(), f"not exported: {sorted(names - exported())}"


def test_every_edge_dashboard_query_names_a_metric_edgecore_exports() -> None:
    names = queried(EDGE_DASHBOARD)
    assert names, "the dashboard queries nothing"
    assert names <= edge_exported(), f"not exported: {sorted(names - edge_exported())}"


def test_scrape_time_values_come_from_the_store() -> None:
    metrics = HubMetrics(
        FleetStore(),  # type: ignore[arg-type]
        sessions=lambda: 2,
        turned_away=lambda: {"tls_refused": 1},
        history_waiting=lambda: 7,
    )
    body, _ = metrics.render()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }
    assert samples[("edgeward_nodes", (("condition", "Ready"),))] == 2
    assert samples[("edgeward_nodes", (("condition", "NotReady"),))] == 1
    assert samples[("edgeward_change_log_depth", ())] == 15
    assert samples[("edgeward_change_log_revision", ())] == 25
    assert samples[("edgeward_history_values_waiting", ())] == 7
    assert samples[("edgeward_edge_sessions", ())] == 2
