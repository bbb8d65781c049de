"""Scenario 11: a fleet over three hub replicas on one PostgreSQL.

A throwaway PostgreSQL (``edgeward.pgcluster``, with ``pg_stat_statements``
loaded to count statements; fsync off, as the tests run it) and cloudhub
replicas on it, secure as shipped (HTTPS with tokens, mutual TLS on the edge
port; one ``cloudhub init``, its ``pki/`` copied to the others, as docs/ha.md
says). First one replica alone: REST write throughput (PUT desired values,
8 clients), then 5,000 nodes on it (30 s heartbeats; half a replica's share,
to keep the run short): database statements per node per minute at idle, CPU
per 1,000 nodes, RSS per node, and a kill -9 and restart with the time until
every node is back. Then three replicas: write throughput again
(clients spread over the three APIs), then the whole fleet (30,000 nodes),
spread over the three: nodes per replica, statements per node per minute,
transactions and WAL, each replica's RSS and CPU and PostgreSQL's CPU, at
idle; then kill -9 of the leading replica: time until its nodes are all
registered on the others (``node_leases.owner``) and connected, and how many
nodes went NotReady (Ready transitions in the change log). Every figure has
its baseline from the single-replica phase of the same run, or the even share.

The simulated nodes reach the replicas directly, not through HAProxy
(``edgeward.balancer``): HAProxy holds two file descriptors per connection,
60,000 for this fleet, and this machine's hard limit is 20,000 per process,
so one HAProxy could carry at most ~9,900 nodes. Each node is given the three
replicas' edge URLs in one of their six orders (``FleetConfig.spread``): a
third start on each, and the nodes of a dead replica fall back half to each
of the others, as ``leastconn`` would spread them. What a balancer adds to a
failover (its health check marking the replica down, ~2 s) is not measured.
Cross-replica latency is scenario 10 (``ha_notify``). Needs PostgreSQL's
server binaries.

The simulator shares the machine with what it measures and needs about as
much CPU as the three replicas together. Its processes run at normal
priority: at niceness 5 (tried 2026-12-01) the replicas' handshakes starved
it during the failover until it could not send its hellos within the hub's
10 s, which measured the simulator, not the hub.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.core import Figure, Options, Skipped
from bench.fleet import Fleet, FleetConfig
from bench.hub_scale import not_ready_in
from bench.procs import NS, Api, _PyModule, child_env, raise_nofile, rss, tls_on, workdir
from edgeward.pgcluster import PostgresCluster, _pg_bin
from tests.support.procs import Hub

NAME = "ha-scale"
REPLICAS = 3
HEARTBEAT = 30.0
#: Set to run with a fleet of another size (an experiment; the figures' targets are for
#: the default 30,000).
NODES_ENV = "EDGEWARD_BENCH_HA_NODES"
#: REST clients writing at once, in the throughput phases
WRITERS = 8
MIB = 2**20
KIB = 1024


class _Replica(Hub, _PyModule):
    """A cloudhub on the shared database, run from this checkout (``python -m``)."""

    def __init__(self, data_dir: Path, database: str, secure: bool) -> None:
        super().__init__(data_dir, "--database", database, "--log-level", "warning")
        if secure:
            self.secure = True
            self.token = yaml.safe_load((data_dir / "admin.yaml").read_text())["token"]

    def api_client(self) -> Api:
        return Api(self.api, self.token, self.ca if self.secure else None)

    def health(self) -> dict[str, Any]:
        api = self.api_client()
        try:
            return api.ok("GET", "/healthz")  # type: ignore[no-any-return]
        finally:
            api.close()


def _replicas(root: Path, database: str, secure: bool) -> list[_Replica]:
    """Replicas r0…r2 (not started): ``cloudhub init`` once, its PKI copied to the others."""
    hubs = []
    for i in range(REPLICAS):
        data_dir = root / f"r{i}"
        if secure and i == 0:
            subprocess.run(
                [sys.executable, "-m", "cloudhub.main", "init", "--data-dir", str(data_dir),
                 "--database", database, "--ip", "127.0.0.1"],
                check=True, capture_output=True, timeout=120, env=child_env(),
            )  # fmt: skip
        elif secure:
            shutil.copytree(root / "r0" / "pki", data_dir / "pki")
            shutil.copy2(root / "r0" / "admin.yaml", data_dir / "admin.yaml")
        else:
            data_dir.mkdir(parents=True)
        hubs.append(_Replica(data_dir, database, secure))
    return hubs


class _Postgres:
    """The throwaway cluster, its statement counters and its processes."""

    def __init__(self) -> None:
        self.cluster = PostgresCluster()
        self.statements = False  # pg_stat_statements loaded
        self.url = ""

    def start(self) -> None:
        import psycopg

        try:
            self.cluster.start()
        except RuntimeError as exc:  # no PostgreSQL server binaries here
            raise Skipped(str(exc)) from None
        try:
            with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            data = str(self.cluster.dir / "data")
            log = str(self.cluster.dir / "log")
            self.cluster._run(_pg_bin("pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60", "restart")
            self.url = self.cluster.create_database("bench")
            with psycopg.connect(self._dsn("bench"), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION pg_stat_statements")
            self.statements = True
        except (RuntimeError, psycopg.Error) as exc:
            print(f"   pg_stat_statements unavailable ({exc}); counting commits only",
                  file=sys.stderr)  # fmt: skip
            if not self.url:
                self.url = self.cluster.create_database("bench")
        self.conn = psycopg.connect(self._dsn("bench"), autocommit=True)

    def _dsn(self, db: str) -> str:
        return self.cluster.url(db).replace("postgresql+psycopg://", "postgresql://")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
        self.cluster.stop()

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, args or None).fetchall()  # type: ignore[arg-type]

    def pids(self) -> list[int]:
        postmaster = int((self.cluster.dir / "data" / "postmaster.pid").read_text().split()[0])
        proc = psutil.Process(postmaster)
        return [postmaster, *(c.pid for c in proc.children())]

    def reset(self) -> None:
        if self.statements:
            self.query("SELECT pg_stat_statements_reset()")

    def counters(self) -> dict[str, float]:
        """Statements since the last reset, commits, WAL position (bytes)."""
        self.query("SELECT pg_stat_clear_snapshot()")
        xact, wal = self.query(
            "SELECT xact_commit + xact_rollback, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') "
            "FROM pg_stat_database WHERE datname = current_database()"
        )[0]
        out = {"xact": float(xact), "wal": float(wal), "statements": float("nan")}
        if self.statements:
            out["statements"] = float(self.query(_STATEMENTS)[0][0] or 0)
        return out

    def top(self, n: int = 8) -> list[tuple[int, str]]:
        if not self.statements:
            return []
        rows = self.query(
            "SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) "
            "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) AND query NOT LIKE '%%pg_stat%%' "
            "ORDER BY calls DESC LIMIT %s",
            n,
        )
        return [(int(c), str(q)) for c, q in rows]

    def connections(self) -> dict[str, int]:
        rows = self.query(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1"
        )
        return {str(a): int(n) for a, n in rows}

    def owners(self) -> dict[str, int]:
        rows = self.query("SELECT owner, count(*) FROM node_leases GROUP BY owner")
        return {str(o): int(n) for o, n in rows}

    def went_not_ready(self, after: int, prefix: str) -> int:
        """Nodes named ``prefix…`` whose Ready condition left True in a change after
        revision ``after``."""
        rows = self.query(
            "SELECT name, body FROM changes WHERE kind = 'Node' AND revision > %s AND name LIKE %s",
            after,
            f"{prefix}%",
        )
        return not_ready_in(rows)

    def head(self) -> int:
        return int(self.query("SELECT head FROM revision")[0][0])


_STATEMENTS = (
    "SELECT sum(calls) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
    "WHERE datname = current_database()) AND query NOT LIKE '%pg_stat%'"
)


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


@dataclass(frozen=True)
class Idle:
    """What a window of idle (heartbeats and pings only) cost."""

    seconds: float
    nodes: int
    statements: float  # per node per minute
    xacts: float  # per node per minute
    wal: float  # bytes per node per minute
    hub_cpu: list[float]  # share of a core, per replica
    pg_cpu: float  # share of a core, all of PostgreSQL's processes
    hub_rss: list[int]
    top: list[tuple[int, str]]


def _idle(pg: _Postgres, hubs: list[_Replica], nodes: int, seconds: float) -> Idle:
    pids = [h.pid for h in hubs]
    pg_pids = pg.pids()
    pg.reset()
    before, cpu0 = pg.counters(), _cpu_seconds(pids + pg_pids)
    began = time.monotonic()
    time.sleep(seconds)
    after, cpu1 = pg.counters(), _cpu_seconds(pids + pg_pids)
    took = time.monotonic() - began
    minutes = took / 60

    def share(pid: int) -> float:
        return (cpu1.get(pid, 0.0) - cpu0.get(pid, cpu1.get(pid, 0.0))) / took

    per = max(1, nodes) * minutes
    return Idle(
        seconds=took,
        nodes=nodes,
        statements=after["statements"] / per,  # reset at the start
        xacts=(after["xact"] - before["xact"]) / per,
        wal=(after["wal"] - before["wal"]) / per,
        hub_cpu=[share(p) for p in pids],
        pg_cpu=sum(share(p) for p in pg_pids),
        hub_rss=[rss(p) for p in pids],
        top=pg.top(),
    )


def _write_rate(hubs: list[_Replica], seconds: float) -> tuple[float, int]:
    """PUTs a second: WRITERS clients, each setting a desired value on its own Device
    through replica ``i % len(hubs)``, for ``seconds``. Returns (rate, failures)."""
    apis = [h.api_client() for h in hubs]
    tag = f"w{len(hubs)}"
    bodies = [_device(f"{tag}-{i}", "0") for i in range(WRITERS)]
    for body in bodies:
        apis[0].ok("POST", f"{NS}/devices", body)
    counts = [0] * WRITERS
    failures = [0] * WRITERS
    start = threading.Barrier(WRITERS + 1)
    stop_at = [0.0]

    def writer(i: int) -> None:
        api, body = apis[i % len(apis)], bodies[i]
        path = f"{NS}/devices/{body['metadata']['name']}"
        start.wait()
        n = 0
        while time.monotonic() < stop_at[0]:
            n += 1
            body["spec"]["properties"][0]["desired"]["value"] = str(n)
            try:
                status, _ = api.request("PUT", path, body)
            except OSError:
                status = 0
            if status == 200:
                counts[i] += 1
            else:
                failures[i] += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + seconds
    began = time.monotonic()
    start.wait()
    for t in threads:
        t.join()
    took = time.monotonic() - began
    for api in apis:
        api.close()
    return sum(counts) / took, sum(failures)


def _device(name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name},
        "spec": {
            "deviceModelRef": {"name": "ha-scale"},
            "properties": [{"name": "temperature", "desired": {"value": value}}],
        },
    }


def _enroll(hub: _Replica, pg: _Postgres, names: list[str], directory: Path) -> None:
    """Node certificates signed by the replicas' CA and recorded in the shared database."""
    from cloudhub.pki import Authority, pki_paths
    from edgeward import certs

    authority = Authority(pki_paths(hub.data_dir))
    directory.mkdir(parents=True, exist_ok=True)
    key = certs.new_private_key()
    rows = []
    for name in names:
        signed = authority.sign_node(certs.node_csr(key, name), name, 30)
        rows.append((signed.serial, name, signed.not_after))
        (directory / f"{name}.crt").write_bytes(signed.pem)
    certs.write_private(directory / "node.key", certs.private_key_pem(key))
    (directory / "ca.crt").write_bytes(authority.ca_pem)
    with pg.conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO node_certs (serial, node, not_after, revoked) VALUES (%s,%s,%s,false)",
            rows,
        )


@contextlib.contextmanager
def _fleet(cfg: FleetConfig) -> Iterator[Fleet]:
    fleet = Fleet(cfg)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


def _log(msg: str) -> None:
    print(f"   {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


_SOLO_READY = "SELECT count(*) FROM node_leases WHERE node LIKE 'solo-%' AND ready"


def _wait(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> float | None:
    """Monotonic time when ``predicate`` first held, None after ``timeout``. Polled every
    ``interval``: each poll of the fleet's counters pickles its latency samples."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    return None


_progress = [0.0]


def _connected(fleet: Fleet) -> int:
    """Nodes connected now; logged every 30 s while waiting."""
    n = int(fleet.stats()["connected"])
    if time.monotonic() - _progress[0] > 30:
        _progress[0] = time.monotonic()
        _log(f"{n} connected")
    return n


def _sessions(hubs: list[_Replica]) -> list[int]:
    return [int(h.health()["edge"]["sessions"]) for h in hubs if h.running]


def run(opts: Options) -> list[Figure]:
    total = int(os.environ.get(NODES_ENV, 0)) or opts.size(30_000, 900)
    # the single-replica baselines: half a share, for time
    solo_nodes = min(opts.size(5_000, 300), total // 6)
    processes = opts.size(8, 3)
    connect_window = opts.seconds(900, 120)
    settle = opts.seconds(30, 5)
    window = opts.seconds(60, 20)
    empty_window = opts.seconds(30, 10)
    writes = opts.seconds(20, 5)
    raise_nofile(1 << 20)  # the replicas inherit it: up to 15,000 nodes each after a failover
    secure = tls_on()
    with workdir(NAME) as tmp, ExitStack() as cleanup:
        pg = _Postgres()
        pg.start()
        cleanup.callback(pg.stop)
        hubs = _replicas(tmp, pg.url, secure)
        for hub in hubs:
            cleanup.callback(hub.kill)
        solo = hubs[0]
        solo.start()
        tls_dir = tmp / "fleet-pki"
        solo_cfg = FleetConfig(hub=(solo.edge,), nodes=solo_nodes, processes=max(1, processes // 3),
                               heartbeat=HEARTBEAT, prefix="solo",
                               tls_dir=str(tls_dir) if secure else "")  # fmt: skip
        ha_cfg = replace(solo_cfg, nodes=total, processes=processes, prefix="ha", spread=True)
        if secure:
            t0 = time.monotonic()
            _enroll(solo, pg, solo_cfg.node_names() + ha_cfg.node_names(), tls_dir)
            _log(f"enrolled {solo_nodes + total} nodes in {time.monotonic() - t0:.0f} s")
        solo.api_client().ok("POST", f"{NS}/devicemodels", _model())

        # -- one replica alone: the baselines --------------------------------------------
        rate_1, failed_1 = _write_rate([solo], writes)
        _log(f"1 replica: {rate_1:.0f} PUT/s ({failed_1} failed)")
        empty_1 = _idle(pg, [solo], 0, empty_window)
        rss_empty_1 = rss(solo.pid)
        with _fleet(solo_cfg) as fleet:
            _wait(lambda: _connected(fleet) >= solo_nodes, connect_window)
            time.sleep(settle)
            idle_1 = _idle(pg, [solo], fleet.stats()["connected"], window)
            _log(f"1 replica, {idle_1.nodes} nodes: {idle_1.statements:.2f} statements/node/min, "
                 f"CPU {idle_1.hub_cpu[0]:.0%}, RSS {idle_1.hub_rss[0] / MIB:.0f} MiB")  # fmt: skip
            for calls, query in idle_1.top:
                _log(f"  {calls:7d}  {query}")
            head = pg.head()
            killed = time.monotonic()
            solo.restart(kill=True)
            back = _wait(lambda: fleet.welcomed_since(killed) >= solo_nodes, connect_window)
            restart = (back or float("nan")) - killed
            time.sleep(opts.seconds(5, 1))
            restart_not_ready = pg.went_not_ready(head, "solo-")
            _log(f"1 replica: all {solo_nodes} back {restart:.1f} s after kill -9 and restart, "
                 f"{restart_not_ready} NotReady")  # fmt: skip

        # -- three replicas --------------------------------------------------------------
        for hub in hubs[1:]:
            hub.start()
        # the stopped nodes go NotReady one grace period on: let that pass before measuring
        _wait(lambda: not pg.query(_SOLO_READY)[0][0], opts.seconds(180, 120))
        rate_3, failed_3 = _write_rate(hubs, writes)
        _log(f"3 replicas: {rate_3:.0f} PUT/s ({failed_3} failed)")
        empty_3 = _idle(pg, hubs, 0, empty_window)
        rss_empty_3 = [rss(h.pid) for h in hubs]
        ha_cfg = replace(ha_cfg, hub=tuple(h.edge for h in hubs))
        with _fleet(ha_cfg) as fleet:
            began = time.monotonic()
            head = pg.head()
            done = _wait(lambda: _connected(fleet) >= total, connect_window)
            connect_time = (done or float("nan")) - began
            connected = fleet.stats()["connected"]
            _log(f"{connected} of {total} connected in {connect_time:.0f} s")
            time.sleep(settle)
            connect_not_ready = pg.went_not_ready(head, "ha-")
            per_replica = _sessions(hubs)
            pg_conns = pg.connections()
            idle_3 = _idle(pg, hubs, fleet.stats()["connected"], window)
            _log(f"3 replicas, {connected} nodes {per_replica}: {idle_3.statements:.2f} "
                 f"statements/node/min, CPU {[f'{c:.0%}' for c in idle_3.hub_cpu]}, "
                 f"PG {idle_3.pg_cpu:.0%}, RSS {[r // MIB for r in idle_3.hub_rss]} MiB, "
                 f"PG connections {pg_conns}")  # fmt: skip
            for calls, query in idle_3.top:
                _log(f"  {calls:7d}  {query}")
            leaders = [h for h in hubs if h.health()["replica"]["leader"]]
            victim = leaders[0] if leaders else hubs[0]
            victim_id = victim.health()["replica"]["id"]
            moved = pg.owners().get(victim_id, 0)
            head = pg.head()
            killed = time.monotonic()
            victim.kill()

            def all_back() -> bool:
                if fleet.stats()["connected"] < connected:
                    return False
                return pg.owners().get(victim_id, 0) == 0

            back = _wait(all_back, connect_window)
            failover = (back or float("nan")) - killed
            after = [h for h in hubs if h.running]
            after_sessions = _sessions(after)
            _log(f"failover: {moved} nodes of {victim_id} back on the others in "
                 f"{failover:.1f} s; sessions now {after_sessions}")  # fmt: skip
            time.sleep(opts.seconds(45, 10))  # a grace period: silence would show now
            failover_not_ready = pg.went_not_ready(head, "ha-")
            after_rss = [rss(h.pid) for h in after]
            final = fleet.stats()
    rss_per_node = [
        (r - e) / max(1, n) / KIB
        for r, e, n in zip(idle_3.hub_rss, rss_empty_3, per_replica, strict=True)
    ]
    rss_per_node_1 = (idle_1.hub_rss[0] - rss_empty_1) / max(1, idle_1.nodes) / KIB
    cpu_per_k = [c * 100 / (n / 1000) for c, n in zip(idle_3.hub_cpu, per_replica, strict=True)]
    empty_1_min = empty_1.statements  # nodes=0 counts per minute (divided by 1 node)
    empty_3_min = empty_3.statements
    machine = "2 cores shared; fleet, replicas and PostgreSQL on one machine"
    transport = "TLS, mutual on the edge port" if secure else "plain ws:// and http://"
    common: dict[str, Any] = {"scenario": NAME}
    even = total / REPLICAS
    detail = {
        "per_replica_sessions": per_replica,
        "pg_connections": pg_conns,
        "rss_mib": [r / MIB for r in idle_3.hub_rss],
        "rss_empty_mib": [r / MIB for r in rss_empty_3],
        "rss_after_failover_mib": [r / MIB for r in after_rss],
        "hub_cpu": idle_3.hub_cpu,
        "pg_cpu": idle_3.pg_cpu,
        "statements_per_min_no_fleet": {"1": empty_1_min, "3": empty_3_min},
        "xacts_per_node_min": {"1": idle_1.xacts, "3": idle_3.xacts},
        "wal_bytes_per_node_min": {"1": idle_1.wal, "3": idle_3.wal},
        "top_statements": idle_3.top,
        "failed_connects": final.get("failed_connects", 0),
    }
    _log(json.dumps(detail))
    count_how = "pg_stat_statements calls" if pg.statements else "not counted (no extension)"
    return [
        Figure(name="nodes per replica, fewest", value=float(min(per_replica)), unit="nodes",
               better="higher", baseline=even, baseline_name="even share",
               target_ratio=0.9, note=f"sessions per replica {per_replica}; {connected:,} of "
               f"{total:,} connected in {connect_time:.0f} s, directly (no balancer); "
               f"{transport}", **common),
        Figure(name="nodes per replica, most", value=float(max(per_replica)), unit="nodes",
               baseline=even, baseline_name="even share", target_ratio=1.1, **common),
        Figure(name="DB statements per node per minute, idle", value=idle_3.statements,
               unit="stmt/node/min", baseline=idle_1.statements,
               baseline_name=f"1 replica, {idle_1.nodes:,} nodes",
               note=f"{count_how} over {idle_3.seconds:.0f} s, {HEARTBEAT:g} s heartbeats; "
               f"with no fleet: {empty_1_min:.0f}/min (1 replica), {empty_3_min:.0f}/min "
               f"(3); transactions/node/min {idle_3.xacts:.2f} (1 replica "
               f"{idle_1.xacts:.2f}); WAL {idle_3.wal:.0f} B/node/min", **common),
        Figure(name="replica RSS per connected node", value=max(rss_per_node), unit="KiB",
               baseline=rss_per_node_1, baseline_name="1 replica",
               note=f"each replica: {[f'{r:.1f}' for r in rss_per_node]} KiB/node; RSS "
               f"{[r // MIB for r in idle_3.hub_rss]} MiB, with no fleet "
               f"{[r // MIB for r in rss_empty_3]} MiB", **common),
        Figure(name="replica CPU idle per 1,000 nodes, busiest", value=max(cpu_per_k),
               unit="% of a core", baseline=idle_1.hub_cpu[0] * 100 / (idle_1.nodes / 1000),
               baseline_name=f"1 replica, {idle_1.nodes:,} nodes",
               note=f"each: {[round(c * 100, 1) for c in idle_3.hub_cpu]}%; PostgreSQL "
               f"{idle_3.pg_cpu * 100:.1f}% (1 replica: {idle_1.pg_cpu * 100:.1f}%); {machine}",
               **common),
        Figure(name="failover: all of a killed replica's nodes back", value=failover, unit="s",
               baseline=restart, baseline_name=f"1 replica kill -9 + restart, {solo_nodes:,} nodes",
               note=f"kill -9 of the leader holding {moved:,} nodes, until none is registered "
               "to it and the whole fleet is connected again (nan: not within "
               f"{connect_window:g} s); sessions after {after_sessions}", **common),
        Figure(name="failover: nodes that went NotReady", value=float(failover_not_ready),
               unit="nodes", target=0.0, baseline=float(restart_not_ready),
               baseline_name="1 replica restart",
               note=f"{connect_not_ready} during the initial connect", **common),
        Figure(name=f"write throughput, 3 replicas, {WRITERS} clients", value=rate_3,
               unit="PUT/s", better="higher", baseline=rate_1, baseline_name="1 replica",
               note=f"PUT of a desired value, each client its own Device, clients spread over "
               f"the replicas' APIs, {writes:g} s each, no fleet connected; failures "
               f"{failed_1} / {failed_3}; {machine}", **common),
    ]  # fmt: skip


def _model() -> dict[str, Any]:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": "ha-scale"},
        "spec": {"properties": [{"name": "temperature", "type": "FLOAT",
                                 "accessMode": "ReadWrite"}]},
    }  # fmt: skip
