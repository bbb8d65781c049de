"""A real Mosquitto on a free port in a temporary directory, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.postgres import free_port


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError(
            "mosquitto is not installed: run 'make test' as root, or install the mosquitto package"
        )
    return found


class Mosquitto:
    """``start()`` it, connect to ``host:port``; ``restart()`` keeps the port."""

    def __init__(self, port: int | None = None, extra_config: str = "") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="edgeward-mqtt-"))
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            "persistence false\n"
            f"log_dest file {self.dir / 'mosquitto.log'}\n"
            # as root it would switch to the mosquitto user, which cannot read test files
            f"{'user root' if os.geteuid() == 0 else ''}\n"
            f"{self.extra_config}"
        )
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def running(extra_config: str = "") -> Iterator[Mosquitto]:
    """A Mosquitto of its own (``extra_config`` appended to its config) for a block."""
    broker = Mosquitto(extra_config=extra_config)
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()
