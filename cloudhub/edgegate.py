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
import time
from collections.abc import Callable
from typing import Any

from cloudhub.audit import AuditLog
from cloudhub.credentials import Identity, certificate_refusal
from cloudhub.pki import node_of_peer
from cloudhub.store import Store

log = logging.getLogger(__name__)


#: A refusal of the same certificate (or the same address, without one) is logged at
#: most this often; each one is still counted and audited.
LOG_EVERY = 60.0
MAX_REMEMBERED = 10_000


class EdgeGate:
    def __init__(
        self, store: Store, audit: AuditLog, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock
        self.refused = 0
        #: what was refused lately: key -> (when it was last logged, refusals since)
        self._logged: dict[str, tuple[float, int]] = {}

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
        self._log_refusal(identity.name if identity.node else peer.rsplit(":", 1)[0], peer, reason)
        self.audit.record(identity, "connect", "edge endpoint", "refused", peer, reason)
        return connection.respond(403, reason + "\n")

    def _log_refusal(self, key: str, peer: str, reason: str) -> None:
        """One line per certificate or address a minute: a client refused in a loop must not
        fill the log (the audit log keeps every refusal)."""
        now = self.clock()
        last = self._logged.get(key)
        if last is not None and now - last[0] < LOG_EVERY:
            self._logged[key] = (last[0], last[1] + 1)
            return
        more = f" ({last[1]} more since the last line)" if last is not None and last[1] else ""
        if len(self._logged) >= MAX_REMEMBERED:
            self._logged.clear()
        self._logged[key] = (now, 0)
        log.warning("edge connection from %s refused: %s%s", peer, reason, more)

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
