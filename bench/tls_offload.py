"""An experiment, not a scenario: what the hub-scale reconnect costs with mutual TLS
terminated by HAProxy in front of a plain hub, against TLS in the hub and no TLS at all.

Decision material for issue 9 (docs/performance.md, "TLS everywhere"). The node's
identity does not reach the hub here (it runs ``--insecure`` behind the proxy), so this
measures the cost of the layout, not a design: one would pass the verified certificate's
name and serial on (PROXY protocol v2 or a header) and keep the serial check in the hub.

    python -m bench.tls_offload --mode offload|tls|plain [--nodes 9000]

HAProxy holds two file descriptors per node, so at this machine's hard limit of 20,000
open files 9,000 nodes is about the most it can take. Each run: a CA and a certificate per
node, a hub, the fleet simulator (4 processes, 30 s heartbeats); every node connects, the
hub is killed and started again on the same ports, and the run ends when every node is
welcomed back. It prints the connect and reconnect times, the CPU per node over the
reconnect of the hub, of HAProxy and of the simulated nodes, and RSS per connected node.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.fleet import Fleet, FleetConfig
from bench.procs import INSECURE_ENV, BenchHub, cpu_seconds, raise_nofile, rss, workdir
from edgeward.brokers import free_port

WINDOW = 240.0
KIB = 1024


def _fleet_config(nodes: int, hub: str, tls_dir: str) -> FleetConfig:
    return FleetConfig(hub=(hub,), nodes=nodes, processes=4, heartbeat=30.0, prefix="scale",
                       tls_dir=tls_dir)  # fmt: skip


def _sign_fleet(directory: Path, ca_dir: Path, names: list[str]) -> Path:
    """A CA of our own (the hub behind the proxy has none) and a certificate per node."""
    from cloudhub.pki import Authority, init_pki, pki_paths
    from edgeward import certs

    paths = pki_paths(ca_dir)
    init_pki(paths, ["localhost"], ["127.0.0.1"])
    authority = Authority(paths)
    directory.mkdir(parents=True)
    key = certs.new_private_key()
    for name in names:
        signed = authority.sign_node(certs.node_csr(key, name), name, 30)
        (directory / f"{name}.crt").write_bytes(signed.pem)
    certs.write_private(directory / "node.key", certs.private_key_pem(key))
    (directory / "ca.crt").write_bytes(authority.ca_pem)
    return paths.directory


def _haproxy_config(pki: Path, pem: Path, port: int, hub_edge: str, nodes: int) -> str:
    lines = [
        "global",
        f"maxconn {nodes + 300}",
        "nbthread 2",
        "defaults",
        "mode tcp",
        "timeout connect 5s",
        "timeout client 1h",
        "timeout server 1h",
        "frontend edge",
        f"bind 127.0.0.1:{port} ssl crt {pem} ca-file {pki}/ca.crt verify required "
        "alpn http/1.1 no-tls-tickets",
        f"maxconn {nodes + 200}",
        "default_backend hub",
        "backend hub",
        f"server hub {hub_edge} maxconn {nodes + 200}",
    ]
    return "\n".join(lines) + "\n"


def _fleet_cpu(fleet: Fleet) -> float:
    """CPU seconds of the simulator's processes: the clients' side of every handshake
    runs on the same cores as the hub's."""
    return sum(cpu_seconds(pid) for pid in fleet.pids())


def run(mode: str, nodes: int) -> None:
    raise_nofile(2 * nodes + 4096)
    if mode != "tls":
        os.environ[INSECURE_ENV] = "1"  # the hub itself serves plain ws://
    with workdir("tls-offload") as tmp:
        names = _fleet_config(nodes, "", "").node_names()
        fleet_dir = tmp / "fleet-pki"
        pki = _sign_fleet(fleet_dir, tmp / "ca", names) if mode == "offload" else None
        hub = BenchHub(tmp / "hub")
        if mode == "tls":
            hub.enroll(names, fleet_dir)
        hub.start()
        proxy: subprocess.Popen[bytes] | None = None
        fleet: Fleet | None = None
        try:
            target = hub.edge
            if pki is not None:
                proxy, target = _start_proxy(tmp, pki, hub.edge, nodes)
            fleet = Fleet(_fleet_config(nodes, target, str(fleet_dir) if mode != "plain" else ""))
            _measure(mode, hub, proxy, fleet, nodes)
        finally:
            if fleet is not None:
                fleet.stop()
            if proxy is not None:
                proxy.kill()
            if hub.running:
                hub.kill()


def _start_proxy(
    tmp: Path, pki: Path, hub_edge: str, nodes: int
) -> tuple[subprocess.Popen[bytes], str]:
    """HAProxy terminating mutual TLS for ``hub_edge``; it and the URL nodes connect to."""
    pem = tmp / "haproxy.pem"
    pem.write_bytes((pki / "server.crt").read_bytes() + (pki / "server.key").read_bytes())
    port = free_port()
    config = tmp / "haproxy.cfg"
    config.write_text(_haproxy_config(pki, pem, port, hub_edge.split("://")[1], nodes))
    with open(tmp / "haproxy.log", "wb") as log:
        proxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stderr=log)
    time.sleep(1)
    if proxy.poll() is not None:
        raise SystemExit((tmp / "haproxy.log").read_text())
    return proxy, f"wss://127.0.0.1:{port}"


def _measure(
    mode: str, hub: BenchHub, proxy: subprocess.Popen[bytes] | None, fleet: Fleet, nodes: int
) -> None:
    time.sleep(1)
    hub_before = rss(hub.pid)
    proxy_before = rss(proxy.pid) if proxy else 0
    began = time.monotonic()
    fleet.start()
    connected = fleet.wait(lambda s: s["connected"] >= nodes, WINDOW)
    reached = fleet.stats()["connected"]
    took = (connected - began) if connected is not None else float("nan")
    print(f"{mode}: {reached:,} connected in {took:.1f} s", flush=True)
    time.sleep(10)
    per_node = (rss(hub.pid) - hub_before) / reached / KIB
    line = f"{mode}: RSS per node: hub {per_node:.1f} KiB"
    if proxy:
        line += f", HAProxy {(rss(proxy.pid) - proxy_before) / reached / KIB:.1f} KiB"
    print(line, flush=True)
    proxy_cpu = cpu_seconds(proxy.pid) if proxy else 0.0
    fleet_cpu = _fleet_cpu(fleet)
    killed = time.monotonic()
    hub.restart(kill=True)
    back = fleet.wait(lambda _s: fleet.welcomed_since(killed) >= reached, WINDOW)
    took = (back - killed) if back is not None else float("nan")
    line = (f"{mode}: all back {took:.1f} s after kill -9; CPU per node over it: "
            f"hub {cpu_seconds(hub.pid) / reached * 1000:.2f} ms")  # fmt: skip
    if proxy:
        line += f", HAProxy {(cpu_seconds(proxy.pid) - proxy_cpu) / reached * 1000:.2f} ms"
    line += f", simulated nodes {(_fleet_cpu(fleet) - fleet_cpu) / reached * 1000:.2f} ms"
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tls_offload",
        description="Reconnect a simulated fleet after a hub restart: mutual TLS "
        "terminated by HAProxy (offload), in the hub (tls), or none (plain).",
    )
    parser.add_argument("--mode", choices=("offload", "tls", "plain"), default="offload")
    parser.add_argument("--nodes", type=int, default=9000, help="simulated nodes (9000)")
    args = parser.parse_args(argv)
    run(args.mode, args.nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
