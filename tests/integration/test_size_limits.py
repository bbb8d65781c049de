"""The size limits in edgeward/storable.py hold together: the largest Device the hub can come
to hold (the largest spec the API accepts plus the largest status a twin report can write)
is within MAX_OBJECT_BYTES, and it reaches an edge in a frame under MAX_FRAME_BYTES.
"""

from __future__ import annotations

import warnings
from typing import Any

from cloudhub.api import create_app
from cloudhub.nodes import NodeRegistry
from cloudhub.store import Store
from edgeward import protocol, storable
from edgeward.kinds import DEVICE
from edgeward.sync import NodeBacklog, change_batches, snapshot_frames

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
    from fastapi.testclient import TestClient

ITEM = "/api/v1/namespaces/default/devices/largest"
#: int64's longest number: 20 characters.
WIDEST = storable.INT64_MIN


def size(value: Any) -> int:
    return len(storable.dumps(value).encode("utf-8"))


def spec_size(obj: dict[str, Any]) -> int:
    return size({k: v for k, v in obj.items() if k != "status"})


def largest_twin_report(value_chars: int) -> dict[str, Any]:
    """A twin report as devicetwin/reports.py shapes it, every field at its widest: MAX_TWINS
    twins with 128-character keys, the longest type name, timestamps and versions of 20
    characters (int64's widest), a conflict, and values of ``value_chars`` (at most 512).
    ``deleted`` is left out: the hub copies nothing of it, so without it more of the row's
    bytes become status."""

    def value(letter: str) -> str:
        return letter * value_chars

    twins = {
        f"{i:04d}" + "k" * 124: {
            "reported": {"value": value("r"), "timestamp": WIDEST},
            "observedDesired": {
                "value": value("o"),
                "timestamp": WIDEST,
                "version": {"cloud": WIDEST, "edge": WIDEST},
            },
            "type": "boolean",
            "conflict": {"supersededLocalValue": value("c")},
        }
        for i in range(storable.MAX_TWINS)
    }
    return {"device": "default/largest", "twins": twins}


def widest_report_within_the_row_limit() -> dict[str, Any]:
    """The largest twin report body an edge may write: its size grows by 3 bytes per twin
    per value character, so solve for the longest values that fit MAX_REPORT_BYTES."""
    base = size(largest_twin_report(0))
    chars = min(512, (storable.MAX_REPORT_BYTES - base) // (3 * storable.MAX_TWINS))
    body = largest_twin_report(chars)
    assert size(body) <= storable.MAX_REPORT_BYTES < size(largest_twin_report(chars + 1))
    return body


def test_the_largest_device_fits_an_object_and_a_frame(store: Store) -> None:
    """A Device with the largest spec the API accepts (MAX_SPEC_BYTES, reached by a merge
    patch) and the largest status a twin report can write stays within MAX_OBJECT_BYTES and
    is sent to its edge in one changes or snapshot frame within MAX_FRAME_BYTES."""
    client = TestClient(create_app(store), raise_server_exceptions=False)
    half = {"spec": {"nodeName": "edge-a", "blob": "b" * (storable.MAX_SPEC_BYTES // 2)}}
    created = client.post(
        "/api/v1/namespaces/default/devices", json={"metadata": {"name": "largest"}, **half}
    )
    assert created.status_code == 201, created.text[:300]
    pad = storable.MAX_SPEC_BYTES - spec_size(created.json()) - len(',"pad":""')
    assert client.patch(ITEM, json={"spec": {"pad": "p" * (pad + 1)}}).status_code == 422
    grown = client.patch(ITEM, json={"spec": {"pad": "p" * pad}})
    assert grown.status_code == 200, grown.text[:300]
    assert spec_size(grown.json()) == storable.MAX_SPEC_BYTES

    registry = NodeRegistry(store, grace_period=40)
    registry.register("edge-a", {})
    twin_body = widest_report_within_the_row_limit()
    state_body = {"device": "default/largest", "state": "s" * 64, "lastOnlineTime": "t" * 64}
    rows = (
        protocol.ReportItem(1, protocol.TOPIC_TWIN_REPORTED, "twin/default/largest", twin_body),
        protocol.ReportItem(2, protocol.TOPIC_DEVICE_STATE, "state/default/largest", state_body),
    )
    assert registry.record_reports("edge-a", rows, 0) == (2, ())
    # a spec write routes the whole object, status included, to the edge
    rewritten = client.patch(ITEM, json={"spec": {"pad": "q" * pad}})
    assert rewritten.status_code == 200, rewritten.text[:300]

    device = store.get(DEVICE, "default", "largest")
    assert spec_size(device) == storable.MAX_SPEC_BYTES
    status_bytes, object_bytes = size(device["status"]), size(device)
    assert status_bytes > storable.MAX_REPORT_BYTES  # the status is wider than the row
    assert object_bytes <= storable.MAX_OBJECT_BYTES, (status_bytes, object_bytes)

    backlog = NodeBacklog("edge-a")
    backlog.add(store.changes_for_node("edge-a", 0))
    frames = [
        *change_batches(backlog.take(), store.head()),
        *snapshot_frames(store.objects_for_node("edge-a")[0], store.head()),
    ]
    for frame in frames:
        text = frame.encode()
        assert len(text.encode("utf-8")) <= storable.MAX_FRAME_BYTES, len(text)
        decoded = protocol.decode(text)
        assert [c.object for c in decoded.items] == [device]  # type: ignore[attr-defined]
