"""The Grafana dashboard we ship queries only metrics the hub exports: a metric renamed in
cloudhub/metrics.py without the dashboard would leave its panel empty, without an error."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from cloudhub.metrics import HubMetrics

DASHBOARD = Path(__file__).parents[2] / "packaging" / "grafana" / "edgeward-hub.json"


class FleetStore:
    """What the scrape-time collector reads, without a database."""

    def node_conditions(self) -> dict[str, int]:
        return {"Ready": 2, "NotReady": 1, "Unknown": 0}

    def log_bounds(self) -> tuple[int, int]:
        return 10, 25


def exported() -> set[str]:
    metrics = HubMetrics(FleetStore(), sessions=lambda: 2)  # type: ignore[arg-type]
    metrics.api_requests.labels("GET", "200").inc()
    metrics.api_seconds.labels("GET").observe(0.01)
    metrics.committed(3, 0.0)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    return {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def test_every_dashboard_query_names_an_exported_metric() -> None:
    names = exported()
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bedgeward_\w+", target["expr"])
    }
    assert queried, "the dashboard queries nothing"
    assert queried <= names, f"not exported: {sorted(queried - names)}"


def test_scrape_time_values_come_from_the_store() -> None:
    metrics = HubMetrics(FleetStore(), sessions=lambda: 2)  # type: ignore[arg-type]
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
    assert samples[("edgeward_edge_sessions", ())] == 2
