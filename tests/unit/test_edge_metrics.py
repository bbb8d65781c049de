"""edgecore's metrics: the text format written by hand (edgecore/metrics.py), the answers of
its HTTP endpoint (edgecore/metricserver.py), the store's counts they read, and the
listen setting."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgecore.config import EdgeConfig
from edgecore.metrics import (
    COMMIT_BUCKETS,
    CONTENT_TYPE,
    Histogram,
    Readings,
    counter,
    families,
    gauge,
    histogram,
    render,
)
from edgecore.metricserver import answer
from edgecore.store import ROW_BYTES, EdgeStore
from edgeward.addresses import parse_listen
from edgeward.configfile import build
from edgeward.errors import ConfigError


def parsed(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as Prometheus' own parser reads it."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }


# -- the text format ------------------------------------------------------------------


def test_label_values_and_help_are_escaped() -> None:
    """A backslash, a double quote and a newline in a label value, and a backslash and a
    newline in a help text, are escaped so the line stays one sample a parser reads back."""
    value = 'a\\b"c\nd'
    body = render([counter("x_total", "help with \\ and\nnewline", {(("k", value),): 3})])
    assert body.decode().splitlines() == [
        "# HELP x_total help with \\\\ and\\nnewline",
        "# TYPE x_total counter",
        'x_total{k="a\\\\b\\"c\\nd"} 3',
    ]
    assert parsed(body) == {("x_total", (("k", value),)): 3}


def test_histogram_buckets_are_cumulative_and_end_with_inf() -> None:
    """le is inclusive; each bucket counts every smaller one; +Inf equals _count."""
    h = Histogram((0.5, 0.1, 1.0))  # any order: bounds are sorted
    for value in (0.05, 0.1, 0.3, 1.0, 7.0):
        h.observe(value)
    lines = render([histogram("t_seconds", "h", h.snapshot())]).decode().splitlines()
    assert lines[2:] == [
        't_seconds_bucket{le="0.1"} 2',
        't_seconds_bucket{le="0.5"} 3',
        't_seconds_bucket{le="1.0"} 4',
        't_seconds_bucket{le="+Inf"} 5',
        f"t_seconds_sum {0.05 + 0.1 + 0.3 + 1.0 + 7.0!r}",
        "t_seconds_count 5",
    ]
    samples = parsed(render([histogram("t_seconds", "h", h.snapshot())]))
    assert samples[("t_seconds_bucket", (("le", "+Inf"),))] == samples[("t_seconds_count", ())]


def test_numbers_are_written_as_prometheus_reads_them() -> None:
    body = render(
        [
            gauge("g", "g", {(("v", "int"),): 7, (("v", "float"),): 0.25}),
            gauge("h", "h", {(("v", "inf"),): math.inf, (("v", "-inf"),): -math.inf}),
            gauge("n", "n", math.nan),
        ]
    )
    text = body.decode()
    assert 'g{v="int"} 7\n' in text and 'g{v="float"} 0.25\n' in text
    assert 'h{v="inf"} +Inf\n' in text and 'h{v="-inf"} -Inf\n' in text and "n NaN\n" in text
    assert text.endswith("\n")
    assert math.isnan(parsed(body)[("n", ())])


def test_edgecore_families_parse_and_keep_their_labels_bounded() -> None:
    """Known kinds and reasons are exported at 0 (rate() sees their first change); a topic
    outside the known kinds counts as ``other``; without MQTT no MQTT metric is exported."""
    h = Histogram(COMMIT_BUCKETS)
    h.observe(0.003)
    readings = Readings(
        outbox={"twin/reported": (3, 300), "weird/topic": (1, 10), "odd": (2, 20)},
        outbox_quota_bytes=1000,
        outbox_dropped={"quota": 2},
        hub_connected=True,
        hub_attempts=3,
        hub_reconnects=1,
        mqtt_connected=False,
        mqtt_received=5,
        mqtt_published=4,
        mqtt_dropped={"overload": 9},
        mqtt_unstored={"uploads": 1},
        broker_dropped=12,
        twin_reports=2,
        twin_deltas=1,
        commits=h.snapshot(),
        rss_bytes=30_000_000,
    )
    s = parsed(render(families(readings)))
    assert s[("edgecore_outbox_rows", (("kind", "twin/reported"),))] == 3
    assert s[("edgecore_outbox_rows", (("kind", "upload"),))] == 0
    assert s[("edgecore_outbox_rows", (("kind", "other"),))] == 3
    assert s[("edgecore_outbox_bytes", (("kind", "other"),))] == 30
    assert s[("edgecore_outbox_dropped_total", (("reason", "quota"),))] == 2
    assert s[("edgecore_outbox_dropped_total", (("reason", "expired"),))] == 0
    assert s[("edgecore_hub_connected", ())] == 1
    assert s[("edgecore_hub_reconnects_total", ())] == 1
    assert s[("edgecore_mqtt_connected", ())] == 0
    assert s[("edgecore_mqtt_dropped_total", (("reason", "overload"),))] == 9
    assert s[("edgecore_mqtt_dropped_total", (("reason", "storage"),))] == 0
    assert s[("edgecore_mqtt_unstored_total", (("kind", "updates"),))] == 0
    assert s[("edgecore_mqtt_broker_dropped_total", ())] == 12
    assert s[("edgecore_store_commit_duration_seconds_bucket", (("le", "0.005"),))] == 1
    assert s[("edgecore_store_commit_duration_seconds_bucket", (("le", "0.0025"),))] == 0
    assert s[("process_resident_memory_bytes", ())] == 30_000_000

    alone = parsed(render(families(Readings())))
    assert not [name for name, _ in alone if "mqtt" in name or "twin" in name]
    assert alone[("edgecore_hub_connected", ())] == 0


# -- the endpoint's answers ----------------------------------------------------------------


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x", 200),
        (b"GET /metrics?name[]=x HTTP/1.0", 200),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 5", 405),
        (b"HEAD /metrics HTTP/1.1", 405),
        (b"GET / HTTP/1.1", 404),
        (b"GET /metrics/ HTTP/1.1", 404),
        (b"GET http://127.0.0.1/metrics HTTP/1.1", 404),
        (b"GET /metrics", 400),
        (b"GET /metrics SPDY/3", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc", 400),  # a TLS client hello
        (b"", 400),
    ],
)
def test_only_get_metrics_is_answered_with_them(head: bytes, status: int) -> None:
    rendered: list[bool] = []

    def render() -> bytes:
        rendered.append(True)
        return b"edgecore_x 1\n"

    response = answer(head, render)
    assert status_of(response) == status
    assert b"\r\nConnection: close\r\n" in response
    assert rendered == ([True] if status == 200 else [])  # read only for a scrape
    if status == 200:
        assert f"Content-Type: {CONTENT_TYPE}\r\n".encode() in response
        assert response.endswith(
            b"\r\nContent-Length: 13\r\nConnection: close\r\n\r\nedgecore_x 1\n"
        )
    if status == 405:
        assert b"\r\nAllow: GET\r\n" in response


# -- what the store counts for them ---------------------------------------------------------


def test_quarantined_rows_leave_the_counts_by_kind_even_with_a_damaged_topic(
    tmp_path: Path,
) -> None:
    """Rows counted at open (an older edgecore's, one with a topic that is not UTF-8) and
    deleted unsent as they are read leave outbox_kinds equal to the table."""
    path = tmp_path / "edge.db"
    EdgeStore(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    for topic, body in [(b"\xff topic", '{"x":1}'), ("upload", "not json"), ("upload", "{}")]:
        db.execute(
            "INSERT INTO outbox (topic, key, body, created) VALUES (?, NULL, ?, 0)", (topic, body)
        )
    db.close()
    store = EdgeStore(path)
    assert store.outbox_kinds["\ufffd topic"][0] == 1 and store.outbox_kinds["upload"][0] == 2
    store.pending(0)
    assert store.outbox_drops.counts == {"quarantined": 2}
    left = {k: v for k, v in store.outbox_kinds.items() if v[0]}
    size = store.db.execute(f"SELECT {ROW_BYTES} FROM outbox").fetchone()[0]
    assert left == {"upload": (1, size)}
    assert store.outbox_kinds["\ufffd topic"] == (0, 0)


def test_commits_are_timed_only_when_asked_and_only_when_they_wrote(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "edge.db")
    store.claim("edge-1")
    seen: list[float] = []
    store.report_event("upload", {"i": 0})  # before anyone asked: not timed
    store.observe_commits(seen.append)
    store.report_event("upload", {"i": 1})
    store.health()  # the watchdog's read under the write lock: nothing to sync
    store.cache_digest()
    with store.transaction():
        store.report_event("upload", {"i": 2})
        store.report_state("twin/reported", "twin/a", {"i": 3})  # one transaction, one commit
    assert len(seen) == 2 and all(0 <= s < 60 for s in seen)


# -- the setting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9101", ("127.0.0.1", 9101)),
        ("127.0.0.1:9101", ("127.0.0.1", 9101)),
        ("localhost:9101", ("127.0.0.1", 9101)),
        ("[::1]:9101", ("::1", 9101)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("gateway.local:9101", ValueError),
        ("127.0.0.1", ValueError),
        ("127.0.0.1:", ValueError),
        ("127.0.0.1:99999", ValueError),
        ("::1:9101", ValueError),
        ("[::1]", ValueError),
        ("[::1]9101", ValueError),
        ("nine", ValueError),
        ("", ValueError),
    ],
)
def test_listen_addresses(text: str, expected: object) -> None:
    if expected is ValueError:
        with pytest.raises(ValueError):
            parse_listen(text)
    else:
        assert parse_listen(text) == expected


def test_metrics_are_off_by_default_and_stay_on_loopback_unless_allowed() -> None:
    assert EdgeConfig().metrics.address is None
    on = build(EdgeConfig, {"metrics": {"listen": "9101"}})
    assert on.metrics.address == ("127.0.0.1", 9101)
    with pytest.raises(ConfigError) as refused:
        build(EdgeConfig, {"metrics": {"listen": "0.0.0.0:9101"}})
    assert refused.value.problems == [
        'metrics.listen: "0.0.0.0:9101" is not a loopback address, and the metrics are served '
        "without TLS or token: set metrics.allow_remote to serve them beyond this machine"
    ]
    remote = build(EdgeConfig, {"metrics": {"listen": "0.0.0.0:9101", "allow_remote": True}})
    assert remote.metrics.address == ("0.0.0.0", 9101)
    with pytest.raises(ConfigError) as bad:
        build(EdgeConfig, {"metrics": {"listen": "metrics.example:9101"}})
    assert len(bad.value.problems) == 1
    assert bad.value.problems[0].startswith("metrics.listen: 'metrics.example' in ")


def test_an_edge_with_metrics_on_loads_no_metrics_library() -> None:
    """The endpoint is the standard library's asyncio and a page of our own:
    prometheus_client (2.3 MB of RSS), http.server and wsgiref stay unloaded."""
    code = """
        import sys
        from edgecore import main

        main.DEFAULT_CONFIG = "/nonexistent/edgecore.yaml"
        args = ["--node", "e", "--hub", "ws://h:1", "--insecure", "--metrics-listen", "9101"]
        assert main.load_config(main.parse_args(args)).metrics.address == ("127.0.0.1", 9101)
        main.defer_imports(*main.DEFERRED_IMPORTS)
        import edgecore.eventbus, edgecore.hublink, edgecore.nodestatus, edgecore.twins
        import edgecore.metrics, edgecore.metricserver

        loaded = [m for m in ("prometheus_client", "http.server", "wsgiref") if m in sys.modules]
        assert not loaded, loaded
        for name in main.DEFERRED_IMPORTS:
            assert "__getattr__" in vars(sys.modules[name]), f"{name} was loaded"
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
