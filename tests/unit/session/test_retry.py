"""The edge's reconnect policy: what trying again can fix is retried, what it cannot is a
one-line stop, and the delays start over only after a stable session."""

from __future__ import annotations

import pytest

from edgeward import protocol
from edgeward.session import Cause, Ended, classify
from edgeward.session.retry import STABLE_SESSION

URL = "ws://hub.example:10000"


def verdict(ended: Ended):
    return classify(ended, "edge-1", URL)


@pytest.mark.parametrize(
    ("ended", "says"),
    [
        (Ended(Cause.INVALID_URL, "no host"), "not a valid URL: no host"),
        (Ended(Cause.HTTP_STATUS, http_status=404), "not an Edgeward hub edge endpoint (HTTP 404)"),
        (Ended(Cause.HTTP_STATUS, http_status=403), "refused node edge-1's connection (HTTP 403)"),
        (Ended(Cause.HTTP_STATUS, http_status=401), "refused node edge-1's connection (HTTP 401)"),
        (Ended(Cause.NOT_WEBSOCKET, "bad status line"), "did not answer as a websocket server"),
        (Ended(Cause.PROTOCOL_VIOLATION, "changes in the middle"), "cannot accept: changes in"),
        (
            Ended(
                Cause.CLOSED,
                close_code=1008,
                refusal=protocol.Error("unsupported_protocol", "protocol 1 is not supported"),
            ),
            "refused node edge-1: protocol 1 is not supported",
        ),
        (
            Ended(Cause.CLOSED, close_code=1008, close_reason="too many bad frames", welcomed=True),
            "closed the link (too many bad frames)",
        ),
        (
            Ended(
                Cause.CLOSED,
                close_code=1008,
                refusal=protocol.Error("bad_message", "report seq 9 is beyond"),
                welcomed=True,
            ),
            "closed the link (policy): report seq 9 is beyond",
        ),
        (Ended(Cause.CLOSED, close_code=1009), "refused a frame as too large"),
    ],
)
def test_what_retrying_cannot_fix_stops_with_one_line(ended: Ended, says: str) -> None:
    """A bad URL, a hub that refuses this node or its frames, a server that is not a hub, a
    hub that sends what edgecore cannot accept: stop, and say so."""
    result = verdict(ended)
    assert not result.retry
    assert says in result.message
    assert "\n" not in result.message


@pytest.mark.parametrize(
    ("ended", "says"),
    [
        (Ended(Cause.UNREACHABLE, "connection refused"), "hub ws://hub.example:10000: connection"),
        (Ended(Cause.HTTP_STATUS, http_status=503), "answered HTTP 503"),
        (Ended(Cause.LOCAL_STORE, "database or disk is full"), "local database: database or"),
        (Ended(Cause.CLOSED), "connection lost"),
        (
            Ended(Cause.CLOSED, close_reason="keepalive ping timeout"),
            "connection lost (keepalive ping timeout)",
        ),
        (Ended(Cause.CLOSED, close_code=1011, close_reason="the hub failed"), "(1011 the hub"),
        (Ended(Cause.CLOSED, close_code=1001, close_reason="the hub is stopping"), "(1001 the"),
        (Ended(Cause.CLOSED, close_code=1000), "connection closed (1000)"),
        (Ended(Cause.CLOSED, close_code=4000), "is a second edgecore using this node name"),
    ],
)
def test_what_may_pass_is_retried(ended: Ended, says: str) -> None:
    """A hub or network that is down, a hub that failed or stopped, a full disk, being
    replaced: retry after a delay."""
    result = verdict(ended)
    assert result.retry and not result.reset_backoff
    assert says in result.message


def test_delays_start_over_only_after_a_stable_session() -> None:
    """A welcomed session that lasted STABLE_SESSION seconds resets the delays; a short one,
    or one replaced by another connection of the same node name, does not: two edgecores with
    one name meet ever longer delays instead of replacing each other several times a second."""
    stable = Ended(Cause.CLOSED, close_code=1006, welcomed=True, lived=STABLE_SESSION)
    assert verdict(stable).reset_backoff
    short = Ended(Cause.CLOSED, close_code=1006, welcomed=True, lived=STABLE_SESSION - 1)
    assert not verdict(short).reset_backoff
    replaced = Ended(Cause.CLOSED, close_code=4000, welcomed=True, lived=3600)
    assert verdict(replaced).retry and not verdict(replaced).reset_backoff


def test_a_deleted_node_registers_again_at_once() -> None:
    """The hub closes a deleted Node's session with 4001: the edge reconnects at once and
    registers again."""
    result = verdict(Ended(Cause.CLOSED, close_code=protocol.CLOSE_NODE_DELETED, welcomed=True))
    assert result.retry and result.reset_backoff
    assert "deleted on the hub" in result.message


def test_a_resync_request_reconnects_at_once() -> None:
    result = verdict(Ended(Cause.CLOSED, close_code=protocol.CLOSE_RESYNC, welcomed=True))
    assert result.retry and result.reset_backoff
    assert "asked for a resync" in result.message


@pytest.mark.parametrize("lived", [1.0, 60.0])
def test_a_move_reconnects_at_once_to_the_next_endpoint(lived: float) -> None:
    """Rebalancing closes with 4003: the edge tries its next endpoint (or its load balancer
    again) at once, however long the session lasted."""
    result = verdict(
        Ended(Cause.CLOSED, close_code=protocol.CLOSE_MOVE, welcomed=True, lived=lived)
    )
    assert result.retry and result.reset_backoff and result.next_endpoint
    assert "move to another replica" in result.message


def test_tls_refusals_stop_the_link_with_what_to_do() -> None:
    """A hub whose certificate does not verify, or a hub refusing ours: no retry can help."""
    untrusted = classify(Ended(Cause.HUB_NOT_TRUSTED, "self-signed certificate"), "edge-1", URL)
    assert not untrusted.retry
    assert "is not the hub this node joined" in untrusted.message
    assert "hub.ca_file" in untrusted.message
    refused = classify(Ended(Cause.CERTIFICATE_REFUSED, "certificate expired"), "edge-1", URL)
    assert not refused.retry
    assert "refused node edge-1's certificate (certificate expired)" in refused.message
    assert "edgeward join" in refused.message


def test_a_refused_upgrade_says_the_reason_the_hub_gave() -> None:
    ended = Ended(Cause.HTTP_STATUS, "certificate 1f of node edge-1 was revoked", http_status=403)
    verdict = classify(ended, "edge-1", URL)
    assert not verdict.retry
    assert verdict.message.endswith(
        "refused node edge-1: certificate 1f of node edge-1 was revoked"
    )
