"""A private HAProxy in front of several cloudhub replicas (docs/ha.md).

Both ports are balanced in TCP mode, so TLS stays end to end: each replica
terminates TLS for its API with its own server certificate, and on the edge port
the node's client certificate reaches the replica that names the session after
it. :func:`render` is the configuration, a pure function of :class:`Layout`;
:func:`start_balancer` writes it to a work directory and runs the ``haproxy``
binary in the foreground (``-db``) on free loopback ports; :meth:`Balancer.stop`
ends it. ``make demo-ha`` and the HA tests use it; docs/ha.md shows the same
configuration for a real deployment.

Choices, each for a reason:

- the edge port balances ``leastconn``: websockets live for days, so a new one
  goes to the replica holding the fewest, which is what spreads edges again
  after a replica comes back; the API balances ``roundrobin`` (short requests);
- one health check per replica: ``GET /healthz`` on its API port, over TLS
  verified with the fleet's CA. /healthz reads the database, so a replica that
  lost it is taken out. The edge server ``track``\\s it: probing the edge port
  itself would only add refused TLS handshakes to the hub's counters;
- a replica marked down has its edge sessions cut (``on-marked-down
  shutdown-sessions``): a hung replica would otherwise keep its edges, silent;
- ``option redispatch 1``: a connection refused by a replica that just died
  (before the checks mark it down) is retried on another one at once;
- idle timeouts of an hour: the hub pings each edge every 20 s and finds dead
  links itself; the balancer must never be what cuts a quiet websocket or watch.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from edgeward.brokers import free_port
from edgeward.errors import EdgewardError

START_TIMEOUT = 30.0


class BalancerError(EdgewardError):
    """HAProxy is missing, refused its configuration or did not start (``reason`` says)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Replica:
    """One cloudhub replica: where its API and edge ports listen (``host:port``)."""

    name: str
    api: str
    edge: str


@dataclass(frozen=True)
class Layout:
    """Everything the configuration depends on."""

    replicas: tuple[Replica, ...]
    host: str
    api_port: int
    edge_port: int
    stats_port: int
    #: the fleet's CA, to verify the replicas' /healthz; None: the replicas serve plain HTTP
    ca: Path | None = None
    #: connections at most; None: HAProxy's own, derived from its file descriptor limit
    #: (it needs two per connection, and refuses to start with a maxconn it cannot keep)
    maxconn: int | None = None
    #: seconds between health checks of each replica
    check_interval: float = 1.0


def render(layout: Layout) -> str:
    """The HAProxy configuration for ``layout`` (HAProxy 2.6, Debian 12's)."""
    if not layout.replicas:
        raise ValueError("a balancer needs at least one replica")
    inter = f"{int(layout.check_interval * 1000)}ms"
    tls = f" check-ssl verify required ca-file {layout.ca}" if layout.ca is not None else ""
    lines = [
        "# written by edgeward.balancer; regenerated on every start",
        "global",
        "    log stderr format raw local0 info",
        *([f"    maxconn {layout.maxconn}"] if layout.maxconn else []),
        "",
        "defaults",
        "    mode tcp",
        "    log global",
        "    option tcplog",
        "    option dontlognull",
        "    retries 3",
        "    option redispatch 1",
        "    timeout connect 5s",
        "    timeout check 5s",
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout tunnel 1h",
        "    timeout client-fin 30s",
        "    timeout server-fin 30s",
        f"    default-server inter {inter} fall 2 rise 2",
        "",
        "frontend api",
        f"    bind {layout.host}:{layout.api_port}",
        "    default_backend api",
        "",
        "backend api",
        "    balance roundrobin",
        "    option httpchk",
        "    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host localhost",
        "    http-check expect status 200",
    ]
    lines += [f"    server {r.name} {r.api} check{tls}" for r in layout.replicas]
    lines += [
        "",
        "frontend edge",
        f"    bind {layout.host}:{layout.edge_port}",
        "    default_backend edge",
        "",
        "backend edge",
        "    balance leastconn",
    ]
    lines += [
        f"    server {r.name} {r.edge} track api/{r.name} on-marked-down shutdown-sessions"
        for r in layout.replicas
    ]
    lines += [
        "",
        "listen stats",
        "    mode http",
        f"    bind {layout.host}:{layout.stats_port}",
        "    timeout client 30s",
        "    no log",
        "    stats enable",
        "    stats uri /",
        "    stats refresh 2s",
        "",
    ]
    return "\n".join(lines)


def haproxy_binary() -> str | None:
    """The ``haproxy`` binary: on PATH, else where Debian puts it (/usr/sbin)."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


@dataclass
class Balancer:
    """A running HAProxy; ``api_url``, ``edge_url`` and ``stats_url`` are its frontends."""

    layout: Layout
    workdir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "haproxy.log"

    @property
    def api_url(self) -> str:
        scheme = "https" if self.layout.ca else "http"
        return f"{scheme}://{self.layout.host}:{self.layout.api_port}"

    @property
    def edge_url(self) -> str:
        scheme = "wss" if self.layout.ca else "ws"
        return f"{scheme}://{self.layout.host}:{self.layout.edge_port}"

    @property
    def stats_url(self) -> str:
        return f"http://{self.layout.host}:{self.layout.stats_port}/"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def servers(self) -> dict[tuple[str, str], dict[str, str]]:
        """HAProxy's view of each (backend, server): its ``status`` (UP, DOWN …) and
        ``scur`` (connections open now), from the stats page's CSV."""
        with urllib.request.urlopen(self.stats_url + ";csv", timeout=5) as resp:
            text = resp.read().decode().lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            (row["pxname"], row["svname"]): row
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def up(self, backend: str = "api") -> list[str]:
        """The servers of ``backend`` that HAProxy sends connections to now."""
        return [
            name
            for (pxname, name), row in self.servers().items()
            if pxname == backend and row["status"].startswith("UP")
        ]

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (HAProxy's hard stop: every connection closes) and wait; safe twice."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode

    def __enter__(self) -> Balancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_balancer(
    workdir: Path,
    replicas: list[Replica],
    *,
    ca: Path | None = None,
    host: str = "127.0.0.1",
    api_port: int = 0,
    edge_port: int = 0,
    wait_up: bool = True,
) -> Balancer:
    """Start HAProxy in front of ``replicas`` on ``host``: its API and edge frontends on
    ``api_port`` and ``edge_port`` (0: a free port; give them to start the replicas with
    ``edge_advertise`` already pointing here), its stats page on a free port; its config
    and log go in ``workdir``. With ``wait_up``, return once every replica passed its check.

    Raises BalancerError when haproxy is missing, rejects the configuration or exits."""
    binary = haproxy_binary()
    if binary is None:
        raise BalancerError(
            "haproxy is not installed (sudo apt-get install haproxy, or scripts/system-deps)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    layout = Layout(
        tuple(replicas), host, api_port or free_port(), edge_port or free_port(), free_port(), ca
    )
    config = workdir / "haproxy.cfg"
    config.write_text(render(layout))
    checked = subprocess.run(
        [binary, "-c", "-q", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    if checked.returncode != 0:
        raise BalancerError(f"haproxy refused {config}: {_tail(checked.stderr + checked.stdout)}")
    balancer = Balancer(layout, workdir)
    with open(balancer.log_path, "ab") as log:
        balancer.process = subprocess.Popen(
            [binary, "-db", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C for the demo is not for the balancer
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not balancer.running:
            raise BalancerError(
                f"haproxy exited with status {balancer.process.returncode}: "
                + _tail(balancer.log_path.read_text(errors="replace"))
            )
        try:
            up = balancer.up()
        except OSError:
            up = None  # not listening yet
        if up is not None and (not wait_up or len(up) == len(replicas)):
            return balancer
        time.sleep(0.1)
    balancer.stop()
    raise BalancerError(
        f"haproxy did not see every replica up within {START_TIMEOUT:g}s; see {balancer.log_path}"
    )


def _tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:]) or "no output"
