"""The HAProxy configuration in front of hub replicas (edgeward/balancer.py, docs/ha.md)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from cloudhub.pki import init_pki, pki_paths
from edgeward.balancer import Layout, Replica, haproxy_binary, render

REPLICAS = (Replica("r0", "10.0.0.10:10002", "10.0.0.10:10000"),
            Replica("r1", "10.0.0.11:10002", "10.0.0.11:10000"))  # fmt: skip


def layout(ca: Path | None = Path("/etc/haproxy/ca.crt")) -> Layout:
    return Layout(REPLICAS, "127.0.0.1", 10002, 10000, 8404, ca)


def section(config: str, name: str) -> str:
    """The lines of one section (``backend edge``), up to the next blank line."""
    found = re.search(rf"^{name}\n((?:    .*\n)+)", config, re.M)
    assert found, f"no {name} in:\n{config}"
    return found[1]


def test_both_ports_pass_tls_through_and_edges_go_to_the_emptiest_replica() -> None:
    """TCP mode everywhere the hub listens (mutual TLS reaches the replica), leastconn on
    the edge port, and no idle timeout short enough to cut a websocket between pings."""
    config = render(layout())
    assert "    mode tcp\n" in section(config, "defaults")
    assert "mode http" not in section(config, "backend api")
    assert "balance leastconn" in section(config, "backend edge")
    assert "balance roundrobin" in section(config, "backend api")
    for timeout in ("client", "server", "tunnel"):
        assert f"    timeout {timeout} 1h\n" in config
    assert "bind 127.0.0.1:10002" in section(config, "frontend api")
    assert "bind 127.0.0.1:10000" in section(config, "frontend edge")


def test_each_replica_has_one_tls_check_that_its_edge_server_follows() -> None:
    """/healthz over TLS verified with the fleet's CA; the edge server tracks it and cuts
    its sessions when the replica goes down."""
    config = render(layout())
    api, edge = section(config, "backend api"), section(config, "backend edge")
    for r in REPLICAS:
        assert f"server {r.name} {r.api} check check-ssl verify required ca-file " in api
        assert (
            f"server {r.name} {r.edge} track api/{r.name} on-marked-down shutdown-sessions" in edge
        )
    assert "uri /healthz" in api
    assert "check-ssl" not in render(layout(ca=None)), "plain replicas are checked in plain"


def test_a_balancer_needs_a_replica() -> None:
    with pytest.raises(ValueError, match="at least one replica"):
        render(Layout((), "127.0.0.1", 1, 2, 3))


@pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_configuration(tmp_path: Path) -> None:
    """Debian's HAProxy itself checks what we render (``haproxy -c``)."""
    paths = pki_paths(tmp_path)
    init_pki(paths, ["localhost"], ["127.0.0.1"])  # a real CA: haproxy loads the file
    ca = paths.ca_cert
    config = tmp_path / "haproxy.cfg"
    config.write_text(render(layout(ca)))
    checked = subprocess.run(
        [str(haproxy_binary()), "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
