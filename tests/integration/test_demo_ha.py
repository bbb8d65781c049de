"""`make demo-ha`'s command: two hub replicas on PostgreSQL behind HAProxy, an edge and a
device, and nothing of it left behind when it stops."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

from tests.support.mosquitto import Mosquitto
from tests.support.procs import BIN


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def test_demo_ha_comes_up_through_the_balancer_and_stops_everything(
    tmp_path: Path, mqtt_broker: Mosquitto
) -> None:
    """edgeward demo-ha starts PostgreSQL, two replicas, HAProxy, an edge joined through
    the balancer and the thermostat, whose report reaches the hub through the balancer;
    SIGTERM stops every one of them (PostgreSQL included) and exits 0."""
    command = [str(BIN / "edgeward"), "demo-ha", "--dir", str(tmp_path / "demo"),
               "--mqtt", f"{mqtt_broker.host}:{mqtt_broker.port}"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children: list[psutil.Process] = []
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops the demo" in line or time.monotonic() > deadline:
                break
        out = "".join(lines)
        assert "Ctrl-C stops the demo" in out, out
        assert re.search(r"replica  r0 https://127\.0\.0\.1:\d+ \(API\)", out), out
        assert re.search(r"replica  r1 https://127\.0\.0\.1:\d+ \(API\)", out), out
        balancer = re.search(
            r"haproxy  https://127\.0\.0\.1:\d+ \(API\), wss://127\.0\.0\.1:(\d+)", out
        )
        assert balancer, out
        assert f"edge     node edge-1 via wss://127.0.0.1:{balancer[1]}" in out
        assert "edge-1 cache has default/thermo target=21" in out
        assert re.search(r"default/thermo reported .*\(through the balancer\)", out), out
        assert re.search(r"session  edge-1 is connected to r[01]", out), out
        pg_port = int(re.search(r"postgres postgresql\+psycopg://\S+@127\.0\.0\.1:(\d+)/", out)[1])
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert names.count("cloudhub.main") == 2 and "haproxy" in names and "edgecore" in names

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
        assert not answers(pg_port), "the demo left its PostgreSQL running"
        assert not answers(int(balancer[1])), "the demo left its HAProxy running"
    finally:
        leftovers = children + ([psutil.Process(proc.pid)] if proc.poll() is None else [])
        for process in leftovers:
            with contextlib.suppress(psutil.Error):
                process.kill()  # a failed run leaves nothing behind
