"""One test per item of KUBEEDGE-MQTT.md "Where Edgeward differs, on purpose"."""

from __future__ import annotations

import pytest

from devicetwin import Outcome
from tests.unit.devicetwin.support import (
    EMPTY_ID_RESULT,
    T0,
    D,
    Edge,
    device,
    model,
    published,
    wire,
)


def test_desired_values_reach_mappers_as_expected_and_delta(edge: Edge) -> None:
    """A desired value from the hub is an MQTT expected value with a delta (not gRPC)."""
    edge.cloud(device(properties={"temp": "21"}), model(temp="INT"))
    edge.update({"temp": {"actual": {"value": "19"}}})
    out = published(edge.cloud(device(properties={"temp": "22"}), model(temp="INT")))
    delta = out[f"{D}/twin/update/delta"]
    assert delta["delta"] == {"temp": "22"}
    assert delta["twin"]["temp"]["expected"] == {"value": "22", "metadata": {"timestamp": T0}}
    assert edge.get()["twin"]["temp"]["expected"]["value"] == "22"


def test_newer_cloud_write_is_accepted_and_local_change_reported(edge: Edge) -> None:
    """After a local change of expected the operator's write wins; the local value is reported."""
    edge.cloud(device(properties={"temp": "21"}), model(temp="INT"))
    edge.update({"temp": {"expected": {"value": "25"}}})
    # the local change reached the outbox as observedDesired {25, version {1, 1}}
    [row] = edge.outbox
    assert wire(row.body)["twins"]["temp"]["observedDesired"]["value"] == "25"
    # the operator writes without having seen it (the hub still shows edge version 0)
    outcome = edge.cloud(
        device(properties={"temp": "30"}, status={"temp": {"cloud": 1, "edge": 0}}),
        model(temp="INT"),
    )
    assert outcome.error is None and edge.twin("temp").expected.value == "30"
    reported = wire(outcome.reports[0].body)["twins"]["temp"]
    assert reported["observedDesired"]["value"] == "30"
    assert reported["conflict"] == {"supersededLocalValue": "25"}


def test_cloud_updated_from_a_local_client_is_ignored(thermo: Edge) -> None:
    """twin/cloud_updated published by a local MQTT client changes nothing and gets no reply."""
    body = {"event_id": "c1", "twin": {"temp": {"expected": {"value": "1"}}}}
    before = thermo.devices["default/thermo"]
    assert thermo.mqtt(f"{D}/twin/cloud_updated", body) == Outcome()
    assert thermo.devices["default/thermo"] == before


@pytest.mark.parametrize(
    "twin",
    [
        {"actual": {}},
        {"expected": {}},
        {"expected": {"value": None, "metadata": {"timestamp": 1}}},
        {"expected": {"value": "1"}, "actual": {}},
    ],
)
def test_value_object_without_value_is_a_400_and_device_stays_usable(
    thermo: Edge, twin: dict[str, object]
) -> None:
    """``"actual":{}`` or ``"expected":{}`` is a 400 on the empty-id topic, not a crash."""
    outcome = thermo.update({"temp": twin})
    assert published(outcome) == {
        EMPTY_ID_RESULT: {
            "event_id": "e1",
            "timestamp": T0,
            "code": 400,
            "reason": "Update twin error, expected and actual must carry a value",
        }
    }
    assert outcome.updated == ()
    outcome = thermo.update({"temp": {"actual": {"value": "1"}}})
    assert outcome.error is None and thermo.twin("temp").actual.value == "1"


def test_reports_are_outbox_rows_whose_latest_state_survives(thermo: Edge) -> None:
    """Reports are keyed whole-device rows: while nothing is acked the outbox keeps the latest."""
    thermo.cloud(device(properties={"temp": "21"}))
    thermo.update({"temp": {"actual": {"value": "20"}}})
    thermo.mqtt(f"{D}/state/update", {"event_id": "s", "state": "online"})
    thermo.update({"hum": {"actual": {"value": "40"}}})
    thermo.mqtt(f"{D}/state/update", {"event_id": "s", "state": "offline"})
    thermo.mqtt("$hw/events/upload/a", b"1")
    thermo.mqtt("$hw/events/upload/a", b"2")
    rows = [(r.topic, r.key) for r in thermo.outbox]
    assert rows == [
        ("twin/reported", "twin/default/thermo"),
        ("device/state", "state/default/thermo"),
        ("upload", None),
        ("upload", None),
    ]
    twins = wire(thermo.outbox[0].body)["twins"]
    assert twins["temp"]["reported"]["value"] == "20" and twins["hum"]["reported"]["value"] == "40"
    assert thermo.outbox[1].body["state"] == "offline"
