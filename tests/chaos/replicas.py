"""The chaos run against hub replicas (docs/ha.md): the same load, convergence and audit as
:mod:`tests.chaos.scenario`, with the one hub replaced by ``replicas`` cloudhubs on one
throwaway PostgreSQL behind HAProxy, as an HA deployment runs them.

The replicas are secure (TLS and tokens, one PKI copied to each; insecure on request):
the edges join through the balancer's API port and connect, each through its own fault
proxy, to the balancer's edge port; the load's REST writes go through the balancer's API
port. A write the API answered is one the audit expects kept; one that failed because its
replica died or stalled is not acknowledged, and may or may not have been kept (as
:meth:`Scenario._write` treats a write to a dead hub).

The faults, besides the edges' (a link blackholed, delayed, throttled, reset or dropped,
an edgecore killed): a random replica killed with SIGKILL and restarted on its ports; a
random replica stopped (SIGSTOP) for up to 12 s, longer than the 5 s grace period often
enough that the leader marks its nodes NotReady; every replica killed at once; and
``pg_terminate_backend`` on the replicas' pool connections, one replica's change
listener (``cloudhub-notify``) or the leader's lock connection (``cloudhub-leader``).

The audit adds, once the fleet has converged (and converging waits for them): every
edge's node is Ready on every replica's own API, has one owner in ``node_leases`` (a
running replica) and one session among all replicas, and exactly one replica says it
leads (``/healthz`` ``replica.leader``).
"""

from __future__ import annotations

import json
import signal
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from cloudhub.db import POOL_NAME
from cloudhub.nodes import is_ready
from edgeward.balancer import Balancer, Replica, start_balancer
from tests.chaos.scenario import HUB_ARGS, LINK_FAULTS, Scenario
from tests.support.faultproxy import FaultProxy
from tests.support.haproxy import Front
from tests.support.nodecerts import join
from tests.support.postgres import PostgresCluster
from tests.support.procs import Hub
from tests.support.replicas import replica_hubs

#: Replica faults are drawn twice as often as each of the edges' (and killing every
#: replica at once half as often), so a short run still stalls and kills replicas.
REPLICA_FAULTS = (
    *LINK_FAULTS,
    "kill-edge",
    "kill-replica",
    "kill-replica",
    "stop-replica",
    "stop-replica",
    "terminate-pool",
    "terminate-notify",
    "terminate-leader",
    "kill-replicas",
)
#: A replica's lead survives this long without confirming it (a stopped leader's lock
#: is gone after it, and another replica leads): shorter than most stops.
LEADER_TIMEOUT = "4"
#: The longest SIGSTOP of a replica: beyond the grace period and the leader timeout.
MAX_STOP = 12.0


class ReplicaScenario(Scenario):
    FAULTS = REPLICA_FAULTS

    def __init__(
        self,
        seed: int,
        faults: int,
        edges: int = 2,
        base: Path | None = None,
        disk_full: bool = False,
        replicas: int = 3,
        secure: bool = True,
        postgres: PostgresCluster | None = None,
    ) -> None:
        """``postgres``: a running cluster to take a new database in (the tests' session
        one); None: a cluster of the run's own, removed at the end."""
        super().__init__(seed, faults, edges, base, disk_full)
        self.own_postgres = postgres is None
        self.postgres = postgres or PostgresCluster()
        self.dbname = f"chaos_{seed}"
        self.n_replicas = replicas
        self.secure = secure
        self.audit.replicas = replicas
        self.replicas: list[Hub] = []
        self.stopped: set[int] = set()

    # -- hubs ----------------------------------------------------------------------------

    def start_hubs(self) -> None:
        if self.own_postgres:
            self.postgres.start()
        self.database = self.postgres.create_database(self.dbname)
        self.replicas = replica_hubs(
            self.base / "replicas",
            self.database,
            self.n_replicas,
            *HUB_ARGS,
            "--leader-timeout",
            LEADER_TIMEOUT,
            secure=self.secure,
        )
        for hub in self.replicas:
            hub.start()
        self.balancer: Balancer = start_balancer(
            self.base / "haproxy",
            [
                Replica(f"r{i}", f"127.0.0.1:{h.api_port}", f"127.0.0.1:{h.edge_port}")
                for i, h in enumerate(self.replicas)
            ],
            ca=self.replicas[0].ca if self.secure else None,
        )
        self.hub = Front(self.balancer, self.replicas)
        # a request to a stopped replica hangs: give up on it sooner than the audit would
        self.hub.request_timeout = 3.0

    def hub_edge_port(self) -> int:
        return self.balancer.layout.edge_port

    def edge_url(self, proxy: FaultProxy) -> str:
        return f"{'wss' if self.secure else 'ws'}://127.0.0.1:{proxy.port}"

    def prepare_edge(self, name: str, data_dir: Path) -> None:
        if self.secure:  # the join API through the balancer, as a gateway joins
            join(self.hub, name, data_dir)

    def stop_hubs(self) -> None:
        if hasattr(self, "balancer"):
            self.balancer.stop()
        for hub in self.replicas:
            hub.kill()  # SIGKILL ends a stopped process too
        if self.own_postgres:
            self.postgres.stop()

    # -- faults ----------------------------------------------------------------------------

    def hub_fault(self, fault: str, seconds: float) -> None:
        # one draw each, whatever the fault, so the faults after it replay the same
        index = self.rng.randrange(self.n_replicas)
        pick = self.rng.random()
        hub = self.replicas[index]
        if fault == "kill-replica":
            self.log(f"  kill -9 r{index}, restarted after {seconds:.1f}s")
            hub.kill()
            self.load(seconds)
            self._restart(index)
        elif fault == "stop-replica":
            stop = 0.5 + pick * (MAX_STOP - 0.5)
            self.log(f"  SIGSTOP r{index} for {stop:.1f}s")
            self._signal(index, signal.SIGSTOP)
            try:
                self.load(stop)
            finally:
                self._signal(index, signal.SIGCONT)
        elif fault == "kill-replicas":
            self.log(f"  kill -9 every replica, restarted after {seconds:.1f}s")
            for hub in self.replicas:
                hub.kill()
            self.load(seconds)
            for i in range(self.n_replicas):
                self._restart(i)
        else:
            self.log(f"  {fault}: {self._terminate(fault, pick)}")
            self.load(seconds)

    def _restart(self, index: int) -> None:
        self.stopped.discard(index)
        self.replicas[index].start()  # on its ports: the balancer finds it there

    def _signal(self, index: int, sig: signal.Signals) -> None:
        hub = self.replicas[index]
        if hub.running:
            assert hub.proc is not None
            hub.proc.send_signal(sig)
            (self.stopped.add if sig == signal.SIGSTOP else self.stopped.discard)(index)

    def _terminate(self, fault: str, pick: float) -> str:
        """``pg_terminate_backend`` on the replicas' connections that ``fault`` names: all
        pool connections, one change listener (``pick`` chooses), or the leader's."""
        with self._db() as conn:
            if fault == "terminate-leader":
                rows = conn.execute(
                    "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
                    " AND l.database = (SELECT oid FROM pg_database WHERE datname = %s)"
                    " AND l.pid IN (SELECT pid FROM pg_stat_activity"
                    "               WHERE application_name = 'cloudhub-leader')",
                    (self.dbname,),
                ).fetchall()
            else:
                name = "cloudhub-notify" if fault == "terminate-notify" else POOL_NAME
                rows = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                    " AND backend_type = 'client backend' AND application_name = %s"
                    " AND pid <> pg_backend_pid() ORDER BY pid",
                    (self.dbname, name),
                ).fetchall()
                if fault == "terminate-notify" and rows:
                    rows = [rows[int(pick * len(rows))]]
            pids = [row[0] for row in rows]
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return f"terminated {len(pids)} backend(s)"

    def _db(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.postgres.port,
            user=self.postgres._user,
            dbname=self.dbname,
            application_name="chaos-audit",
            autocommit=True,
            connect_timeout=5,
        )

    # -- the audit --------------------------------------------------------------------------

    def _health(self, hub: Hub) -> dict[str, Any]:
        """A replica's own /healthz, straight to its port."""
        ctx = ssl.create_default_context(cafile=str(hub.ca)) if self.secure else None
        with urllib.request.urlopen(hub.api + "/healthz", timeout=5, context=ctx) as resp:
            health: dict[str, Any] = json.loads(resp.read())
            return health

    def hub_findings(self) -> list[str]:
        findings = []
        health = {}
        for i, hub in enumerate(self.replicas):
            try:
                health[f"r{i}"] = self._health(hub)
            except OSError as exc:
                findings.append(f"r{i}: /healthz does not answer ({exc})")
        if findings:
            return findings
        leaders = sorted(name for name, h in health.items() if h["replica"]["leader"])
        if len(leaders) != 1:
            findings.append(f"replicas leading: {leaders or 'none'} (want exactly one)")
        sessions = {name: h["edge"]["sessions"] for name, h in health.items()}
        if sum(sessions.values()) != len(self.edges):
            findings.append(f"edge sessions per replica {sessions}, for {len(self.edges)} edges")
        ids = {h["replica"]["id"]: name for name, h in health.items()}
        with self._db() as conn:
            owners = dict(conn.execute("SELECT node, owner FROM node_leases").fetchall())
        for node in sorted(self.edges):
            if owners.get(node) not in ids:
                findings.append(f"{node}: owner in node_leases {owners.get(node)!r}, not a replica")
            for i, hub in enumerate(self.replicas):
                status, body = hub.request("GET", f"/api/v1/nodes/{node}")
                if status != 200 or not is_ready(body):
                    conditions = body.get("status", {}).get("conditions") if status == 200 else body
                    findings.append(f"{node}: not Ready on r{i} while connected: {conditions}")
        return findings
