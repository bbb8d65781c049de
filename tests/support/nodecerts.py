"""Node credentials for tests against a secure hub: joined through the hub's real join API,
or forged with a CA of the test's own."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudhub.pki import Authority, init_pki, pki_paths
from edgeward import certs
from tests.support.procs import Hub


@dataclass(frozen=True)
class NodeCert:
    """A node's key and certificate, and the CA that verifies the hub, as edgecore keeps them
    (``<data_dir>/pki/{ca.crt,node.crt,node.key}``)."""

    node: str
    directory: Path

    @property
    def cert(self) -> Path:
        return self.directory / "node.crt"

    @property
    def key(self) -> Path:
        return self.directory / "node.key"

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    def context(self) -> ssl.SSLContext:
        """A client TLS context presenting this certificate and verifying the hub."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def new_token(hub: Hub, **fields: Any) -> dict[str, Any]:
    """POST /api/v1/tokens as the admin: the answer, with ``token`` and ``id``."""
    status, body = hub.request("POST", "/api/v1/tokens", {"ttlSeconds": 600, **fields})
    assert status == 201, body
    return body


def new_csr(directory: Path, node: str) -> str:
    """A fresh P-256 key in ``directory``/node.key and its CSR (PEM)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = certs.new_private_key()
    certs.write_private(directory / "node.key", certs.private_key_pem(key))
    return certs.node_csr(key, node).decode("ascii")


def join_request(hub: Hub, token: str, node: str, csr: str) -> tuple[int, Any]:
    """POST /api/v1/join, with no bearer token (a gateway has none): (status, body)."""
    return hub.request("POST", "/api/v1/join", {"token": token, "node": node, "csr": csr}, token="")


def join(hub: Hub, node: str, data_dir: Path) -> NodeCert:
    """Join ``node`` with a fresh token bound to it; its credentials land where edgecore
    looks for them in ``data_dir``."""
    directory = data_dir / "pki"
    status, body = join_request(
        hub, new_token(hub, node=node)["token"], node, new_csr(directory, node)
    )
    assert status == 201, body
    (directory / "node.crt").write_text(body["certificate"])
    (directory / "ca.crt").write_text(body["ca"])
    return NodeCert(node, directory)


def foreign(hub: Hub, node: str, directory: Path) -> NodeCert:
    """A node certificate for ``node``, just like the hub's own but signed by another CA
    (made in ``directory``); its ca.crt is the hub's, so the client verifies the hub."""
    init_pki(pki_paths(directory), ["localhost"], ["127.0.0.1"])
    signed = Authority(pki_paths(directory)).sign_node(
        new_csr(directory, node).encode(), node, days=1
    )
    (directory / "node.crt").write_bytes(signed.pem)
    (directory / "ca.crt").write_bytes(hub.ca.read_bytes())
    return NodeCert(node, directory)
