"""Who may do what on the hub: the one authorization rule, for the API and the edge port.

- ``admin``: everything, token management included.
- ``viewer``: reads (gets, lists, watches); never writes.
- ``node`` (a node token or a node certificate): the objects bound to its node
  only — its own Node, the Devices whose ``spec.nodeName`` is that node, and
  what every node receives (DeviceModels). It reads them one at a time, may
  update its own Node and Devices as long as they stay bound to it, and never
  creates, deletes, lists or watches. On the edge port the same rule is the
  session core's identity check: a certificate speaks for its node only.

Every refusal names the identity and the rule; the caller logs it to the audit
log and answers 403 (the request changed nothing).
"""

from __future__ import annotations

from typing import Any

from cloudhub.credentials import Identity
from edgeward.kinds import ALL_NODES, NODE, Kind

READS = frozenset({"GET", "HEAD"})
#: Anyone reaching the port with no credential: health and the join handshake.
ANONYMOUS = Identity("anonymous", "anonymous")
#: What a hub started with --insecure treats every caller as.
INSECURE = Identity("insecure", "admin")


class Forbidden(Exception):
    """A request the identity may not make; the message says why, in one line."""


def check_request(identity: Identity, method: str, admin_only: bool = False) -> None:
    """What can be decided from the role and the method alone."""
    if identity.role == "admin":
        return
    if admin_only:
        raise Forbidden(f"{identity} may not manage credentials: it needs an admin token")
    if identity.role == "viewer" and method not in READS:
        raise Forbidden(f"{identity} is a viewer: it may read, not write")


def check_collection(identity: Identity, method: str, kind: Kind) -> None:
    """Lists, watches and creates, which touch objects of any node."""
    if identity.role == "node":
        verb = "list or watch" if method in READS else "create"
        raise Forbidden(
            f"{identity} may not {verb} {kind.plural}: a node reads the objects bound to it "
            "one at a time"
        )


def check_object(
    identity: Identity,
    method: str,
    kind: Kind,
    current: dict[str, Any] | None,
    name: str,
    new: dict[str, Any] | None = None,
) -> None:
    """A read or write of one object by a node identity (others were checked already)."""
    if identity.role != "node":
        return
    if method == "DELETE":
        raise Forbidden(f"{identity} may not delete {kind.plural}")
    if current is not None and not bound_to(kind, current, name, identity.node):
        raise Forbidden(f"{identity} may not touch {kind.name} {name}: it is not bound to it")
    if method in READS:
        return
    if kind.route(current or {}) == ALL_NODES and kind is not NODE:
        raise Forbidden(f"{identity} may not change {kind.plural}: every node shares them")
    if new is not None and not bound_to(kind, new, name, identity.node):
        raise Forbidden(f"{identity} may not bind {kind.name} {name} to another node")


def bound_to(kind: Kind, obj: dict[str, Any], name: str, node: str | None) -> bool:
    if node is None:
        return False
    if kind is NODE:
        return name == node
    route = kind.route(obj)
    return route in (node, ALL_NODES)
