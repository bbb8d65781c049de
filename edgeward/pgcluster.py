"""A throwaway PostgreSQL cluster: initdb + pg_ctl on a free port in a temporary directory.

For the tests (tests/support/postgres.py) and ``edgeward demo-ha``, never for keeping
data: it runs with ``fsync=off`` and trusts every local connection. PostgreSQL refuses
to run as root, so as root the cluster runs as the ``postgres`` system user (created by
Debian's server package).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: run 'make test' as root, "
            "or install the postgresql package"
        )
    return candidates[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """``start()`` it for the URL of its ``postgres`` database; ``stop()`` removes it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="edgeward-pg-"))
        self.port = free_port()
        self._user: str | None = None
        self._demote: dict[str, int] = {}

    def _run(self, *args: str) -> None:
        """Run a PostgreSQL tool (as the ``postgres`` user when root); RuntimeError with its
        output when it fails. The output goes to a file, not a pipe: a server that
        ``pg_ctl`` starts without ``-l`` inherits its output, and a pipe would then stay
        open until the server stops, so waiting for its end would hang."""

        def drop() -> None:
            if self._demote:
                os.setgid(self._demote["gid"])
                os.setuid(self._demote["uid"])

        with tempfile.TemporaryFile("w+") as output:
            result = subprocess.run(
                list(args),
                preexec_fn=drop,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=120,
                cwd="/",
            )
            if result.returncode != 0:
                output.seek(0)
                raise RuntimeError(f"{args[0]} failed: {output.read().strip()}")

    def start(self) -> str:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self._demote = {"uid": pw.pw_uid, "gid": pw.pw_gid}
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._user = "postgres"
        else:
            self._user = pwd.getpwuid(os.geteuid()).pw_name
        data = self.dir / "data"
        self._run(
            _pg_bin("initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            self._user,
            "-E",
            "UTF8",
            "--no-sync",
        )
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200",
            "start",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        return self.url("postgres")

    def create_database(self, name: str) -> str:
        self._run(
            _pg_bin("createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            str(self._user),
            name,
        )
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self._user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            self._run(
                _pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"
            )
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
