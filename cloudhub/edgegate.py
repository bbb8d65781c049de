"""Who may open a session on the edge port: the certificate check before the websocket opens.

TLS has already verified the client certificate against the hub's CA (a client
without one, or with one from another CA, never gets this far). Here, at the
websocket upgrade and before any frame, the hub checks what the CA's signature
alone cannot say: that the certificate is a node certificate, that this hub
recorded it when it signed it, and that it was not revoked (its Node deleted)
or superseded past its life. A refusal is an HTTP 403 whose body says why,
which the edge reports in one line and stops on; it is counted and audited.
The node name the certificate carries becomes the session's identity, and the
sync core refuses a ``hello`` for any other name.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cloudhub.audit import AuditLog
from cloudhub.credentials import Identity, certificate_refusal
from cloudhub.pki import node_of_peer
from cloudhub.store import Store

log = logging.getLogger(__name__)


class EdgeGate:
    def __init__(self, store: Store, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit
        self.refused = 0

    async def process_request(self, connection: Any, request: Any) -> Any:
        """websockets' ``process_request`` hook: None admits, a response refuses."""
        peer = _peer(connection)
        identity = node_identity(connection)
        if identity is None:
            return self._refuse(
                connection,
                Identity("certificate:unknown", "unknown"),
                peer,
                "the client certificate is not an Edgeward node certificate",
            )
        serial = identity.name.split(":", 1)[1]
        assert identity.node is not None
        try:
            refusal = await asyncio.to_thread(self._refusal, serial, identity.node)
        except Exception as exc:
            log.warning("cannot check the certificate of node %s: %s", identity.node, exc)
            return connection.respond(503, "the hub cannot check certificates now; retry\n")
        if refusal is not None:
            return self._refuse(connection, identity, peer, refusal)
        return None

    def _refusal(self, serial: str, node: str) -> str | None:
        with self.store.reading() as conn:
            return certificate_refusal(conn, serial, node)

    def _refuse(self, connection: Any, identity: Identity, peer: str, reason: str) -> Any:
        self.refused += 1
        log.warning("edge connection from %s refused: %s", peer, reason)
        self.audit.record(identity, "connect", "edge endpoint", "refused", peer, reason)
        return connection.respond(403, reason + "\n")

    def refused_session(self, credential: Identity, action: str, peer: str, reason: str) -> None:
        """The session core closed an admitted connection for policy: a ``hello`` it refused
        (another node's name, a bad frame first), or a ``frame`` that ended the session."""
        self.refused += 1
        self.audit.record(credential, action, "edge endpoint", "refused", peer, reason)


def node_identity(connection: Any) -> Identity | None:
    """The node a TLS connection's certificate names, as ``certificate:<serial>``."""
    ssl_object = connection.transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    found = node_of_peer(ssl_object.getpeercert())
    if found is None:
        return None
    node, serial = found
    return Identity(f"certificate:{serial}", "node", node)


def _peer(connection: Any) -> str:
    addr = connection.remote_address
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
