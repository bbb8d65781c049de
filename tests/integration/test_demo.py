"""`make demo`'s command: the first thing a new user runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.support.mosquitto import Mosquitto
from tests.support.procs import BIN


def demo_command(tmp_path: Path, broker: Mosquitto, *extra: str) -> list[str]:
    return [str(BIN / "edgeward"), "demo", "--dir", str(tmp_path / "demo"),
            "--mqtt", f"{broker.host}:{broker.port}", *extra]  # fmt: skip


def run_demo(tmp_path: Path, broker: Mosquitto, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        demo_command(tmp_path, broker, *extra), capture_output=True, text=True, timeout=120
    )


def hub_alive(tmp_path: Path) -> bool:
    """Whether the hub the demo started (its pid is in cloudhub.json) still runs."""
    pid = json.loads((tmp_path / "demo" / "hub" / "cloudhub.json").read_text())["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_shows_the_desired_value_at_the_edge_and_the_node_ready(
    tmp_path: Path, mqtt_broker: Mosquitto
) -> None:
    """edgeward demo inits a hub, joins an edge and runs both over TLS, applies the sample
    device, shows its desired value in the edge cache and the node Ready, and stops both
    children when it ends; a second run keeps the CA, the node's key and the data."""
    result = run_demo(tmp_path, mqtt_broker, "--duration", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "pki      made the hub's CA" in out
    assert "(REST API), wss://127.0.0.1:" in out and "hub      https://127.0.0.1:" in out
    assert "join     node edge-1 joined with a single-use token" in out
    assert "device/thermo created" in out
    assert "edge-1 cache has default/thermo target=21" in out
    assert "edge-1 is Ready" in out
    assert "default/thermo reported" in out and "temperature=" in out
    config = tmp_path / "demo" / "cli.yaml"
    assert f"export EDGEWARD_CONFIG={config}" in out
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert (tmp_path / "demo" / "edge-1" / "pki" / "node.key").exists()
    assert not hub_alive(tmp_path), "the demo left its hub running"

    again = run_demo(tmp_path, mqtt_broker, "--duration", "0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "pki      kept the hub's CA" in again.stdout
    assert "join     kept node edge-1's key and certificate" in again.stdout
    assert "device/thermo unchanged" in again.stdout, "a second run should reuse its data"


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["INT", "TERM", "HUP"]
)
def test_ctrl_c_stops_the_demo_and_its_children(
    tmp_path: Path, mqtt_broker: Mosquitto, signum: int
) -> None:
    """The demo runs until Ctrl-C (or a kill, or its terminal closing), then stops the hub,
    the edge and the thermostat and exits 0."""
    proc = subprocess.Popen(
        demo_command(tmp_path, mqtt_broker),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    children: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            if "Ctrl-C stops the demo" in line or time.monotonic() > deadline:
                break
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # the hub, the edge, the thermostat
        proc.send_signal(signum)
        assert proc.wait(60) == 0
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    finally:
        leftovers = children + ([psutil.Process(proc.pid)] if proc.poll() is None else [])
        for process in leftovers:
            with contextlib.suppress(psutil.Error):
                process.kill()  # a failed run leaves nothing behind
    assert not hub_alive(tmp_path), "Ctrl-C left the demo's hub running"
