"""The hub's edge port against hostile and broken peers, spoken to frame by frame."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support.procs import Hub, wait_for


def open_ws(hub: Hub) -> ClientConnection:
    return connect(hub.edge, open_timeout=5, max_size=None, compression=None, proxy=None)


def recv(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=5))


def recv_skipping_changes(ws: ClientConnection) -> dict[str, Any]:
    """The next frame that is not a change batch (those arrive whenever the log moves)."""
    while True:
        msg = recv(ws)
        if msg["type"] != "changes":
            return msg


def hello(ws: ClientConnection, node: str, revision: int = 0) -> dict[str, Any]:
    ws.send(json.dumps({"type": "hello", "node": node, "revision": revision, "protocol": 1}))
    welcome = recv(ws)
    assert welcome["type"] == "welcome", welcome
    return welcome


def closed_code(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    return info.value.rcvd.code


@pytest.mark.parametrize(
    ("first_frame", "code"),
    [
        ("this is not json", "bad_frame"),
        (b"\x00\x01binary", "bad_frame"),
        ("[1, 2, 3]", "bad_frame"),
        ('{"type": "snapshot", "revision": 1, "items": [], "final": true}', "unexpected"),
        ('{"type": "launch-missiles"}', "unknown_type"),
        ('{"type": "hello", "node": "Bad Name!", "revision": 0, "protocol": 1}', "bad_message"),
        ('{"type": "hello", "node": "edge1", "revision": -4, "protocol": 1}', "bad_message"),
        (
            '{"type": "hello", "node": "edge1", "revision": 0, "protocol": 99}',
            "unsupported_protocol",
        ),
        ("[" * 100_000, "bad_frame"),
    ],
)
def test_a_bad_first_frame_gets_an_error_and_a_close(hub: Hub, first_frame: Any, code: str) -> None:
    """Anything but a valid hello as the first frame is answered with an error frame and a
    policy-violation close, and logged."""
    with open_ws(hub) as ws:
        ws.send(first_frame)
        error = recv(ws)
        assert error == {"type": "error", "code": code, "reason": error["reason"]}
        assert error["reason"]
        assert closed_code(ws) == 1008
    wait_for(lambda: "refused" in hub.log(), 5, "the refusal to be logged")


def test_bad_frames_after_hello_get_error_frames_then_a_close(hub: Hub, start_edge) -> None:
    """After hello, each bad frame gets an error frame and the session goes on; a peer that
    keeps sending garbage is closed; a well-behaved node is served throughout."""
    good = start_edge("good-node")
    with open_ws(hub) as ws:
        hello(ws, "noisy-node")
        assert recv(ws)["type"] == "changes"
        bad_frames = [
            "garbage",
            b"binary",
            '{"type": "nope"}',
            '{"type": "welcome", "mode": "changes", "head": 1, "report_seq": 0}',
            '{"type": "ack", "revision": "seven"}',
            '{"type": "ack", "revision": 999999}',
        ]
        for frame in bad_frames:
            ws.send(frame)
            reply = recv(ws)
            assert reply["type"] == "error", (frame, reply)
        # the session still works: a valid report is persisted and acknowledged
        ws.send(json.dumps({"type": "report", "items": [STATUS_ROW]}))
        assert recv(ws) == {"type": "report_ack", "seq": 1}
        for _ in range(4):
            ws.send("garbage")
            assert recv(ws)["type"] == "error"
        assert closed_code(ws) == 1008  # the tenth bad frame

    status, body = hub.request(
        "POST",
        "/api/v1/namespaces/default/devices",
        {"metadata": {"name": "after-abuse"}, "spec": {"nodeName": "good-node"}},
    )
    assert status == 201, body
    wait_for(
        lambda: ("default", "after-abuse") in good.cached(),
        10,
        "the good node to be served after the abuse",
    )
    assert "refused a frame" in hub.log()


STATUS_ROW = {
    "seq": 1,
    "topic": "node/status",
    "key": "node-status",
    "body": {"usage": {"cpuPercent": 1.0}},
}


@pytest.mark.parametrize(
    "report",
    [
        '{"type": "report", "items": [{"seq": 3, "topic": "x", "key": null, "body": {}},'
        ' {"seq": 2, "topic": "x", "key": null, "body": {}}]}',
        '{"type": "report", "items": []}',
        '{"type": "report", "items": [{"seq": 0, "topic": "x", "key": null, "body": {}}]}',
        '{"type": "report", "items": [{"seq": 2, "topic": "x", "key": null, "body": []}]}',
    ],
    ids=["seq-decreases", "empty", "seq-zero", "body-not-object"],
)
def test_a_report_the_hub_cannot_read_ends_the_session(hub: Hub, report: str) -> None:
    """A report frame that cannot be read gets an error frame and closes the session at once:
    its rows cannot be acknowledged, and acknowledging a later frame would cover them, lost
    without a word. What was acknowledged before stays acknowledged."""
    with open_ws(hub) as ws:
        hello(ws, "bad-reporter")
        ws.send(json.dumps({"type": "report", "items": [STATUS_ROW]}))
        assert recv_skipping_changes(ws) == {"type": "report_ack", "seq": 1}
        ws.send(report)
        assert recv_skipping_changes(ws)["type"] == "error"
        assert closed_code(ws) == 1008
    with open_ws(hub) as ws:
        assert hello(ws, "bad-reporter")["report_seq"] == 1


def test_a_report_seq_beyond_what_a_node_could_issue_is_refused(hub: Hub) -> None:
    """A report seq far beyond the node's position closes the session and is never kept: a
    hostile or corrupted peer cannot leave the hub holding a position the real edge can never
    follow (every row it sent afterwards would look like a replay)."""
    with open_ws(hub) as ws:
        hello(ws, "far-seq")
        item = {**STATUS_ROW, "seq": 9223372036854775807}
        ws.send(json.dumps({"type": "report", "items": [item]}))
        assert recv_skipping_changes(ws)["type"] == "error"  # past the highest seq there is
        assert closed_code(ws) == 1008
    with open_ws(hub) as ws:
        assert hello(ws, "far-seq")["report_seq"] == 0
        ws.send(json.dumps({"type": "report", "items": [{**STATUS_ROW, "seq": 2**41}]}))
        error = recv_skipping_changes(ws)
        assert "beyond what node far-seq could have issued" in error["reason"]
        assert closed_code(ws) == 1008
    with open_ws(hub) as ws:
        assert hello(ws, "far-seq")["report_seq"] == 0


def test_oversized_frame_closes_only_that_connection(hub: Hub, start_edge) -> None:
    """A frame over the size limit closes that connection (1009); other nodes carry on."""
    good = start_edge("good-node")
    with open_ws(hub) as ws:
        hello(ws, "big-node")
        ws.send("x" * (5 * 1024 * 1024))
        assert closed_code(ws) == 1009
    hub.request(
        "POST",
        "/api/v1/namespaces/default/devices",
        {"metadata": {"name": "d1"}, "spec": {"nodeName": "good-node"}},
    )
    wait_for(lambda: ("default", "d1") in good.cached(), 10, "the good node to be served")


def test_replayed_reports_are_deduplicated_and_remembered(hub: Hub) -> None:
    """The hub persists each (node, seq) once, acks replays, and tells a reconnecting edge
    the highest seq it holds so the edge can drop what is already delivered."""
    item = {
        "seq": 5,
        "topic": "node/status",
        "key": "node-status",
        "body": {"capacity": {"cpu": 3}, "usage": {"cpuPercent": 50.0}},
    }
    with open_ws(hub) as ws:
        assert hello(ws, "edge-r")["report_seq"] == 0
        ws.send(json.dumps({"type": "report", "items": [item]}))
        assert recv_skipping_changes(ws) == {"type": "report_ack", "seq": 5}
        ws.send(
            json.dumps({"type": "report", "items": [{**item, "body": {"capacity": {"cpu": 99}}}]})
        )
        assert recv_skipping_changes(ws) == {"type": "report_ack", "seq": 5}
    node = hub.request("GET", "/api/v1/nodes/edge-r")[1]
    assert node["status"]["capacity"] == {"cpu": 3}, "a replay overwrote the first report"
    with open_ws(hub) as ws:
        assert hello(ws, "edge-r")["report_seq"] == 5


def test_an_edge_going_away_is_not_an_error(hub: Hub, start_edge) -> None:
    """An edge that disconnects or is killed is logged as a disconnect, not as a handler
    failure with a traceback."""
    edge = start_edge("leaver")
    wait_for(lambda: "node leaver: connected" in hub.log(), 10, "the edge to connect")
    edge.kill()
    wait_for(lambda: "node leaver: disconnected" in hub.log(), 10, "the disconnect")
    with open_ws(hub) as ws:
        hello(ws, "polite")
    wait_for(lambda: "node polite: disconnected" in hub.log(), 10, "the second disconnect")
    assert "Traceback" not in hub.log()
    assert "handler failed" not in hub.log()


def test_a_newer_connection_replaces_the_older_one(hub: Hub) -> None:
    """When a node connects twice (a stale link not yet timed out), the older connection is
    closed and the newer one is served."""
    with open_ws(hub) as old:
        hello(old, "twice")
        with open_ws(hub) as new:
            hello(new, "twice")
            assert closed_code(old) == 4000
            status, body = hub.request(
                "POST",
                "/api/v1/namespaces/default/devices",
                {"metadata": {"name": "d"}, "spec": {"nodeName": "twice"}},
            )
            assert status == 201, body
            while True:
                msg = recv(new)
                if msg["type"] == "changes" and msg["items"]:
                    break
            assert msg["items"][0]["name"] == "d"


def test_oversized_node_descriptions_are_refused_or_ignored(hub: Hub) -> None:
    """A hello with a huge node_info is refused, and a status report with an oversized part
    is acknowledged as rejected and stored not at all, so one node cannot bloat every node
    listing."""
    with open_ws(hub) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "hello",
                    "node": "bloat",
                    "revision": 0,
                    "protocol": 1,
                    "node_info": {"junk": "x" * 100_000},
                }
            )
        )
        assert recv(ws)["code"] == "bad_message"
        assert closed_code(ws) == 1008
    with open_ws(hub) as ws:
        hello(ws, "bloat")
        ws.send(
            json.dumps(
                {
                    "type": "report",
                    "items": [
                        {
                            "seq": 1,
                            "topic": "node/status",
                            "key": "node-status",
                            "body": {"capacity": {"cpu": 2}, "nodeInfo": {"junk": "x" * 100_000}},
                        }
                    ],
                }
            )
        )
        ack = recv_skipping_changes(ws)
        assert ack["type"] == "report_ack" and ack["seq"] == 1
        assert [r["seq"] for r in ack["rejected"]] == [1]
        assert "nodeInfo" in ack["rejected"][0]["reason"]
    status = hub.request("GET", "/api/v1/nodes/bloat")[1]["status"]
    assert "capacity" not in status
    assert "junk" not in status.get("nodeInfo", {})


def test_hub_stops_promptly_with_edges_connected(hub: Hub, start_edge) -> None:
    """SIGTERM with edges connected ends every session and exits 0 (no session keeps the hub
    alive until systemd kills it); the edges, closed cleanly, keep running and retry."""
    edges = [start_edge(node) for node in ("stay-1", "stay-2")]
    with open_ws(hub) as ws:
        hello(ws, "raw-node")
        wait_for(lambda: hub.log().count("connected from") >= 3, 10, "three sessions")
        assert hub.stop() == 0
    assert "Traceback" not in hub.log()
    for edge in edges:
        wait_for(lambda e=edge: "reconnecting in" in e.log(), 10, f"{edge.node} to retry")
        assert edge.running, edge.log()
        assert "Traceback" not in edge.log()


def test_a_cleanly_closed_connection_ends_its_session(hub: Hub) -> None:
    """An edge that closes its websocket cleanly is disconnected at once, so its node name is
    free for its next connection."""
    with open_ws(hub) as ws:
        hello(ws, "clean-close")
    wait_for(lambda: "node clean-close: disconnected" in hub.log(), 5, "the session to end")
