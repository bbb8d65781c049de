"""Scenario 4: hub scale.

10,000 simulated nodes (the fleet simulator, several processes) connect to
one hub process and report node status every 30 s. Figures: the hub's RSS
per connected node (RSS after connect minus RSS before, over the nodes), its
CPU share while the fleet idles (heartbeats and pings only), the time for
every node to connect, and after the hub is killed and started again on the
same ports, the time until every node is welcomed back, the hub's CPU time
per node for it (the reconnect's wall time also holds the simulated fleet's
work on the same cores), and how many nodes went NotReady meanwhile (read
from the hub's change log). Targets: < 50 KiB
per node, < 30% of one core at idle. Baseline for memory: what a bare
``websockets`` server gains per idle connection, measured the same way.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable

import psutil

from bench.baselines import ws_idle_bytes_per_conn
from bench.core import Figure, Options
from bench.fleet import Fleet, FleetConfig
from bench.procs import BenchHub, cpu_share, raise_nofile, rss, workdir

NAME = "hub-scale"
KIB = 1024


def not_ready_in(rows: Iterable[tuple[str, str]]) -> int:
    """How many nodes a Node change among ``rows`` (name, stored body) shows not Ready."""
    bad = set()
    for name, body in rows:
        for cond in json.loads(body).get("status", {}).get("conditions", []):
            if cond.get("type") == "Ready" and cond.get("status") != "True":
                bad.add(name)
    return len(bad)


def _went_not_ready(hub: BenchHub, after: int) -> int:
    """Nodes whose Ready condition left True in a change after revision ``after``."""
    rows = hub.query("SELECT name, body FROM changes WHERE kind = 'Node' AND revision > ?", after)
    return not_ready_in(rows)


def run(opts: Options) -> list[Figure]:
    nodes = opts.size(10_000, 300)
    processes = opts.size(4, 1)
    heartbeat = 30.0
    raise_nofile(nodes + 2048)
    base = ws_idle_bytes_per_conn(opts.size(2000, 300)) / KIB
    with workdir(NAME) as tmp:
        hub = BenchHub(tmp / "hub")
        tls_dir = str(tmp / "fleet-pki") if hub.secure else ""
        cfg = FleetConfig(hub=("",), nodes=nodes, processes=processes, heartbeat=heartbeat,
                          prefix="scale", tls_dir=tls_dir)  # fmt: skip
        fleet = Fleet(cfg)
        try:
            if hub.secure:
                hub.enroll(fleet.cfg.node_names(), tmp / "fleet-pki")
            hub.start()
            fleet.cfg = FleetConfig(**{**fleet.cfg.__dict__, "hub": (hub.edge,)})
            time.sleep(1)
            rss_before = rss(hub.pid)
            began = time.monotonic()
            fleet.start()
            window = opts.seconds(240, 60)
            connected = fleet.wait(lambda s: s["connected"] >= nodes, window)
            reached = fleet.stats()["connected"]
            connect_time = (connected - began) if connected is not None else float("nan")
            time.sleep(opts.seconds(10, 2))  # the connect burst's reports and pongs settle
            rss_after = rss(hub.pid)
            idle = cpu_share(hub.pid, opts.seconds(60, 5))
            stats = fleet.stats()
            during_connect = _went_not_ready(hub, 0)
            head = hub.head()
            killed = time.monotonic()
            hub.restart(kill=True)
            back = fleet.wait(lambda _s: fleet.welcomed_since(killed) >= reached, window)
            reconnect = (back - killed) if back is not None else float("nan")
            restarted = psutil.Process(hub.pid).cpu_times()
            restart_cpu = restarted.user + restarted.system
            time.sleep(opts.seconds(5, 1))
            not_ready = _went_not_ready(hub, head)
        finally:
            fleet.stop()
            stopping = time.monotonic()
            if hub.running:
                with contextlib.suppress(AssertionError):  # stop() kills it after the timeout
                    hub.stop(timeout=120)
            shutdown = time.monotonic() - stopping
    per_node = (rss_after - rss_before) / max(1, reached) / KIB
    common = {"scenario": NAME}
    return [
        Figure(name="hub RSS per connected node", value=per_node, unit="KiB",
               baseline=base, baseline_name="bare websockets server, idle conn",
               target=50.0, note=f"hub RSS {rss_before / 2**20:.0f} -> "
               f"{rss_after / 2**20:.0f} MiB", **common),
        Figure(name=f"hub CPU idle, {heartbeat:g} s heartbeats", value=idle * 100,
               unit="% of a core", target=30.0, **common),
        Figure(name=f"nodes connected within {window:g} s", value=float(reached), unit="nodes",
               better="higher", target=float(nodes), note=f"all in {connect_time:.1f} s; "
               f"failed connects {stats['failed_connects']}, reconnects {stats['reconnects']}",
               **common),
        Figure(name="all reconnected after a hub restart", value=reconnect, unit="s",
               note=f"kill, start on the same ports, until the {reached:,} nodes that were "
               "connected are welcomed again (nan: not within the window); "
               f"{'with TLS handshakes' if hub.secure else 'plain ws://'}",
               **common),
        Figure(name="hub CPU per node reconnected", value=restart_cpu / max(1, reached) * 1000,
               unit="ms", note=f"{restart_cpu:.1f} s of CPU from the hub's start until every "
               "node was back, its start-up included; the simulated fleet's own handshakes "
               "ran on the same cores", **common),
        Figure(name="hub stop (SIGTERM) after the fleet left", value=shutdown, unit="s",
               note="graceful shutdown time; 120 s means it had to be killed", **common),
        Figure(name="nodes that went NotReady", value=float(not_ready), unit="nodes",
               target=0.0, note=f"{during_connect} went NotReady during the initial connect",
               **common),
    ]  # fmt: skip
