"""A private HAProxy in front of hub replicas, as docs/ha.md deploys one.

:func:`balanced` starts one (:mod:`edgeward.balancer`: TCP mode on both ports, so TLS
and the nodes' client certificates reach the replicas) on free loopback ports in a
temporary directory, and yields a :class:`Front`: a :class:`Hub` whose ``api`` and
``edge`` are the balancer's frontends, so ``request``, ``set_desired`` and edges work
through it as through one hub. The hubs' server certificate names 127.0.0.1, which is
where the balancer listens too, so clients verify the replica behind it by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeward.balancer import Balancer, Replica, start_balancer
from tests.support.procs import Hub


def _host_port(url: str) -> str:
    return url.split("://", 1)[1]


class Front(Hub):
    """The replicas behind the balancer, addressed as one hub (never started itself)."""

    def __init__(self, balancer: Balancer, replicas: list[Hub]) -> None:
        first = replicas[0]
        super().__init__(first.data_dir)  # not secure here: no second ``cloudhub init``
        self.balancer = balancer
        self.replicas = replicas
        self.secure = first.secure
        self.token = first.token
        self.ca = first.ca
        self.api = balancer.api_url
        self.edge = balancer.edge_url

    def start(self) -> None:
        raise TypeError("the balancer is started by balanced(), its replicas by their owner")


@contextmanager
def balanced(tmp_path: Path, replicas: list[Hub]) -> Iterator[Front]:
    """HAProxy in front of the running ``replicas`` (every one checked up); stopped after."""
    secure = replicas[0].secure
    balancer = start_balancer(
        tmp_path / "haproxy",
        [Replica(f"r{i}", _host_port(h.api), _host_port(h.edge)) for i, h in enumerate(replicas)],
        ca=replicas[0].ca if secure else None,
    )
    try:
        yield Front(balancer, replicas)
    finally:
        status = balancer.stop()
        assert status is not None
