"""Scenario 10: change notification between hub replicas.

Two cloudhub replicas, A and B, on one PostgreSQL database (a throwaway
cluster started for the run, as the tests start one), both with
--change-poll-interval 3600 so that only LISTEN/NOTIFY can carry a change
across. A watch on B and a watch on A follow the Device collection; writes
(one PUT at a time, a few ms apart) go through A. Figure: per write, the time
from A acknowledging it to B's watch receiving its event (p50/p99). Baseline:
the same write seen by the watch on A, which its own commit wakes directly.
The replicas run without TLS: what is measured is the hub-to-hub path, not
the client's transport. Needs PostgreSQL's server binaries (initdb, pg_ctl).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.baselines import latency_ms
from bench.core import Figure, Options, Skipped
from bench.procs import NS, Api, _PyModule, workdir
from tests.support.postgres import PostgresCluster
from tests.support.procs import Hub

NAME = "ha_notify"
#: The issue's target for a write on one replica reaching a watch on another (p99, ms).
TARGET_P99_MS = 50.0
#: Seconds between writes, so each is its own commit and its own notification.
PACE = 0.01


class _Replica(Hub, _PyModule):
    """A plain-HTTP cloudhub on the shared database, run from this checkout."""

    def __init__(self, data_dir: Path, database: str) -> None:
        super().__init__(
            data_dir,
            "--database",
            database,
            "--change-poll-interval",
            "3600",
            "--log-level",
            "warning",
        )


class _TimedWatch:
    """A watch on the Device collection; records when each resourceVersion arrived."""

    def __init__(self, hub: Hub, path: str) -> None:
        host, port = hub.api.rsplit("//", 1)[1].rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.conn.request("GET", path)
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise RuntimeError(f"watch {path}: {self.resp.status}")
        self.seen: dict[int, float] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.resp:
                now = time.monotonic()
                event = json.loads(line)
                self.seen[int(event["object"]["metadata"]["resourceVersion"])] = now
        except (OSError, ValueError, http.client.HTTPException):
            pass  # closed at the end of the run

    def close(self) -> None:
        self.conn.close()


def run(opts: Options) -> list[Figure]:
    writes = opts.size(1000, 100)
    with workdir(NAME) as tmp, ExitStack() as cleanup:
        cluster = PostgresCluster()
        try:
            cluster.start()
        except RuntimeError as exc:  # no PostgreSQL server binaries here
            raise Skipped(str(exc)) from None
        cleanup.callback(cluster.stop)
        url = cluster.create_database("bench")
        hubs = [_Replica(tmp / f"r{i}", url) for i in range(2)]
        for hub in hubs:
            (tmp / hub.data_dir.name).mkdir()
            cleanup.callback(hub.kill)
            hub.start()
        a, b = hubs
        api = Api(a.api)
        cleanup.callback(api.close)
        path = f"{NS}/devices"
        body: dict[str, Any] = {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": "probe"},
            "spec": {"deviceModelRef": {"name": "m"}, "properties": []},
        }
        first = int(api.ok("POST", path, body)["metadata"]["resourceVersion"])
        watches = [_TimedWatch(h, f"{path}?watch=1&resourceVersion={first}") for h in (a, b)]
        for w in watches:
            cleanup.callback(w.close)
        acked: dict[int, float] = {}
        for i in range(writes):
            body["metadata"]["labels"] = {"n": str(i)}
            written = api.ok("PUT", f"{path}/probe", body)
            acked[int(written["metadata"]["resourceVersion"])] = time.monotonic()
            time.sleep(PACE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(set(acked) <= set(w.seen) for w in watches):
            time.sleep(0.05)
        same, cross = (
            [max(0.0, w.seen[rv] - t) for rv, t in acked.items() if rv in w.seen] for w in watches
        )
    missing = writes - len(cross)
    if missing:
        raise RuntimeError(f"{missing} of {writes} writes never reached the watch on B")
    common: dict[str, Any] = {"scenario": NAME, "baseline_name": "same replica"}
    return [
        Figure(name="write acked on A -> watch on B p50", value=latency_ms(cross, 50),
               unit="ms", baseline=latency_ms(same, 50),
               note=f"{writes} PUTs through A, {PACE * 1000:g} ms apart; poll every 3600 s",
               **common),
        Figure(name="write acked on A -> watch on B p99", value=latency_ms(cross, 99),
               unit="ms", baseline=latency_ms(same, 99), target=TARGET_P99_MS, **common),
    ]  # fmt: skip
