"""What the hub could never take stops at the edge and holds nothing back: real hub, edgecore,
Mosquitto and a mapper on MQTT."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.test_twins import NS, D, device, model, reported, twins_of, update
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import FakeMapper
from tests.support.procs import Edge, Hub, wait_for


@pytest.fixture
def edge(hub: Hub, start_edge: Any, mqtt_broker: Mosquitto) -> Iterator[Edge]:
    """edge1 with the thermostat model, on the shared broker."""
    assert hub.request("POST", f"{NS}/devicemodels", model())[0] == 201
    yield start_edge("edge1", mqtt=mqtt_broker)


def bound(hub: Hub, name: str) -> None:
    """Create a device on edge1 and wait until the edge has taken it."""
    assert hub.request("POST", f"{NS}/devices", device(name, "edge1"))[0] == 201
    wait_for(
        lambda: twins_of(hub, name).get("target", {}).get("observedDesired"),
        15,
        "the edge to take the device",
    )


def test_a_1001st_twin_is_refused_and_the_device_keeps_reporting(
    hub: Hub, edge: Edge, mqtt_broker: Mosquitto
) -> None:
    """A mapper adding a 1,001st twin gets a 400 on the device's result topic, and the device's
    later reports still reach the hub (before, the hub dropped every report of the device)."""
    bound(hub, "crowded")  # target and temperature: 2 twins
    mapper = FakeMapper(mqtt_broker, f"{D}/crowded/twin/update/result")
    try:
        mapper.publish(
            f"{D}/crowded/twin/update", update("fill", **{f"k{i}": "1" for i in range(998)})
        )
        assert mapper.expect(f"{D}/crowded/twin/update/result")["event_id"] == "fill"
        mapper.publish(f"{D}/crowded/twin/update", update("over", extra="1"))
        refused = mapper.expect(f"{D}/crowded/twin/update/result")
        assert (refused["event_id"], refused["code"]) == ("over", 400)
        assert refused["reason"] == "Update twin error, a device may have at most 1000 twins"
        mapper.publish(f"{D}/crowded/twin/update", update("later", temperature="7.5"))
        assert mapper.expect(f"{D}/crowded/twin/update/result")["event_id"] == "later"
        wait_for(lambda: reported(hub, "crowded", "temperature") == "7.5", 15, "the later report")
        twins = twins_of(hub, "crowded")
        assert len(twins) == 1000 and "extra" not in twins
    finally:
        mapper.close()


def test_oversized_uploads_are_refused_and_hold_nothing_back(
    hub: Hub, edge: Edge, mqtt_broker: Mosquitto
) -> None:
    """An app's upload whose row the hub could not take is refused (a message larger than any
    row unread), counted and logged, and the twin reports made after it still reach the hub
    (before, a row larger than a frame stopped the node's outbox for good)."""
    bound(hub, "camera")
    mapper = FakeMapper(mqtt_broker, f"{D}/camera/twin/update/result")
    try:
        mapper.publish("$hw/events/upload/camera", b"\x00\xff" * 1_600_000)  # 3.2 MB
        # 0.9 MB of control characters: small enough to read, 5.4 MB as JSON (\u0001 each)
        mapper.publish("$hw/events/upload/camera", b"\x01" * 900_000)
        mapper.publish(f"{D}/camera/twin/update", update("after", temperature="3.5"))
        assert mapper.expect(f"{D}/camera/twin/update/result")["event_id"] == "after"
        wait_for(lambda: reported(hub, "camera", "temperature") == "3.5", 15, "the twin report")
    finally:
        mapper.close()
    log = edge.log()
    assert "refused a 3200000 byte message on $hw/events/upload/camera unread" in log
    assert "refused a row on upload, never sent: the body is 5400" in log
    assert edge.running


def test_a_stored_row_the_hub_could_not_take_is_quarantined(
    hub: Hub, edge: Edge, mqtt_broker: Mosquitto
) -> None:
    """Rows an older edgecore left in the outbox that the hub could not take (one larger than a
    frame, one not JSON) are deleted unsent and logged, and the rows after them are delivered
    (before, the large one closed the link at every attempt and nothing behind it was sent)."""
    bound(hub, "legacy")
    assert edge.stop() == 0
    with sqlite3.connect(edge.data_dir / "edge.db") as db:
        huge = json.dumps({"topic": "$hw/events/upload/x", "payload": "y" * 5_000_000})
        planted = [
            db.execute(
                # written now, by an older edgecore: not expired, not yet checked
                "INSERT INTO outbox (topic, key, body, created) VALUES ('upload', NULL, ?, ?)",
                (body, time.time()),
            ).lastrowid
            for body in (huge, "{not json")
        ]
    db.close()
    edge.start()
    mapper = FakeMapper(mqtt_broker, f"{D}/legacy/twin/update/result")
    try:

        def answered() -> bool:
            mapper.publish(f"{D}/legacy/twin/update", update("new", temperature="4.5"))
            return mapper.expect(f"{D}/legacy/twin/update/result", timeout=2)["event_id"] == "new"

        wait_for(answered, 20, "the restarted edge to answer")
        wait_for(lambda: reported(hub, "legacy", "temperature") == "4.5", 15, "the new report")
    finally:
        mapper.close()
    log = edge.log()
    for seq in planted:
        assert f"outbox: deleted row {seq} (upload) unsent" in log
    with edge.db() as db:
        left = db.execute("SELECT seq FROM outbox WHERE seq IN (?, ?)", planted).fetchall()
    assert left == []
