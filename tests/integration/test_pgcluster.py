"""The throwaway PostgreSQL cluster that the tests, `edgeward demo-ha` and the bench start
(edgeward/pgcluster.py)."""

from __future__ import annotations

import socket

import pytest

from edgeward.pgcluster import _pg_bin
from tests.support.postgres import PostgresCluster


def test_a_restart_without_a_log_file_returns_and_a_failure_says_why() -> None:
    """A server pg_ctl starts without ``-l`` inherits pg_ctl's output: read through a pipe,
    the wait for it never ended (120 s, then a time-out)."""
    cluster = PostgresCluster()
    cluster.start()
    try:
        data = str(cluster.dir / "data")
        cluster._run(_pg_bin("pg_ctl"), "-D", data, "-w", "-t", "60", "restart")
        socket.create_connection(("127.0.0.1", cluster.port), timeout=5).close()
        with pytest.raises(RuntimeError, match=r"pg_ctl failed: .*no-such-directory"):
            cluster._run(_pg_bin("pg_ctl"), "-D", "/no-such-directory", "status")
    finally:
        cluster.stop()
