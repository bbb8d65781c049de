"""One node's bad input, through a real cloudhub process, never stops work for the others.

Each test speaks to the hub's edge port frame by frame as a hostile or broken edge
would, then checks what every other client still gets: node listings, expiry,
acknowledged reports, a clean start for a deleted node.
"""

from __future__ import annotations

import json
from typing import Any

from edgeward import storable
from tests.integration.test_edge_endpoint import (
    closed_code,
    hello,
    open_ws,
    recv,
    recv_skipping_changes,
)
from tests.support.procs import Hub, wait_for

DEVICES = "/api/v1/namespaces/default/devices"


def report(*items: dict[str, Any]) -> str:
    return json.dumps({"type": "report", "items": list(items)})


def status_row(seq: int, **body: Any) -> dict[str, Any]:
    return {"seq": seq, "topic": "node/status", "key": "node-status", "body": body}


def ready_status(hub: Hub, node: str) -> str | None:
    status = hub.request("GET", f"/api/v1/nodes/{node}")[1].get("status", {})
    return next((c["status"] for c in status.get("conditions", []) if c["type"] == "Ready"), None)


def test_a_revision_past_int64_is_refused_and_expiry_goes_on(hub: Hub, start_edge) -> None:
    """A hello whose revision no column can hold gets an error frame and a close; nodes still
    go NotReady after the grace period (the hub was started with 2 s) once their edge dies."""
    with open_ws(hub) as ws:
        frame = {"type": "hello", "node": "hostile", "revision": 2**64, "protocol": 1}
        ws.send(json.dumps(frame))
        assert recv(ws)["type"] == "error"
        assert closed_code(ws) == 1008
    edge = start_edge("mortal")
    wait_for(lambda: ready_status(hub, "mortal") == "True", 10, "the node to be Ready")
    edge.kill()
    wait_for(lambda: ready_status(hub, "mortal") == "Unknown", 20, "the node to go NotReady")
    assert hub.request("GET", "/api/v1/nodes")[0] == 200


def test_lone_surrogates_from_an_edge_never_break_node_listings(hub: Hub) -> None:
    """A hello or a status report holding a lone surrogate is refused with an error frame,
    nothing of it is stored, and GET /api/v1/nodes keeps answering 200."""
    with open_ws(hub) as ws:
        frame = {"type": "hello", "node": "odd", "revision": 0, "node_info": {"os": "\ud800"}}
        ws.send(json.dumps({**frame, "protocol": 1}))
        assert recv(ws)["type"] == "error"
        assert closed_code(ws) == 1008
    with open_ws(hub) as ws:
        hello(ws, "odd")
        ws.send(report(status_row(1, usage={"cpu": "\udcff"}, nodeInfo={"os": "x\ud800"})))
        assert recv_skipping_changes(ws)["type"] == "error"
        ws.send(report(status_row(2, usage={"cpu": 1.5})))
        assert recv_skipping_changes(ws) == {"type": "report_ack", "seq": 2}
    status, body = hub.request("GET", "/api/v1/nodes")
    assert status == 200
    (node,) = body["items"]
    assert node["status"]["usage"] == {"cpu": 1.5}


def test_rows_the_hub_cannot_take_come_back_rejected_and_the_session_goes_on(hub: Hub) -> None:
    """A report frame with rows the hub refuses (a device bound elsewhere, a twin report
    over the 1 MiB row limit) is acknowledged whole: those rows are named in report_ack's
    rejected list, the others are stored, and the session carries on."""
    for name, node in (("mine", "mixed"), ("theirs", "elsewhere")):
        status, body = hub.request(
            "POST", DEVICES, {"metadata": {"name": name}, "spec": {"nodeName": node}}
        )
        assert status == 201, body
    huge_twins = {
        f"k{i:04d}" + "k" * 123: {
            "reported": {"value": "r" * 512, "timestamp": 1},
            "observedDesired": {"value": "o" * 512, "timestamp": 1},
            "conflict": {"supersededLocalValue": "c" * 512, "note": "n" * 450},
        }
        for i in range(storable.MAX_TWINS)
    }
    with open_ws(hub) as ws:
        hello(ws, "mixed")
        ws.send(
            report(
                status_row(1, capacity={"cpu": "4"}),
                {
                    "seq": 2,
                    "topic": "device/state",
                    "key": "state/default/theirs",
                    "body": {"device": "default/theirs", "state": "online"},
                },
                {
                    "seq": 3,
                    "topic": "twin/reported",
                    "key": "twin/default/mine",
                    "body": {"device": "default/mine", "twins": huge_twins},
                },
                {
                    "seq": 4,
                    "topic": "device/state",
                    "key": "state/default/mine",
                    "body": {"device": "default/mine", "state": "online"},
                },
            )
        )
        ack = recv_skipping_changes(ws)
        assert ack["type"] == "report_ack" and ack["seq"] == 4, ack
        reasons = {r["seq"]: r["reason"] for r in ack["rejected"]}
        assert sorted(reasons) == [2, 3]
        assert "not bound" in reasons[2]
        assert f"more than {storable.MAX_REPORT_BYTES}" in reasons[3]
        ws.send(report(status_row(5, capacity={"cpu": "8"})))
        assert recv_skipping_changes(ws) == {"type": "report_ack", "seq": 5}
    assert hub.request("GET", "/api/v1/nodes/mixed")[1]["status"]["capacity"] == {"cpu": "8"}
    mine = hub.request("GET", f"{DEVICES}/mine")[1]["status"]
    assert mine["state"] == "online" and "twins" not in mine
    assert hub.request("GET", f"{DEVICES}/theirs")[1]["status"] == {}
    assert "refused report row 3" in hub.log()


def test_a_deleted_node_registers_again_from_seq_zero(hub: Hub) -> None:
    """Deleting a Node forgets the report seq the hub held for it: the node's next hello is
    welcomed at report_seq 0, so a poisoned position never outlives the Node."""
    with open_ws(hub) as ws:
        assert hello(ws, "phoenix")["report_seq"] == 0
        ws.send(report(status_row(5, usage={"cpu": 1.0})))
        assert recv_skipping_changes(ws) == {"type": "report_ack", "seq": 5}
    with open_ws(hub) as ws:
        assert hello(ws, "phoenix")["report_seq"] == 5
    wait_for(lambda: "node phoenix: disconnected" in hub.log(), 10, "the session to end")
    assert hub.request("DELETE", "/api/v1/nodes/phoenix")[0] == 200
    with open_ws(hub) as ws:
        assert hello(ws, "phoenix")["report_seq"] == 0
    node = hub.request("GET", "/api/v1/nodes/phoenix")[1]
    assert node["status"]["sync"] == {"ackedRevision": 0, "reportSeq": 0}


def test_an_older_edges_device_states_are_kept_as_the_hubs_states(hub: Hub) -> None:
    """An edge from before the hub's state vocabulary sends the mapper's spelling: the hub
    keeps the state it means; a spelling it does not know is kept as sent."""
    status, body = hub.request(
        "POST", DEVICES, {"metadata": {"name": "old"}, "spec": {"nodeName": "old-edge"}}
    )
    assert status == 201, body
    with open_ws(hub) as ws:
        hello(ws, "old-edge")
        for seq, (sent, kept) in enumerate(
            (("DISCONNECTED", "offline"), ("OK", "online"), ("Unhealthy", "unhealthy"),
             ("sleeping", "sleeping")),
            start=1,
        ):  # fmt: skip
            row = {"seq": seq, "topic": "device/state", "key": "state/default/old",
                   "body": {"device": "default/old", "state": sent}}  # fmt: skip
            ws.send(report(row))
            assert recv_skipping_changes(ws) == {"type": "report_ack", "seq": seq}
            assert hub.request("GET", f"{DEVICES}/old")[1]["status"]["state"] == kept
