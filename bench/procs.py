"""Real processes for the benchmarks: hub, edges, Mosquitto, and how to measure them.

The daemons are run as ``python -m cloudhub.main`` / ``python -m edgecore.main``
from this checkout (PYTHONPATH points at it), so a benchmark measures the
working tree even when the virtualenv's editable install is stale. Process
handling and Mosquitto come from tests/support.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from tests.support.mosquitto import Mosquitto
from tests.support.postgres import free_port
from tests.support.procs import Edge, Hub, Process, wait_for

ROOT = Path(__file__).resolve().parent.parent
MODULES = {"cloudhub": "cloudhub.main", "edgecore": "edgecore.main"}
NS = "/api/v1/namespaces/default"

__all__ = [
    "ROOT",
    "Api",
    "BenchEdge",
    "BenchHub",
    "Mosquitto",
    "child_env",
    "cpu_share",
    "free_port",
    "raise_nofile",
    "rss",
    "wait_for",
    "workdir",
]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process that imports this checkout."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
        **extra,
    }


class _PyModule(Process):
    """A daemon run as ``python -m <package>.main`` instead of its console script."""

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", MODULES[self.name], *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=ROOT,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


#: Set (python -m bench --insecure) to measure without TLS, for the TLS-cost comparison.
INSECURE_ENV = "EDGEWARD_BENCH_INSECURE"


def tls_on() -> bool:
    return not os.environ.get(INSECURE_ENV)


class BenchHub(Hub, _PyModule):
    """A cloudhub on free ports (``restart`` keeps them), with read access to its database.

    With TLS (the default), it is a hub after ``cloudhub init``; nodes get their
    credentials from :meth:`enroll` — the CA signs and the hub records them, as a
    join would, without a token round trip per node.
    """

    def __init__(self, data_dir: Path, *extra: str) -> None:
        super().__init__(data_dir, "--log-level", "warning", *extra, secure=tls_on())

    def api_client(self) -> Api:
        return Api(self.api, self.token, self.ca if self.secure else None)

    def enroll(self, names: list[str], directory: Path, files: str = "fleet") -> None:
        """Certificates for ``names``, recorded by the hub (before it starts, or while it
        runs). ``files="fleet"``: one shared key and ``<name>.crt`` per node in
        ``directory`` (a fleet simulator's); ``"edge"``: edgecore's ``pki/`` layout."""
        from cloudhub.pki import Authority, pki_paths
        from edgeward import certs

        authority = Authority(pki_paths(self.data_dir))
        directory.mkdir(parents=True, exist_ok=True)
        key = certs.new_private_key()
        key_pem = certs.private_key_pem(key)
        rows = []
        for name in names:
            signed = authority.sign_node(certs.node_csr(key, name), name, 30)
            rows.append((signed.serial, name, signed.not_after))
            cert_name = "node.crt" if files == "edge" else f"{name}.crt"
            (directory / cert_name).write_bytes(signed.pem)
        certs.write_private(directory / "node.key", key_pem)
        (directory / "ca.crt").write_bytes(authority.ca_pem)
        conn = sqlite3.connect(self.data_dir / "hub.db", timeout=30)
        try:
            with conn:
                conn.executemany(
                    "INSERT INTO node_certs (serial, node, not_after, revoked) VALUES (?,?,?,0)",
                    rows,
                )
        finally:
            conn.close()

    def enroll_edge(self, edge_dir: Path, node: str) -> None:
        if self.secure:
            self.enroll([node], edge_dir / "pki", files="edge")

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.data_dir / 'hub.db'}?mode=ro", uri=True, timeout=10)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = self.db()
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def head(self) -> int:
        return int(self.query("SELECT head FROM revision")[0][0])


class BenchEdge(Edge, _PyModule):
    """An edgecore talking to ``hub`` and (with ``mqtt``) to a Mosquitto."""

    def __init__(
        self, data_dir: Path, node: str, hub: str, mqtt: Mosquitto | None = None, *extra: str
    ) -> None:
        broker = ["--mqtt", f"{mqtt.host}:{mqtt.port}"] if mqtt else ["--no-mqtt"]
        super().__init__(data_dir, node, hub, *broker, "--log-level", "warning", *extra)

    def set_hub(self, url: str) -> None:
        """Point the edge at ``url`` (known once the hub listens); ws:// needs --insecure."""
        self.args[self.args.index("--hub") + 1] = url
        if url.startswith("ws://") and "--insecure" not in self.args:
            self.args.append("--insecure")


@contextmanager
def workdir(name: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"edgeward-bench-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def rss(pid: int) -> int:
    """Resident set size in bytes."""
    return int(psutil.Process(pid).memory_info().rss)


def cpu_seconds(pid: int) -> float:
    """CPU time ``pid`` has used so far, user and system, in seconds."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def cpu_share(pid: int, seconds: float) -> float:
    """CPU used by ``pid`` over a window, as a share of one core (1.0 = one core busy)."""
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    start = time.monotonic()
    time.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    return used / (time.monotonic() - start)


class Api:
    """The hub's REST API over kept-alive HTTP(S) connections (one per thread)."""

    def __init__(self, base: str, token: str = "", ca: Path | None = None) -> None:
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.tls = ssl.create_default_context(cafile=str(ca)) if parts.scheme == "https" else None
        self._local = threading.local()

    def new_connection(self, timeout: float = 60) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.tls
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.new_connection()
        return conn

    def request(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(2):
            conn = self._conn()
            try:
                conn.request(
                    method, path, body=data, headers={"Content-Type": ctype, **self.headers}
                )
                resp = conn.getresponse()
                raw = resp.read()
                return resp.status, json.loads(raw or b"null")
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def ok(self, method: str, path: str, body: Any = None, ctype: str = "application/json") -> Any:
        status, reply = self.request(method, path, body, ctype)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {reply}")
        return reply

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


def model(name: str, properties: int) -> dict[str, Any]:
    """A DeviceModel with ``properties`` FLOAT properties p0, p1, … (p0 is ``temperature``)."""
    props = [{"name": prop_name(i), "type": "FLOAT", "accessMode": "ReadWrite"}
             for i in range(properties)]  # fmt: skip
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": name},
        "spec": {"properties": props},
    }


def prop_name(i: int) -> str:
    return "temperature" if i == 0 else f"p{i}"


def device(
    name: str, node: str, model_name: str, properties: int, desired: str | None = None
) -> dict[str, Any]:
    props: list[dict[str, Any]] = []
    for i in range(properties):
        prop: dict[str, Any] = {"name": prop_name(i)}
        if desired is not None:
            prop["desired"] = {"value": desired}
        props.append(prop)
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name},
        "spec": {"deviceModelRef": {"name": model_name}, "nodeName": node, "properties": props},
    }


def create_many(api: Api, bodies: list[dict[str, Any]], path: str, threads: int = 4) -> int:
    """POST every body (a few at a time); returns the highest resourceVersion written."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        written = list(pool.map(lambda b: api.ok("POST", path, b), bodies))
    return max(int(w["metadata"]["resourceVersion"]) for w in written)


def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> float | None:
    """Monotonic time when ``predicate`` first held, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return time.monotonic()
        except Exception:
            pass
        time.sleep(interval)
    return None
