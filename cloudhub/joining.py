"""Node join: a token and a CSR in, a node certificate and the edge endpoint out.

The gateway fetched the CA from ``/api/v1/join/ca`` over an unverified connection
and checked it against the hash its token pins, so it already trusts this hub
when it sends the token. The hub checks, in one transaction: the token (known,
not revoked, not expired, not used if single-use, a node or admin token, bound
to this node if bound at all), that the name is not taken by a node connected
now, and the CSR (ECDSA P-256, signed by its key). It signs with the node name
from the request, revokes the certificates of the node's earlier joins (a
replaced gateway's key stops working), records the new serial, and marks a
single-use token used — so two joins racing with one token cannot both succeed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from cloudhub import credentials
from cloudhub.pki import Authority
from cloudhub.schema import node_leases
from cloudhub.store import Store
from edgeward.certs import CertificateError
from edgeward.kinds import dns_subdomain_problem

#: What a gateway is told to do when its token cannot be used.
NEW_TOKEN_HINT = "ask an admin for a new one ('edgeward token create --node NAME')"


class JoinRefused(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class JoinSettings:
    node_cert_days: float
    edge_port: int
    advertise: tuple[str, ...]  # edge endpoints to announce; empty: wss://<host asked>:<port>


class JoinService:
    def __init__(
        self,
        store: Store,
        authority: Authority,
        settings: JoinSettings,
        is_live: Callable[[str], bool],
    ) -> None:
        self.store = store
        self.authority = authority
        self.settings = settings
        self.is_live = is_live

    def join(self, token: str, node: str, csr: str, host: str) -> dict[str, Any]:
        """The join answer; JoinRefused with the code, the reason and one line to show."""
        try:
            parsed = credentials.parse_token(token)
        except credentials.TokenRefused as exc:
            raise JoinRefused(401, "malformed", str(exc)) from None
        if parsed.ca_hash is not None and parsed.ca_hash != self.authority.ca_hash:
            raise JoinRefused(
                401, "wrong-ca", "the token pins another CA: it was made for another hub"
            )
        problem = dns_subdomain_problem(node)
        if problem is not None:
            raise JoinRefused(422, "invalid-name", f'node name "{node}" {problem}')
        now = time.time()
        with self.store.writing() as tx:
            try:
                identity = credentials.check_token(tx.conn, token, now)
            except credentials.TokenRefused as exc:
                raise JoinRefused(401, exc.reason, f"{exc}; {NEW_TOKEN_HINT}") from None
            if identity.role not in ("node", "admin"):
                raise JoinRefused(
                    403,
                    "wrong-role",
                    f"a {identity.role} token cannot join nodes; {NEW_TOKEN_HINT}",
                )
            if identity.node is not None and identity.node != node:
                raise JoinRefused(
                    403,
                    "wrong-node",
                    f"token {parsed.id} is bound to node {identity.node}, not {node}; "
                    f"join as {identity.node} or {NEW_TOKEN_HINT}",
                )
            if self.is_live(node) or _lease_ready(tx.conn, node):
                raise JoinRefused(
                    409,
                    "node-live",
                    f"node {node} is connected to the hub now; choose another name, or stop "
                    f"that node, wait until it is NotReady (or 'edgeward delete node {node}') "
                    "and join again",
                )
            try:
                signed = self.authority.sign_node(
                    csr.encode("utf-8", "replace"), node, self.settings.node_cert_days
                )
            except CertificateError as exc:
                raise JoinRefused(400, "bad-csr", str(exc)) from None
            # a join makes this key the node: certificates of an earlier join (a replaced or
            # lost gateway) stop working; a renewal, by contrast, keeps the old one valid
            credentials.revoke_node(tx.conn, node)
            credentials.record_certificate(tx.conn, signed.serial, node, signed.not_after)
            single = credentials.is_single_use(tx.conn, parsed.id)
            if single and not credentials.consume(tx.conn, parsed.id, now):
                raise JoinRefused(
                    401, "used", f"token {parsed.id} was used by another join; {NEW_TOKEN_HINT}"
                )
        return {
            # for the audit log: the token that joined, and the node it joined
            "identity": credentials.Identity(identity.name, identity.role, node),
            "node": node,
            "certificate": signed.pem.decode("ascii"),
            "ca": self.authority.ca_pem.decode("ascii"),
            "edgeEndpoints": list(self.edge_endpoints(host)),
            "notAfter": signed.not_after,
        }

    def renew(self, node: str, csr: str) -> str:
        """A renewed certificate for a node that proved itself with its current one.

        Refused (CertificateError) when the node has no valid certificate left: a
        deleted Node's session may outlive its revocation by a moment.
        """
        with self.store.writing() as tx:
            if not credentials.has_live_certificate(tx.conn, node):
                raise CertificateError(f"node {node} has no valid certificate to renew")
            signed = self.authority.sign_node(
                csr.encode("utf-8", "replace"), node, self.settings.node_cert_days
            )
            credentials.record_certificate(tx.conn, signed.serial, node, signed.not_after)
        return signed.pem.decode("ascii")

    def edge_endpoints(self, host: str) -> tuple[str, ...]:
        if self.settings.advertise:
            return self.settings.advertise
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return (f"wss://{hostname or 'localhost'}:{self.settings.edge_port}",)


def _lease_ready(conn: Connection, node: str) -> bool:
    """Whether the fleet counts ``node`` as Ready (possibly connected to another replica)."""
    return bool(
        conn.execute(select(node_leases.c.ready).where(node_leases.c.node == node)).scalar()
    )
