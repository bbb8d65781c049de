"""Uploads as the hub stores them, on SQLite and PostgreSQL: once per (node, seq), any
storable string served back as it came (NUL included, which PostgreSQL's TEXT refuses),
hostile rows refused with a reason, filters, and retention."""

from __future__ import annotations

from typing import Any

import pytest

from cloudhub import events
from cloudhub.store import Store
from edgeward.errors import ReportRefused
from edgeward.protocol import ReportItem
from tests.support.clock import ManualClock


def upload(seq: int, topic: str = "$hw/events/upload/meter-7", **body: Any) -> ReportItem:
    return ReportItem(seq, "upload", None, {"topic": topic, "payload": f"p{seq}", **body})


def record(store: Store, node: str, item: ReportItem) -> None:
    with store.writing() as tx:
        events.record_upload(tx, node, item)


def test_an_upload_is_kept_once_per_node_and_seq(store: Store) -> None:
    record(store, "gw-1", upload(1))
    record(store, "gw-1", upload(1, payload="a replay"))
    record(store, "gw-2", upload(1))
    kept = events.read(store.engine, events.EventFilter(), 0, 10)
    assert [(e["node"], e["seq"], e["payload"]) for e in kept] == [
        ("gw-1", 1, "p1"),
        ("gw-2", 1, "p1"),
    ]
    assert kept[0]["device"] == "meter-7" and kept[0]["topic"] == "$hw/events/upload/meter-7"


def test_any_storable_payload_is_served_back_as_it_came(store: Store) -> None:
    odd = "nul\x00 tab\t é 🚀 \u2028"
    record(store, "gw-1", upload(1, payload=odd))
    record(store, "gw-1", upload(2, payload="3q2+7w==", encoding="base64"))
    first, second = events.read(store.engine, events.EventFilter(), 0, 10)
    assert first["payload"] == odd and "encoding" not in first
    assert second["encoding"] == "base64"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"topic": "$hw/events/device/x/twin/update", "payload": ""}, "topic must be"),
        ({"topic": "$hw/events/upload/a\x00b", "payload": ""}, "printable"),
        ({"topic": "$hw/events/upload/" + "a" * 2000, "payload": ""}, "at most 1024"),
        ({"topic": "$hw/events/upload/a", "payload": 5}, "payload must be a string"),
        ({"topic": "$hw/events/upload/a"}, "payload must be a string"),
        ({"topic": 7, "payload": ""}, "topic must be"),
        ({"topic": "$hw/events/upload/a", "payload": "\ud800"}, "not valid Unicode"),
        ({"topic": "$hw/events/upload/a", "payload": "x" * (1024 * 1024 + 1)}, "bytes, more"),
    ],
)
def test_a_row_the_hub_cannot_keep_is_refused_with_its_reason(
    store: Store, body: dict[str, Any], says: str
) -> None:
    with pytest.raises(ReportRefused, match=says), store.writing() as tx:
        events.record_upload(tx, "gw-1", ReportItem(1, "upload", None, body))
    assert events.read(store.engine, events.EventFilter(), 0, 10) == []


def test_filters_by_node_and_by_device_or_what_is_under_it(store: Store) -> None:
    topics = [
        "$hw/events/upload/meter-7",
        "$hw/events/upload/default/pump-1",
        "$hw/events/upload/default/pump-2",
        "$hw/events/upload",
        "SYS/dis/upload_records",
        "$hw/events/upload/meter-7%",
    ]
    for seq, topic in enumerate(topics, start=1):
        record(store, "gw-1" if seq % 2 else "gw-2", upload(seq, topic))

    def devices(**where: str) -> list[Any]:
        found = events.read(store.engine, events.EventFilter(**where), 0, 100)
        return [e["device"] for e in found]

    assert devices() == ["meter-7", "default/pump-1", "default/pump-2", None, None, "meter-7%"]
    assert devices(device="meter-7") == ["meter-7"]  # % is not a wildcard
    assert devices(device="default") == ["default/pump-1", "default/pump-2"]
    assert devices(node="gw-2") == ["default/pump-1", None, "meter-7%"]
    newest = events.newest(store.engine, events.EventFilter(), 2)
    assert [e["seq"] for e in newest] == [5, 6]
    assert events.head(store.engine) == newest[-1]["id"]


def test_retention_deletes_what_is_older_and_ids_are_never_reused(
    store: Store, clock: ManualClock
) -> None:
    record(store, "gw-1", upload(1))
    clock.now += 100
    record(store, "gw-1", upload(2))
    last = events.head(store.engine)
    assert events.expire(store.engine, clock() - 50) == 1
    assert [e["seq"] for e in events.read(store.engine, events.EventFilter(), 0, 10)] == [2]
    assert events.expire(store.engine, clock() + 1) == 1
    record(store, "gw-1", upload(3))
    (third,) = events.read(store.engine, events.EventFilter(), 0, 10)
    assert third["id"] > last, "a watch resuming after the last id would miss it"
