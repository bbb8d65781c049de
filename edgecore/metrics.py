"""edgecore's Prometheus metrics, in the text format 0.0.4, written without a library.

prometheus_client would cost 2.3 MB of RSS on the edge before serving a byte (it
imports http.server, wsgiref, email, gzip and more; measured in docs/metrics.md):
more than the whole 2 MB this feature may take. The format is small: ``# HELP`` and
``# TYPE`` lines, then ``name{label="value"} number`` samples; a histogram is its
cumulative ``_bucket{le="…"}`` samples, ``+Inf`` last, then ``_sum`` and ``_count``.

Almost everything is read when a scrape comes, from what edgecore's parts count
anyway (the node status reports the same figures to the hub): nothing is counted
twice and a daemon without metrics pays nothing. The store's commit times are the
exception: a :class:`Histogram` is fed only when metrics are on.

:func:`families` (readings → families) and :func:`render` (families → bytes) are
pure; :class:`EdgeMetrics` reads edgecore's parts on the event loop's thread.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgeward.protocol import (
    TOPIC_DEVICE_STATE,
    TOPIC_NODE_OUTAGE,
    TOPIC_NODE_STATUS,
    TOPIC_TWIN_REPORTED,
    TOPIC_UPLOAD,
)

if TYPE_CHECKING:
    from edgecore.eventbus import EventBus
    from edgecore.hublink import HubLink
    from edgecore.store import EdgeStore
    from edgecore.twins import TwinService

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds of one edge.db commit: a gateway's SD card or eMMC may take a second or more.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: Outbox row kinds (their topics), always exported (0 when none wait); any other topic
#: counts as ``other``, so the label stays bounded.
OUTBOX_KINDS = (
    TOPIC_TWIN_REPORTED,
    TOPIC_DEVICE_STATE,
    TOPIC_UPLOAD,
    TOPIC_NODE_STATUS,
    TOPIC_NODE_OUTAGE,
)
#: Reasons always exported (0 until one happens), so that rate() sees the first one.
MQTT_DROP_REASONS = ("too_large", "overload", "reply", "storage")
UNSTORED_KINDS = ("uploads", "updates")
OUTBOX_DROP_REASONS = ("quota", "expired", "too_large", "unstorable", "quarantined", "rejected")

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    suffix: str  # "" or _bucket, _sum, _count
    labels: Labels
    value: float


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: its name (counters end in ``_total``), type, help and samples."""

    name: str
    type: str  # counter, gauge or histogram
    help: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # per bucket, not cumulative; the last one is above every bound
    sum: float


class Histogram:
    """Observations counted in buckets, fed from any thread."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()  # observed on the store's thread, read on the loop's

    def observe(self, value: float) -> None:
        i = bisect_left(self.bounds, value)  # the first bound >= value: le is inclusive
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            return HistogramSnapshot(self.bounds, tuple(self._counts), self._sum)


# -- the text format ------------------------------------------------------------


def counter(name: str, help: str, values: Mapping[Labels, float] | float) -> Family:
    return _family(name, "counter", help, values)


def gauge(name: str, help: str, values: Mapping[Labels, float] | float) -> Family:
    return _family(name, "gauge", help, values)


def _family(name: str, type_: str, help: str, values: Mapping[Labels, float] | float) -> Family:
    if not isinstance(values, Mapping):
        values = {(): values}
    return Family(name, type_, help, tuple(Sample("", k, v) for k, v in values.items()))


def histogram(name: str, help: str, snap: HistogramSnapshot) -> Family:
    samples = []
    total = 0
    for bound, count in zip((*snap.bounds, math.inf), snap.counts, strict=True):
        total += count
        samples.append(Sample("_bucket", (("le", _number(bound)),), total))
    samples += [Sample("_sum", (), snap.sum), Sample("_count", (), total)]
    return Family(name, "histogram", help, tuple(samples))


def render(families: Iterable[Family]) -> bytes:
    lines = []
    for f in families:
        lines.append(f"# HELP {f.name} {_escape_help(f.help)}")
        lines.append(f"# TYPE {f.name} {f.type}")
        for s in f.samples:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in s.labels)
            where = f"{{{labels}}}" if labels else ""
            lines.append(f"{f.name}{s.suffix}{where} {_number(s.value)}")
    return ("\n".join(lines) + "\n").encode()


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


# -- edgecore's metrics -----------------------------------------------------------


@dataclass(frozen=True)
class Readings:
    """What edgecore's parts say at one moment: the input of :func:`families`."""

    #: Outbox rows and bytes waiting, by topic.
    outbox: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    outbox_quota_bytes: int = 0
    outbox_dropped: Mapping[str, int] = field(default_factory=dict)
    hub_connected: bool = False
    hub_attempts: int = 0
    hub_reconnects: int = 0
    #: None: MQTT is off (edgecore --no-mqtt), and no MQTT metric is exported.
    mqtt_connected: bool | None = None
    mqtt_received: int = 0
    mqtt_published: int = 0
    mqtt_dropped: Mapping[str, int] = field(default_factory=dict)
    mqtt_unstored: Mapping[str, int] = field(default_factory=dict)
    #: Mosquitto's count of what it dropped; None until it has said.
    broker_dropped: int | None = None
    twin_reports: int = 0
    twin_deltas: int = 0
    commits: HistogramSnapshot = HistogramSnapshot(
        COMMIT_BUCKETS, (0,) * (len(COMMIT_BUCKETS) + 1), 0.0
    )
    #: This process's resident memory; None where /proc is not there.
    rss_bytes: int | None = None


def families(r: Readings) -> list[Family]:
    """edgecore's metrics (docs/metrics.md has the table)."""
    rows: dict[str, int] = dict.fromkeys(OUTBOX_KINDS, 0)
    size: dict[str, int] = dict.fromkeys(OUTBOX_KINDS, 0)
    for topic, (n, b) in r.outbox.items():
        kind = topic if topic in rows else "other"
        rows[kind] = rows.get(kind, 0) + n
        size[kind] = size.get(kind, 0) + b
    out = [
        gauge(
            "edgecore_outbox_rows",
            "Outbox rows waiting for the hub, by kind (row topic).",
            _by("kind", rows),
        ),
        gauge(
            "edgecore_outbox_bytes",
            "Bytes of outbox rows waiting for the hub, by kind.",
            _by("kind", size),
        ),
        gauge(
            "edgecore_outbox_quota_bytes",
            "The outbox's quota (outbox.quota_mb), in bytes.",
            r.outbox_quota_bytes,
        ),
        counter(
            "edgecore_outbox_dropped_total",
            "Outbox rows refused or deleted unsent, by reason.",
            _by("reason", _with_zeros(r.outbox_dropped, OUTBOX_DROP_REASONS)),
        ),
        gauge(
            "edgecore_hub_connected",
            "1 while the link to the hub is live, else 0.",
            int(r.hub_connected),
        ),
        counter(
            "edgecore_hub_connect_attempts_total",
            "Connections to the hub tried, those that failed included.",
            r.hub_attempts,
        ),
        counter(
            "edgecore_hub_reconnects_total",
            "Times the hub link went live again after it was lost.",
            r.hub_reconnects,
        ),
    ]
    if r.mqtt_connected is not None:
        out += [
            gauge(
                "edgecore_mqtt_connected",
                "1 while edgecore is connected to the MQTT broker.",
                int(r.mqtt_connected),
            ),
            counter(
                "edgecore_mqtt_messages_received_total",
                "MQTT messages received from mappers.",
                r.mqtt_received,
            ),
            counter(
                "edgecore_mqtt_messages_published_total",
                "MQTT messages published to mappers (replies and deltas).",
                r.mqtt_published,
            ),
            counter(
                "edgecore_mqtt_dropped_total",
                "MQTT messages not stored or not sent, by reason.",
                _by("reason", _with_zeros(r.mqtt_dropped, MQTT_DROP_REASONS)),
            ),
            counter(
                "edgecore_mqtt_unstored_total",
                "Mapper messages edge.db could not store (a full or failing disk), by kind.",
                _by("kind", _with_zeros(r.mqtt_unstored, UNSTORED_KINDS)),
            ),
            counter(
                "edgecore_twin_reported_updates_total",
                "Twin updates with reported values from mappers, stored for the hub.",
                r.twin_reports,
            ),
            counter(
                "edgecore_twin_deltas_sent_total",
                "Desired-value deltas (twin/update/delta) published to mappers.",
                r.twin_deltas,
            ),
        ]
        if r.broker_dropped is not None:
            out.append(
                counter(
                    "edgecore_mqtt_broker_dropped_total",
                    "Messages the MQTT broker says it dropped since it started.",
                    r.broker_dropped,
                )
            )
    out.append(
        histogram(
            "edgecore_store_commit_duration_seconds",
            "Time of one edge.db COMMIT of a transaction that wrote.",
            r.commits,
        )
    )
    if r.rss_bytes is not None:
        out.append(
            gauge("process_resident_memory_bytes", "Resident memory of edgecore.", r.rss_bytes)
        )
    return out


def _by(label: str, values: Mapping[str, int]) -> dict[Labels, float]:
    return {((label, key),): value for key, value in sorted(values.items())}


def _with_zeros(counts: Mapping[str, int], known: Iterable[str]) -> dict[str, int]:
    return {**dict.fromkeys(known, 0), **counts}


class EdgeMetrics:
    """Reads edgecore's parts when scraped (on the event loop's thread)."""

    def __init__(
        self,
        store: EdgeStore,
        link: HubLink,
        twins: TwinService,
        bus: EventBus | None,
        rss: Callable[[], int | None] | None = None,
    ) -> None:
        self.store, self.link, self.twins, self.bus = store, link, twins, bus
        self.commits = Histogram(COMMIT_BUCKETS)
        self._rss = rss or resident_bytes
        store.observe_commits(self.commits.observe)

    def readings(self) -> Readings:
        # Dicts counted on the store's thread are copied in one step (dict.copy()).
        store, link, twins, bus = self.store, self.link, self.twins, self.bus
        common = Readings(
            outbox=store.outbox_kinds.copy(),
            outbox_quota_bytes=store.limits.quota_bytes,
            outbox_dropped=store.outbox_drops.counts.copy(),
            hub_connected=link.connected.is_set(),
            hub_attempts=link.attempts,
            hub_reconnects=max(0, link.sessions - 1),
            twin_reports=twins.reported_updates,
            commits=self.commits.snapshot(),
            rss_bytes=self._rss(),
        )
        if bus is None:
            return common
        return dataclasses.replace(
            common,
            mqtt_connected=bus.connected.is_set(),
            mqtt_received=bus.received,
            mqtt_published=bus.published,
            mqtt_dropped={**bus.refused.counts.copy(), **twins.unstored.counts.copy()},
            mqtt_unstored=twins.unstored_kinds.copy(),
            broker_dropped=bus.broker_dropped,
            twin_deltas=bus.deltas_sent,
        )

    def render(self) -> bytes:
        return render(families(self.readings()))


def resident_bytes() -> int | None:
    """This process's RSS from /proc (None elsewhere)."""
    import os

    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
