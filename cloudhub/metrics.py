"""The hub's Prometheus metrics, served at ``/metrics`` (same port, TLS and tokens as the API).

Counted as things happen: REST API requests by method and status code, frames and
report rows from edges, group commits (jobs per batch and seconds per transaction).
Read from the database at each scrape, so every replica tells the same truth: nodes by
condition (``Ready``, ``NotReady``, ``Unknown`` for a Node that never connected), the
change log's depth (revisions it holds) and the twin history values waiting to be merged.
Read from this process: edge sessions open, and connections the edge port turned away, by
reason.

Names follow Prometheus' conventions (``edgeward_`` prefix, ``_total`` on counters,
base units); docs/metrics.md lists them with the Grafana dashboard that uses them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from cloudhub.store import Store

#: Jobs per group commit: powers of two up to the writer's largest batch.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: Seconds per group commit's transaction, and per API request.
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class HubMetrics:
    """One hub process's metrics, in a registry of its own (not the library's global one,
    so several hubs in one process, as the tests run them, never share counts)."""

    def __init__(
        self,
        store: Store,
        sessions: Callable[[], int] = lambda: 0,
        leading: Callable[[], bool] = lambda: True,
        turned_away: Callable[[], Mapping[str, int]] = dict,
        history_waiting: Callable[[], int] = lambda: 0,
    ) -> None:
        """``leading()``: whether this replica runs the fleet-wide duties (docs/ha.md);
        ``turned_away()``: the edge port's refusals and time-outs since start, by reason;
        ``history_waiting()``: twin history values not merged yet (cloudhub.history)."""
        self.registry = CollectorRegistry()
        self.api_requests = Counter(
            "edgeward_api_requests",
            "REST API requests answered, by method and HTTP status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.api_seconds = Histogram(
            "edgeward_api_request_duration_seconds",
            "Time until a REST API answer starts (a watch: until it opens).",
            ["method"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.edge_frames = Counter(
            "edgeward_edge_frames_received",
            "Frames received from edges on the edge port.",
            registry=self.registry,
        )
        self.edge_reports = Counter(
            "edgeward_edge_report_rows_received",
            "Report rows (twin reports, device states, uploads, node status) received "
            "from edges, replays included.",
            registry=self.registry,
        )
        self.commit_jobs = Histogram(
            "edgeward_group_commit_jobs",
            "Jobs (report frames, API writes) committed together in one transaction.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "edgeward_group_commit_duration_seconds",
            "Time of one group commit's transaction, commit included.",
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(
            _FleetCollector(store, sessions, leading, turned_away, history_waiting)
        )

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """(body, content type) in the format the scraper's Accept header asks for:
        Prometheus' text format 0.0.4 unless it asks for OpenMetrics."""
        try:
            encode, content_type = choose_encoder(accept)
        except ValueError:  # an Accept header it cannot read: the default format
            encode, content_type = choose_encoder("")
        return encode(self.registry), content_type

    def committed(self, jobs: int, started: float) -> None:
        """A group commit of ``jobs`` jobs ended (``started``: its time.perf_counter())."""
        self.commit_jobs.observe(jobs)
        self.commit_seconds.observe(time.perf_counter() - started)


class _FleetCollector(Collector):
    """What is read at each scrape: nodes by condition, the change log, sessions, and the
    connections the edge port turned away."""

    def __init__(
        self,
        store: Store,
        sessions: Callable[[], int],
        leading: Callable[[], bool],
        turned_away: Callable[[], Mapping[str, int]],
        history_waiting: Callable[[], int],
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.leading = leading
        self.turned_away = turned_away
        self.history_waiting = history_waiting

    def collect(self) -> Iterator[Any]:
        nodes = GaugeMetricFamily(
            "edgeward_nodes",
            "Nodes by their Ready condition (Unknown: never connected).",
            labels=["condition"],
        )
        for condition, count in sorted(self.store.node_conditions().items()):
            nodes.add_metric([condition], count)
        yield nodes
        compacted, head = self.store.log_bounds()
        yield GaugeMetricFamily(
            "edgeward_change_log_revision", "The newest revision in the change log.", value=head
        )
        yield GaugeMetricFamily(
            "edgeward_change_log_depth",
            "Revisions the change log holds (an edge further behind takes a snapshot).",
            value=head - compacted,
        )
        yield GaugeMetricFamily(
            "edgeward_history_values_waiting",
            "Twin history values not yet merged into the indexed table, counted up to "
            "1,000,000: about a second's worth while merges work; growing, they fail.",
            value=self.history_waiting(),
        )
        yield GaugeMetricFamily(
            "edgeward_edge_sessions",
            "Edge sessions open on this hub process.",
            value=self.sessions(),
        )
        turned_away = CounterMetricFamily(
            "edgeward_edge_connections_turned_away",
            "Edge-port connections this hub process turned away since it started, by reason: "
            "tls_refused (no client certificate, another CA, not TLS), handshake_timeout (TLS "
            "or the websocket upgrade unfinished in edge_handshake_timeout), hello_timeout, "
            "refused (at the upgrade for the certificate, or for what the session said).",
            labels=["reason"],
        )
        for reason, count in sorted(self.turned_away().items()):
            turned_away.add_metric([reason], count)
        yield turned_away
        yield GaugeMetricFamily(
            "edgeward_hub_leader",
            "1 when this hub replica runs the fleet-wide duties (expiry, compaction), else 0.",
            value=int(self.leading()),
        )


class MetricsMiddleware:
    """Counts every answer of the REST API by method and status code, refusals by the
    authentication in front of the routes included (it wraps it)."""

    def __init__(self, app: Any, metrics: HubMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _METHODS else "other"
        started = time.perf_counter()
        status = 0

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.api_seconds.labels(method).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.api_requests.labels(method, str(status or 500)).inc()


#: Methods counted by name; anything else a client sends is "other" (labels stay bounded).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
