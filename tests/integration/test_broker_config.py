"""The Mosquitto config we ship: loopback only, and a real Mosquitto accepts it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.mosquitto import mosquitto_binary
from tests.support.postgres import free_port

SHIPPED = Path(__file__).resolve().parents[2] / "packaging" / "mosquitto" / "edgeward.conf"


def listeners(text: str) -> list[list[str]]:
    lines = (line.split("#", 1)[0].split() for line in text.splitlines())
    return [words for words in lines if words and words[0] in ("listener", "port", "bind_address")]


def test_the_shipped_broker_listens_on_loopback_only() -> None:
    assert listeners(SHIPPED.read_text()) == [["listener", "1883", "127.0.0.1"]]


def outward_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
        address = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


def test_a_real_mosquitto_serves_the_shipped_config_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    text = SHIPPED.read_text().replace("listener 1883 ", f"listener {port} ")
    conf.write_text(
        text
        + f"log_dest file {tmp_path / 'log'}\npersistence false\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "log").read_text()
                assert time.monotonic() < deadline, "mosquitto did not listen"
                time.sleep(0.05)
        address = outward_address()
        if address is None:
            pytest.skip("this machine has no address but loopback to try from")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, port), timeout=5).close()
    finally:
        proc.kill()
        proc.wait(10)
