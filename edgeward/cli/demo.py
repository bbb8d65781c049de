"""``edgeward demo``: a hub, an edge node and a sample device on this machine.

It does what an operator does, on this machine: ``cloudhub init`` (a CA, a
server certificate, an admin token), the hub on free loopback ports under
``./.edgeward/``, a node token and ``edgeward join`` for the edge (its key
and certificate), then edgecore over mutual TLS. It applies the packaged
thermostat manifests, shows the desired value arriving in the edge's cache
and the node turning Ready, then follows the edge cache, printing every change
that reaches it, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import suppress
from importlib import resources
from pathlib import Path
from typing import Any

from edgeward.brokers import BrokerHandle, NoBrokerError, start_demo_broker
from edgeward.cli.apply import apply_one
from edgeward.cli.client import Credentials, HubClient
from edgeward.cli.common import add_command, out
from edgeward.cli.errors import CliError, UsageError
from edgeward.cli.manifests import identify, load_documents
from edgeward.mapper import parse_broker

NODE = "edge-1"
DEVICE_ID = "default/thermo"
_BROKER_KINDS = {
    "running": "the Mosquitto already running here",
    "mosquitto": "Mosquitto started for the demo",
    "embedded": "embedded amqtt broker",
}
START_TIMEOUT = 30.0


def say(line: str) -> None:
    out(line + "\n")


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "demo",
        help="run a hub, an edge node and a sample device on this machine",
        description="Start cloudhub and edgecore on free local ports, apply a sample "
        "thermostat Device, and show its desired value reaching the edge's cache. "
        "Keeps running, printing what reaches the edge, until Ctrl-C.",
        epilog="example: edgeward demo   (then, in another terminal, the commands it prints)",
        hub=False,
    )
    parser.add_argument(
        "--dir",
        default=".edgeward",
        metavar="DIR",
        help="where the demo keeps its data and logs (default: ./.edgeward)",
    )
    parser.add_argument(
        "--mqtt",
        metavar="HOST:PORT",
        help="use this MQTT broker (default: a running Mosquitto on 127.0.0.1:1883, else one "
        "started for the demo: Mosquitto if installed, else the embedded amqtt)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop by itself after this many seconds (default: run until Ctrl-C)",
    )
    parser.set_defaults(run=run)


class _Child:
    """A daemon started by the demo, its output in a log file."""

    def __init__(self, name: str, module: str, args: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        with open(log, "ab") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to the demo, which stops us in order
            )

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
            raise CliError(
                f"{self.name} exited with status {self.proc.returncode}; "
                f"last lines of {self.log}: " + " | ".join(tail)
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _stop_on_signal(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # stop as Ctrl-C does: the children go too


def run(args: argparse.Namespace) -> int:
    base = Path(args.dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    children: list[_Child] = []
    broker: BrokerHandle | None = None
    # `timeout`, `kill`, a closed terminal: without these the hub, edge and thermostat
    # outlive the demo
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGHUP, _stop_on_signal)
    try:
        if args.mqtt:
            try:
                host, port = parse_broker(args.mqtt)
            except ValueError as exc:
                raise UsageError(f"--mqtt: {exc}") from None
            mqtt = f"{host}:{port}"
            say(f"broker   {mqtt} (given)")
        else:
            try:
                broker = start_demo_broker(base / "broker")
            except NoBrokerError as exc:
                raise CliError(str(exc)) from None
            mqtt = broker.address
            say(f"broker   {mqtt} ({_BROKER_KINDS[broker.kind]})")
        hub_dir = base / "hub"
        _init_hub(hub_dir)
        with suppress(FileNotFoundError):
            (hub_dir / "cloudhub.json").unlink()
        loopback = ["--api-bind", "127.0.0.1", "--edge-bind", "127.0.0.1"]
        hub = _Child(
            "cloudhub",
            "cloudhub.main",
            ["--data-dir", str(hub_dir), "--api-port", "0", "--edge-port", "0", *loopback],
            base / "cloudhub.log",
        )
        children.append(hub)
        address = _wait(lambda: _read_json(hub_dir / "cloudhub.json"), hub, "the hub to start")
        say(f"hub      {address['api']} (REST API), {address['edge']} (edges); log {hub.log}")
        client, cli_config = _admin_client(hub_dir, address["api"], base)

        edge_dir = base / NODE
        _join(client, address["api"], edge_dir, base)
        edge = _Child(
            "edgecore",
            "edgecore.main",
            [
                "--node",
                NODE,
                "--hub",
                address["edge"],
                "--data-dir",
                str(edge_dir),
                "--status-interval",
                "2",
                "--mqtt",
                mqtt,
            ],
            base / f"{NODE}.log",
        )
        children.append(edge)
        say(f"edge     node {NODE}, cache {edge_dir / 'edge.db'}; log {edge.log}")
        mapper = _start_thermostat(mqtt, base, children)
        applied = time.monotonic()
        _apply_example(client)

        device = client.request("GET", "/api/v1/namespaces/default/devices/thermo")
        want = _desired(device)
        cache = edge_dir / "edge.db"
        seen = _wait(lambda: _cached_if(cache, want), edge, "the desired value to reach the edge")
        took = time.monotonic() - applied
        say(
            f"edge     {NODE} cache has default/thermo {_fmt(want)} "
            f"(revision {seen['revision']}), {took:.2f}s after apply"
        )

        reported = _wait(lambda: _reported(client), mapper, "the thermostat's first report")
        say(f"hub      default/thermo reported {_fmt(reported)} (from the thermostat via the edge)")

        node = _wait(lambda: _ready_node(client), edge, f"node {NODE} to be Ready")
        usage = node["status"].get("usage", {})
        say(
            f"node     {NODE} is Ready, last heartbeat {node['status'].get('lastHeartbeatTime')}, "
            f"cpu {usage.get('cpuPercent', '?')}%, memory {usage.get('memoryPercent', '?')}%"
        )
        _print_next_steps(cli_config, address["api"])
        _follow(cache, seen, client, reported, children, args.duration)
    except KeyboardInterrupt:
        say("")
    finally:
        for child in reversed(children):
            child.stop()
        if broker is not None:
            broker.stop()
        if children:
            say("demo stopped (data kept in " + str(base) + ")")
    return 0


def _start_thermostat(mqtt: str, base: Path, children: list[_Child]) -> _Child:
    """The simulated thermostat, a mapper on ``mqtt`` for the demo's node."""
    mapper = _Child(
        "thermostat",
        "edgeward.mapper.thermostat",
        ["--broker", mqtt, "--device", DEVICE_ID, "--node", NODE, "--interval", "1"],
        base / "thermostat.log",
    )
    children.append(mapper)
    say(f"device   simulated thermostat {DEVICE_ID} on MQTT; log {mapper.log}")
    return mapper


def _apply_example(client: HubClient) -> None:
    """The thermostat's DeviceModel and Device, as `edgeward apply` would."""
    text = resources.files("edgeward").joinpath("examples/thermostat.yaml").read_text()
    for doc in load_documents(text, "thermostat.yaml"):
        target = identify(doc, None)
        say(f"apply    {target.label} {apply_one(client, target, doc.body)}")


def _init_hub(hub_dir: Path) -> None:
    """The hub's CA, server certificate and admin token (kept from an earlier demo run)."""
    done = subprocess.run(
        [sys.executable, "-m", "cloudhub.main", "init", "--data-dir", str(hub_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise CliError(f"cloudhub init failed: {done.stderr.strip()}")
    made = "made" if "created CA" in done.stdout else "kept"
    say(f"pki      {made} the hub's CA and server certificate in {hub_dir / 'pki'}")


def _admin_client(hub_dir: Path, api: str, base: Path) -> tuple[HubClient, Path]:
    """A client with the admin token init wrote, and a CLI config for this run's hub URL."""
    import yaml

    admin = yaml.safe_load((hub_dir / "admin.yaml").read_text())
    config = base / "cli.yaml"
    document = {"hub": api, "ca": admin["ca"], "token": admin["token"]}
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out_file:
        yaml.safe_dump(document, out_file, sort_keys=False)
    credentials = Credentials(admin["token"], admin["ca"], str(config), str(config))
    return HubClient(api, credentials=credentials), config


def _join(client: HubClient, api: str, edge_dir: Path, base: Path) -> None:
    """Join the demo's node as a gateway would: a token, then ``edgeward join`` (once; a
    later run keeps the node's key and certificate while it is valid)."""
    cert = edge_dir / "pki" / "node.crt"
    if cert.exists() and _valid_for_an_hour(cert):
        say(f"join     kept node {NODE}'s key and certificate in {cert.parent}")
        return
    token = client.request(
        "POST", "/api/v1/tokens", {"role": "node", "node": NODE, "ttlSeconds": 600}
    )["token"]
    done = subprocess.run(
        [sys.executable, "-m", "edgeward.cli.main", "join", "--hub", api, "--token", token,
         "--node", NODE, "--data-dir", str(edge_dir), "--config-out", str(base / f"{NODE}.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        raise CliError(f"joining {NODE} failed: {done.stderr.strip()}")
    say(
        f"join     node {NODE} joined with a single-use token; key and certificate in {cert.parent}"
    )


def _valid_for_an_hour(cert: Path) -> bool:
    import ssl

    from edgeward import certs

    try:
        not_after = certs.decode_certificate_file(cert).get("notAfter")
    except (OSError, certs.CertificateError):
        return False
    return bool(not_after) and ssl.cert_time_to_seconds(not_after) > time.time() + 3600


def _print_next_steps(config: Path, api: str) -> None:
    exe = Path(sys.argv[0]).name if Path(sys.argv[0]).name == "edgeward" else "edgeward"
    cli = str(Path(sys.executable).parent / exe)
    if cli.startswith(os.getcwd() + os.sep):
        cli = os.path.relpath(cli)
    say("")
    say("Try, in another terminal:")
    say(f"  export EDGEWARD_CONFIG={config}   # the hub's URL, CA and admin token")
    say(f"  {cli} twin set thermo target=23     # watch it arrive below")
    say(f"  {cli} get devices -o wide")
    say(f"  {cli} get nodes -o wide")
    say(f"Or open the web console at {api}/ and log in with the token in {config}")
    say("  (the browser warns first: the demo's hub has a CA of its own, made just now).")
    say("Following the edge cache and what the thermostat reports; Ctrl-C stops the demo.")
    say("")


def _follow(
    cache: Path,
    seen: dict[str, Any],
    client: HubClient,
    reported: dict[str, str],
    children: list[_Child],
    duration: float | None,
) -> None:
    deadline = None if duration is None else time.monotonic() + duration
    last = seen["devices"]
    while deadline is None or time.monotonic() < deadline:
        time.sleep(0.5)
        for child in children:
            child.check()
        now_reported = _reported(client)
        if now_reported and now_reported != reported:
            reported = now_reported
            say(f"hub      {time.strftime('%H:%M:%S')} {DEVICE_ID} reported {_fmt(reported)}")
        now = _read_cache(cache)
        if now is None:
            continue
        for key in sorted(set(last) | set(now["devices"])):
            if last.get(key) != now["devices"].get(key):
                shown = _fmt(now["devices"][key]) if key in now["devices"] else "(removed)"
                say(
                    f"edge     {time.strftime('%H:%M:%S')} {key} {shown} "
                    f"(revision {now['revision']})"
                )
        last = now["devices"]


def _wait(probe: Any, child: _Child, what: str) -> Any:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        child.check()
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise CliError(f"timed out after {START_TIMEOUT:g}s waiting for {what}; see {child.log}")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_cache(path: Path) -> dict[str, Any] | None:
    """The devices' desired values and the revision in the edge's cache, read-only."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            rows = conn.execute("SELECT namespace, name, body FROM objects WHERE kind = 'Device'")
            devices = {f"{ns}/{name}": _desired(json.loads(body)) for ns, name, body in rows}
            rev = conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # not created yet, or busy
    return {"devices": devices, "revision": int(rev[0]) if rev else 0}


def _cached_if(path: Path, want: dict[str, str]) -> dict[str, Any] | None:
    cache = _read_cache(path)
    if cache and cache["devices"].get("default/thermo") == want:
        return cache
    return None


def _reported(client: HubClient) -> dict[str, str] | None:
    """The thermostat's reported values as the hub holds them (None until there are any)."""
    try:
        device = client.request("GET", "/api/v1/namespaces/default/devices/thermo")
    except CliError:
        return None
    values = {
        t["propertyName"]: t["reported"]["value"]
        for t in device.get("status", {}).get("twins", [])
        if isinstance(t, dict) and isinstance(t.get("reported"), dict)
    }
    return values or None


def _ready_node(client: HubClient) -> dict[str, Any] | None:
    try:
        node = client.request("GET", f"/api/v1/nodes/{NODE}")
    except CliError:
        return None
    for cond in node.get("status", {}).get("conditions", []):
        if (
            cond.get("type") == "Ready"
            and cond.get("status") == "True"
            and node["status"].get("usage")
        ):
            return node
    return None


def _desired(device: dict[str, Any]) -> dict[str, str]:
    return {
        p["name"]: p["desired"]["value"]
        for p in device.get("spec", {}).get("properties", [])
        if isinstance(p.get("desired"), dict) and "value" in p["desired"]
    }


def _fmt(values: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(values.items())) or "(no desired values)"
