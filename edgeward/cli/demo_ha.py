"""``edgeward demo-ha``: two hub replicas on one PostgreSQL behind HAProxy (docs/ha.md).

It deploys what docs/ha.md describes, on this machine: a throwaway PostgreSQL
(:mod:`edgeward.pgcluster`), ``cloudhub init`` once with that database and the
``pki/`` and ``admin.yaml`` copied to the second replica, both replicas with
``edge_advertise`` set to the balancer, HAProxy in front (:mod:`edgeward.balancer`),
then an edge joined through the balancer and the simulated thermostat, as
``edgeward demo`` does for one hub (its pieces are reused). It prints what runs
where and which replica holds the edge's session, then follows the edge, the
thermostat's reports and the session's replica until Ctrl-C: kill a replica and
watch the edge move. The database is throwaway, so every run starts afresh.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeward.brokers import BrokerHandle, NoBrokerError, free_port, start_demo_broker
from edgeward.cli.client import HubClient
from edgeward.cli.common import add_command
from edgeward.cli.demo import (
    _BROKER_KINDS,
    DEVICE_ID,
    NODE,
    _admin_client,
    _apply_example,
    _cached_if,
    _Child,
    _desired,
    _fmt,
    _join,
    _read_cache,
    _read_json,
    _ready_node,
    _reported,
    _start_thermostat,
    _stop_on_signal,
    _wait,
    say,
)
from edgeward.cli.errors import CliError, UsageError
from edgeward.mapper import parse_broker

if TYPE_CHECKING:  # every edgeward command imports this module: keep it light
    from edgeward.balancer import Balancer
    from edgeward.pgcluster import PostgresCluster

REPLICAS = 2
#: marks a directory as this demo's, so a fresh run may empty it
MARKER = ".edgeward-demo-ha"


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "demo-ha",
        help="run two hub replicas on PostgreSQL behind HAProxy, an edge and a device",
        description="Start a throwaway PostgreSQL, two cloudhub replicas on it sharing one "
        "PKI, HAProxy in front of both (TCP mode: TLS end to end), an edge joined through "
        "the balancer and a sample thermostat. Keeps running, printing what reaches the "
        "edge and which replica holds its session, until Ctrl-C: kill a replica and watch "
        "the edge move. Needs PostgreSQL's server and HAProxy (scripts/system-deps).",
        epilog="example: edgeward demo-ha   (make demo-ha sets up what it needs first)",
        hub=False,
    )
    parser.add_argument(
        "--dir",
        default=".edgeward-ha",
        metavar="DIR",
        help="where the demo keeps its files and logs, emptied at every start since the "
        "database is throwaway (default: ./.edgeward-ha)",
    )
    parser.add_argument(
        "--mqtt",
        metavar="HOST:PORT",
        help="use this MQTT broker (default: as 'edgeward demo' finds or starts one)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop by itself after this many seconds (default: run until Ctrl-C)",
    )
    parser.set_defaults(run=run)


@dataclass
class _Replica:
    name: str
    data_dir: Path
    child: _Child
    api: str
    edge: str
    pid: int


def run(args: argparse.Namespace) -> int:
    import yaml

    from edgeward.balancer import BalancerError, Replica, start_balancer
    from edgeward.pgcluster import PostgresCluster

    base = _fresh(Path(args.dir).resolve())
    children: list[_Child] = []
    broker: BrokerHandle | None = None
    cluster: PostgresCluster | None = None
    balancer: Balancer | None = None
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGHUP, _stop_on_signal)
    try:
        mqtt, broker = _broker(args, base)
        cluster = PostgresCluster()
        try:
            cluster.start()
            database = cluster.create_database("edgeward")
        except (RuntimeError, KeyError, OSError, subprocess.SubprocessError) as exc:
            raise CliError(f"cannot start PostgreSQL for the demo: {exc}") from None
        say(f"postgres {database} (throwaway, in {cluster.dir})")

        api_port, edge_port = free_port(), free_port()
        edge_url = f"wss://127.0.0.1:{edge_port}"
        config = base / "cloudhub.yaml"
        config.write_text(
            "# every replica's config (docs/ha.md): one database, the balancer advertised\n"
            + yaml.safe_dump({"database": database, "edge_advertise": [edge_url]})
        )
        dirs = _init_replicas(base, database)
        replicas = [_start_replica(d, config, base, children) for d in dirs]
        for replica in replicas:
            say(f"replica  {replica.name} {replica.api} (API), {replica.edge} (edges), "
                f"pid {replica.pid}; log {replica.child.log}")  # fmt: skip
        ca = dirs[0] / "pki" / "ca.crt"
        try:
            balancer = start_balancer(
                base / "haproxy",
                [Replica(r.name, _host_port(r.api), _host_port(r.edge)) for r in replicas],
                ca=ca,
                api_port=api_port,
                edge_port=edge_port,
            )
        except BalancerError as exc:
            raise CliError(str(exc)) from None
        say(f"haproxy  {balancer.api_url} (API), {balancer.edge_url} (edges), "
            f"stats {balancer.stats_url}; config {balancer.workdir / 'haproxy.cfg'}")  # fmt: skip

        client, cli_config = _admin_client(dirs[0], balancer.api_url, base)
        edge_dir = base / NODE
        _join(client, balancer.api_url, edge_dir, base)  # the join API through the balancer
        edge = _Child(
            "edgecore",
            "edgecore.main",
            # its config, as join wrote it, names the edge endpoint the replicas advertise
            ["--config", str(base / f"{NODE}.yaml"), "--status-interval", "2", "--mqtt", mqtt],
            base / f"{NODE}.log",
        )
        children.append(edge)
        say(f"edge     node {NODE} via {edge_url}, cache {edge_dir / 'edge.db'}; log {edge.log}")
        mapper = _start_thermostat(mqtt, base, children)
        _apply_example(client)
        want = _desired(client.request("GET", "/api/v1/namespaces/default/devices/thermo"))
        cache = edge_dir / "edge.db"
        seen = _wait(lambda: _cached_if(cache, want), edge, "the desired value to reach the edge")
        say(f"edge     {NODE} cache has {DEVICE_ID} {_fmt(want)} (revision {seen['revision']})")
        reported = _wait(lambda: _reported(client), mapper, "the thermostat's first report")
        say(f"hub      {DEVICE_ID} reported {_fmt(reported)} (through the balancer)")
        _wait(lambda: _ready_node(client), edge, f"node {NODE} to be Ready")
        holder = _wait(lambda: _holder(replicas, ca), edge, "the edge's session on a replica")
        say(f"session  {NODE} is connected to {holder.name} (pid {holder.pid})")
        _print_next_steps(cli_config, balancer, holder, replicas)
        watched = (replicas, ca, holder.name)
        _follow(cache, seen, client, reported, watched, [edge, mapper], args.duration)
    except KeyboardInterrupt:
        say("")
    finally:
        for child in reversed(children):
            child.stop()
        if balancer is not None:
            balancer.stop()
        if cluster is not None:
            cluster.stop()
        if broker is not None:
            broker.stop()
        if children:
            say(f"demo stopped (logs kept in {base}; the database is gone)")
    return 0


def _fresh(base: Path) -> Path:
    """``base``, empty: the database is throwaway, so nothing of an earlier run is valid."""
    if base.exists() and any(base.iterdir()):
        if not (base / MARKER).exists():
            raise UsageError(f"--dir {base} is not empty and not an earlier demo-ha's")
        shutil.rmtree(base)
    base.mkdir(parents=True, exist_ok=True)
    (base / MARKER).write_text("edgeward demo-ha empties this directory at every start\n")
    return base


def _broker(args: argparse.Namespace, base: Path) -> tuple[str, BrokerHandle | None]:
    if args.mqtt:
        try:
            host, port = parse_broker(args.mqtt)
        except ValueError as exc:
            raise UsageError(f"--mqtt: {exc}") from None
        say(f"broker   {host}:{port} (given)")
        return f"{host}:{port}", None
    try:
        broker = start_demo_broker(base / "broker")
    except NoBrokerError as exc:
        raise CliError(str(exc)) from None
    say(f"broker   {broker.address} ({_BROKER_KINDS[broker.kind]})")
    return broker.address, broker


def _init_replicas(base: Path, database: str) -> list[Path]:
    """``cloudhub init`` once, on the shared database (the admin token lives there); the
    other replicas get copies of its ``pki/`` and ``admin.yaml``, as an operator does."""
    dirs = [base / f"r{index}" for index in range(REPLICAS)]
    done = subprocess.run(
        [sys.executable, "-m", "cloudhub.main", "init", "--data-dir", str(dirs[0]),
         "--database", database, "--ip", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise CliError(f"cloudhub init failed: {done.stderr.strip()}")
    for other in dirs[1:]:
        other.mkdir()
        shutil.copytree(dirs[0] / "pki", other / "pki")
        shutil.copy2(dirs[0] / "admin.yaml", other / "admin.yaml")
    say(f"pki      one CA for every replica: made in {dirs[0] / 'pki'}, copied to the others")
    return dirs


def _start_replica(data_dir: Path, config: Path, base: Path, children: list[_Child]) -> _Replica:
    loopback = ["--api-bind", "127.0.0.1", "--edge-bind", "127.0.0.1"]
    child = _Child(
        f"cloudhub {data_dir.name}",
        "cloudhub.main",
        ["--config", str(config), "--data-dir", str(data_dir), "--api-port", "0",
         "--edge-port", "0", *loopback],
        base / f"{data_dir.name}.log",
    )  # fmt: skip
    children.append(child)
    address = _wait(lambda: _read_json(data_dir / "cloudhub.json"), child, f"{child.name}")
    return _Replica(data_dir.name, data_dir, child, address["api"], address["edge"], child.proc.pid)


def _host_port(url: str) -> str:
    return url.split("://", 1)[1]


def _sessions(replica: _Replica, ca: Path) -> int | None:
    """The replica's open edge sessions, from its own /healthz; None if it does not answer."""
    import ssl
    import urllib.request

    if replica.child.proc.poll() is not None:
        return None
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(replica.api + "/healthz", timeout=2, context=context) as r:
            return int(json.loads(r.read())["edge"]["sessions"])
    except (OSError, ValueError, KeyError):
        return None


def _holder(replicas: list[_Replica], ca: Path) -> _Replica | None:
    holding = [r for r in replicas if _sessions(r, ca)]
    return holding[0] if len(holding) == 1 else None


def _print_next_steps(
    config: Path, balancer: Balancer, holder: _Replica, replicas: list[_Replica]
) -> None:
    cli = str(Path(sys.executable).parent / "edgeward")
    others = ", ".join(r.name for r in replicas if r is not holder)
    say("")
    steps = [
        (f"export EDGEWARD_CONFIG={config}", "the balancer's URL, the CA, the admin token"),
        (f"{cli} twin set thermo target=23", "through the balancer; watch it arrive below"),
        (f"kill -9 {holder.pid}", f"{holder.name}: the edge moves to {others}"),
        (f"{cli} get nodes -o wide", "answered by whichever replica is left"),
    ]
    width = max(len(command) for command, _ in steps)
    say("Try, in another terminal:")
    for command, why in steps:
        say(f"  {command.ljust(width)}   # {why}")
    say(f"HAProxy's view of the replicas: {balancer.stats_url}")
    say("Following the edge cache, the thermostat and the edge's replica; Ctrl-C stops the demo.")
    say("")


def _follow(
    cache: Path,
    seen: dict[str, Any],
    client: HubClient,
    reported: dict[str, str],
    watched: tuple[list[_Replica], Path, str],
    essential: list[_Child],
    duration: float | None,
) -> None:
    """Print what changes, until ``duration`` or Ctrl-C. A replica exiting is part of the
    demo (it is said, not fatal); the edge or the thermostat exiting ends it."""
    deadline = None if duration is None else time.monotonic() + duration
    last = seen["devices"]
    replicas, ca, holder = watched
    exited: set[str] = set()
    while deadline is None or time.monotonic() < deadline:
        time.sleep(0.5)
        for child in essential:
            child.check()
        stamp = time.strftime("%H:%M:%S")
        for replica in replicas:
            status = replica.child.proc.poll()
            if status is not None and replica.name not in exited:
                exited.add(replica.name)
                say(f"replica  {stamp} {replica.name} exited with status {status}")
        now_holder = _holder(replicas, ca)
        if now_holder is not None and now_holder.name != holder:
            holder = now_holder.name
            say(f"session  {stamp} {NODE} is connected to {holder} (pid {now_holder.pid})")
        now_reported = _reported(client)
        if now_reported and now_reported != reported:
            reported = now_reported
            say(f"hub      {stamp} {DEVICE_ID} reported {_fmt(reported)}")
        now = _read_cache(cache)
        if now is None:
            continue
        for key in sorted(set(last) | set(now["devices"])):
            if last.get(key) != now["devices"].get(key):
                shown = _fmt(now["devices"][key]) if key in now["devices"] else "(removed)"
                say(f"edge     {stamp} {key} {shown} (revision {now['revision']})")
        last = now["devices"]
