"""Real cloudhub and edgecore processes for integration tests."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # the thing polled may not exist yet
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}"
        + (f" (last error: {last_error!r})" if last_error else "")
    )


class Process:
    """A daemon started from its console script, its output kept in a log file."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        #: Added to the environment it starts with (e.g. NOTIFY_SOCKET).
        self.env: dict[str, str] = {}
        #: The file descriptor its output goes to instead of the log file.
        self.output: int | None = None
        #: A command it runs under (a sandbox), its arguments before the daemon's.
        self.wrapper: list[str] = []

    def start(self) -> None:
        log = open(self.log_path, "ab") if self.output is None else None  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            [*self.wrapper, str(BIN / self.name), *self.args],
            stdout=log or self.output,
            stderr=subprocess.STDOUT,
            env=env,
        )
        if log is not None:
            log.close()  # the child has its own copy

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash or power cut)."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM and wait: a clean shutdown. Returns the exit status."""
        assert self.proc is not None
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(
                    f"{self.name} did not stop within {timeout}s:\n{self.log()}"
                ) from None
        return self.proc.returncode


class Hub(Process):
    """A cloudhub on free ports; ``restart`` keeps its ports so edges can come back.

    ``secure``: run ``cloudhub init`` first and serve TLS with tokens (requests
    carry the admin token and verify the hub's CA); else the hub runs --insecure.
    """

    def __init__(
        self, data_dir: Path, *extra: str, secure: bool = False, address: str = "127.0.0.1"
    ) -> None:
        self.data_dir = data_dir
        self.extra = list(extra)
        self.secure = secure
        #: where a secure hub listens (and what its server certificate names)
        self.address = address
        self.api_port = 0
        self.edge_port = 0
        self.token = ""
        self.ca = data_dir / "pki" / "ca.crt"
        #: seconds :meth:`request` waits for an answer
        self.request_timeout = 10.0
        super().__init__("cloudhub", [], data_dir.parent / f"{data_dir.name}.log")
        if secure:
            subprocess.run(
                [str(BIN / "cloudhub"), "init", "--data-dir", str(data_dir), "--ip", address],
                check=True,
                capture_output=True,
                timeout=60,
            )
            admin = yaml.safe_load((data_dir / "admin.yaml").read_text())
            self.token = admin["token"]

    def start(self) -> None:
        addr_file = self.data_dir / "cloudhub.json"
        if addr_file.exists():
            addr_file.unlink()
        self.args = [
            "--data-dir",
            str(self.data_dir),
            "--api-port",
            str(self.api_port),
            "--edge-port",
            str(self.edge_port),
            # a secure hub listens on every interface by default: tests keep to loopback,
            # where the server certificate's 127.0.0.1 matches the URLs below
            *(["--api-bind", self.address, "--edge-bind", self.address] if self.secure else []),
            *([] if self.secure else ["--insecure"]),
            *self.extra,
        ]
        super().start()

        def listening() -> Any:
            if not self.running:
                return "exited"
            return json.loads(addr_file.read_text())

        addr = wait_for(listening, 20, "cloudhub to listen")
        if addr == "exited":
            assert self.proc is not None
            raise AssertionError(
                f"cloudhub exited with status {self.proc.returncode} before it listened"
            )
        self.api = addr["api"]
        self.edge = addr["edge"]
        self.api_port = int(self.api.rsplit(":", 1)[1])
        self.edge_port = int(self.edge.rsplit(":", 1)[1])

    def restart(self, kill: bool = True) -> None:
        self.kill() if kill else self.stop()
        self.start()

    def tls(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca)) if self.secure else None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        token: str | None = None,
    ) -> tuple[int, Any]:
        """An HTTP request to the REST API: (status, parsed JSON body).

        A secure hub gets the admin token unless ``token`` is given ("" sends none).
        """
        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        headers = {"Content-Type": content_type}
        token = self.token if token is None else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.api + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(
                req, timeout=self.request_timeout, context=self.tls()
            ) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")


def set_desired(hub: Hub, path: str, **values: str) -> None:
    """Set desired values on the Device at ``path`` as ``edgeward twin set`` does (read,
    write back with the revision read, again on a 409: a report wrote in between)."""
    from edgeward.cli.twin import with_desired

    for _ in range(10):
        status, body = hub.request("PUT", path, with_desired(hub.request("GET", path)[1],
                                                             list(values.items())))  # fmt: skip
        if status == 200:
            return
        assert status == 409, body
    raise AssertionError(f"{path} kept changing")


class Edge(Process):
    """An edgecore; its SQLite cache is read directly by the tests."""

    def __init__(self, data_dir: Path, node: str, hub: str, *extra: str) -> None:
        self.data_dir = data_dir
        self.node = node
        plain = ["--insecure"] if hub.startswith("ws://") else []
        super().__init__(
            "edgecore",
            ["--node", node, "--hub", hub, "--data-dir", str(data_dir), *plain, *extra],
            data_dir.parent / f"{data_dir.name}.log",
        )

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.data_dir / 'edge.db'}?mode=ro", uri=True, timeout=5)

    def revision(self) -> int:
        with self.db() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
            return int(row[0]) if row else 0

    def cached(self, kind: str = "Device") -> dict[tuple[str, str], dict[str, Any]]:
        """The objects of ``kind`` in the edge's cache, keyed by (namespace, name)."""
        conn = self.db()
        try:
            rows = conn.execute(
                "SELECT namespace, name, body FROM objects WHERE kind = ?", (kind,)
            ).fetchall()
        finally:
            conn.close()
        return {(ns, name): json.loads(body) for ns, name, body in rows}
