"""The edge's reconnect policy: one pure function that says what an ended connection means.

The hub link shell turns whatever ended a connection attempt (an exception, a
close frame, a refusal) into an :class:`Ended`; :func:`classify` decides
whether trying again can help. What cannot — a URL that is not a hub, a hub
that refuses this node or speaks another protocol, a hub that sends frames
this edgecore cannot take — stops the link with one line and a non-zero exit,
instead of retrying the same failure forever. Everything else is retried
after a backoff delay (``edgeward.backoff``: exponential, full jitter,
capped); the delays start again from the shortest only after a session that
was welcomed and lasted :data:`STABLE_SESSION` seconds, so a hub that drops
every session at once, or another edgecore claiming the same node name,
meets ever longer delays.

=========================================  =======  =====================================
what ended it                              verdict  why
=========================================  =======  =====================================
an invalid URL                             stop     configuration
HTTP 401/403 to the upgrade                stop     the hub refuses this node (it says why)
the hub's certificate does not verify      stop     another hub, or the wrong CA file
the hub refuses our certificate (TLS)      stop     expired, another CA: join again
HTTP 5xx to the upgrade                    retry    the hub (or a proxy) is unwell
any other HTTP status                      stop     not an Edgeward edge endpoint
a reply that is not HTTP                   stop     not a websocket server at all
refused, unreachable, reset, DNS, timeout  retry    the hub or the network is down
the hub refused hello (error frame)        stop     another protocol, a bad name, identity
close 1008 (policy) / 1009 (too big)       stop     the hub refuses what we send
close 4000 (replaced)                      retry    another connection took over; no reset
close 4001 (node deleted)                  retry    register again, at once
close 4003 (move)                          retry    rebalancing: at once, next endpoint
close 1000/1001/1006/1011, anything else   retry    the hub stopped, restarted or failed
the hub sent a frame we cannot accept      stop     a protocol violation will recur
a local database error                     retry    e.g. a full disk, which may clear
=========================================  =======  =====================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from edgeward import protocol

#: Seconds a welcomed session must last before the reconnect delays start over.
STABLE_SESSION = 10.0

#: Refusals of a hello that trying again cannot change.
_HELLO_REFUSALS = (
    protocol.UNSUPPORTED_PROTOCOL,
    protocol.FORBIDDEN,
    protocol.BAD_MESSAGE,
    protocol.UNEXPECTED,
)


class Cause(enum.Enum):
    """What the shell saw end a connection attempt."""

    INVALID_URL = "invalid_url"
    HTTP_STATUS = "http_status"  # the websocket upgrade was answered with an HTTP status
    NOT_WEBSOCKET = "not_websocket"  # the server's reply was not HTTP at all
    UNREACHABLE = "unreachable"  # refused, unreachable, reset, DNS, timeout
    CLOSED = "closed"  # the websocket closed (a close frame, or the link died)
    HUB_NOT_TRUSTED = "hub_not_trusted"  # the hub's certificate did not verify
    CERTIFICATE_REFUSED = "certificate_refused"  # the hub's TLS refused our certificate
    PROTOCOL_VIOLATION = "protocol_violation"  # we closed it: the hub sent what we cannot take
    LOCAL_STORE = "local_store"  # our own database failed


@dataclass(frozen=True)
class Ended:
    """How one connection attempt ended."""

    cause: Cause
    detail: str = ""
    #: The close code and reason received (CLOSED), None when the link died without one;
    #: then the reason is the one this side closed with, if any ("keepalive ping timeout").
    close_code: int | None = None
    close_reason: str = ""
    #: The HTTP status of a refused upgrade (HTTP_STATUS).
    http_status: int | None = None
    #: The error frame the hub sent before it closed, if any.
    refusal: protocol.Error | None = None
    #: Whether the hub welcomed us, and for how many seconds the session lasted after it.
    welcomed: bool = False
    lived: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """Retry (after a delay; ``reset_backoff``: from the shortest delay) or stop."""

    retry: bool
    message: str
    reset_backoff: bool = False
    #: Try the next endpoint rather than the one that served (the hub asked the node to
    #: move to another replica).
    next_endpoint: bool = False


def _stop(message: str) -> Verdict:
    return Verdict(retry=False, message=message)


def _closed(ended: Ended, node: str, url: str) -> Verdict:
    code, refusal = ended.close_code, ended.refusal
    said = f": {refusal.reason}" if refusal is not None else ""
    if refusal is not None and not ended.welcomed and refusal.code in _HELLO_REFUSALS:
        return _stop(f"the hub at {url} refused node {node}: {refusal.reason}")
    if code == protocol.CLOSE_POLICY:
        return _stop(f"the hub at {url} closed the link ({ended.close_reason or 'policy'}){said}")
    if code == protocol.CLOSE_TOO_BIG:
        return _stop(f"the hub at {url} refused a frame as too large{said}")
    if code == protocol.CLOSE_REPLACED:
        return Verdict(
            retry=True,
            message=f"another connection for node {node} replaced this one: is a second "
            "edgecore using this node name? Backing off",
        )
    if code == protocol.CLOSE_RESYNC:
        return Verdict(
            retry=True,
            message="the hub asked for a resync; reconnecting to take a snapshot",
            reset_backoff=True,
        )
    if code == protocol.CLOSE_MOVE:
        return Verdict(
            retry=True,
            message="the hub asked this node to move to another replica (rebalancing); "
            "reconnecting",
            reset_backoff=True,
            next_endpoint=True,
        )
    if code == protocol.CLOSE_NODE_DELETED:
        return Verdict(
            retry=True,
            message=f"node {node} was deleted on the hub; registering again",
            reset_backoff=True,
        )
    if code is None:
        why = f" ({ended.close_reason})" if ended.close_reason else ""
        return Verdict(retry=True, message=f"hub {url}: connection lost{why}")
    detail = f"{code} {ended.close_reason}".strip()
    return Verdict(retry=True, message=f"hub {url}: connection closed ({detail})")


def classify(ended: Ended, node: str, url: str) -> Verdict:
    """Whether trying again can help, and the one line that says what happened."""
    match ended.cause:
        case Cause.INVALID_URL:
            return _stop(f"hub endpoint {url} is not a valid URL: {ended.detail}")
        case Cause.HTTP_STATUS:
            status = ended.http_status
            if status in (401, 403):
                if ended.detail:
                    return _stop(f"the hub at {url} refused node {node}: {ended.detail}")
                return _stop(
                    f"{url} refused node {node}'s connection (HTTP {status}): check that it is "
                    "the hub's edge endpoint (port 10000 by default) and the node's credentials"
                )
            if status is not None and 500 <= status < 600:
                return Verdict(retry=True, message=f"hub {url} answered HTTP {status}")
            return _stop(f"{url} is not an Edgeward hub edge endpoint (HTTP {status})")
        case Cause.NOT_WEBSOCKET:
            return _stop(f"{url} did not answer as a websocket server: {ended.detail}")
        case Cause.UNREACHABLE:
            return Verdict(retry=True, message=f"hub {url}: {ended.detail}")
        case Cause.HUB_NOT_TRUSTED:
            return _stop(
                f"{url} is not the hub this node joined: its certificate does not verify "
                f"({ended.detail}); check the endpoint and hub.ca_file"
            )
        case Cause.CERTIFICATE_REFUSED:
            return _stop(
                f"the hub at {url} refused node {node}'s certificate ({ended.detail}); "
                f"join again: edgeward join --hub https://HUB:10002 --token TOKEN --node {node}"
            )
        case Cause.PROTOCOL_VIOLATION:
            return _stop(f"the hub at {url} sent what this edgecore cannot accept: {ended.detail}")
        case Cause.LOCAL_STORE:
            return Verdict(
                retry=True, message=f"local database: {ended.detail}; reconnecting later"
            )
    verdict = _closed(ended, node, url)
    stable = ended.welcomed and ended.lived >= STABLE_SESSION
    if verdict.retry and stable and ended.close_code != protocol.CLOSE_REPLACED:
        return replace(verdict, reset_backoff=True)
    return verdict
