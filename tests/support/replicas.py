"""Several cloudhub replicas on one database, as an HA deployment runs them (docs/ha.md).

Replicas share the database and, when secure, one PKI: ``cloudhub init`` runs once, for
the first replica, with the shared database (so the admin token is in it), and the others
get a copy of its ``pki/`` directory and ``admin.yaml``, as an operator copies them to
each replica's machine.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.support.procs import BIN, Hub


def replica_hubs(
    root: Path, database: str, count: int, *extra: str, secure: bool = False
) -> list[Hub]:
    """``count`` hubs (not started) on ``database``, with data dirs ``root/r0``, ``root/r1`` …"""
    hubs = []
    for index in range(count):
        data_dir = root / f"r{index}"
        data_dir.mkdir(parents=True, exist_ok=True)
        if secure and index == 0:
            subprocess.run(
                [str(BIN / "cloudhub"), "init", "--data-dir", str(data_dir),
                 "--database", database, "--ip", "127.0.0.1"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        elif secure:
            shutil.copytree(root / "r0" / "pki", data_dir / "pki")
            shutil.copy2(root / "r0" / "admin.yaml", data_dir / "admin.yaml")
        hub = Hub(data_dir, "--database", database, *extra)
        if secure:
            hub.secure = True
            hub.token = yaml.safe_load((data_dir / "admin.yaml").read_text())["token"]
        hubs.append(hub)
    return hubs


@contextmanager
def running_replicas(
    root: Path, database: str, count: int, *extra: str, secure: bool = False
) -> Iterator[list[Hub]]:
    """``count`` replicas started on ``database``; each is killed at the end."""
    hubs = replica_hubs(root, database, count, *extra, secure=secure)
    try:
        for hub in hubs:
            hub.start()
        yield hubs
    finally:
        for hub in hubs:
            hub.kill()
