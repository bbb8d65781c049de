"""One test per item of KUBEEDGE-MQTT.md "Where Edgeward differs, on purpose"."""

from __future__ import annotations

import json
from typing import Any

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


def _keys(first: int, count: int, value: str = "1") -> dict[str, Any]:
    return {f"k{i}": {"actual": {"value": value}} for i in range(first, first + count)}


def _result(outcome: Outcome) -> Any:
    return published(outcome)[f"{D}/twin/update/result"]


def test_a_device_may_have_at_most_1000_twins(thermo: Edge) -> None:
    """An update that would give a device more than 1,000 twins is a 400 on the device's result
    topic and changes nothing (the hub would drop the device's whole report); the device keeps
    working (KubeEdge has no limit)."""
    assert thermo.update(_keys(0, 999)).error is None
    before = thermo.devices["default/thermo"]
    thermo.forget()
    refused = thermo.update(_keys(999, 2), event_id="over")
    assert _result(refused) == {
        "event_id": "over",
        "timestamp": T0,
        "code": 400,
        "reason": "Update twin error, a device may have at most 1000 twins",
    }
    assert (refused.updated, refused.reports) == ((), ())
    assert thermo.devices["default/thermo"] == before and thermo.outbox == []
    assert thermo.update(_keys(999, 1)).error is None
    assert len(thermo.devices["default/thermo"].twins) == 1000
    assert thermo.update({"k5": None}).error is None  # deleted twins still count
    assert thermo.update({"new": {"actual": {"value": "1"}}}).error.code == 400  # type: ignore[union-attr]
    assert thermo.update({"k5": {"actual": {"value": "2"}}}).error is None


def test_an_update_whose_report_the_hub_could_not_take_is_refused(thermo: Edge) -> None:
    """An update after which the device's twin report would be larger than 1 MiB (the largest
    row the hub takes) is a 400 and changes nothing; a large report under the limit passes."""
    long = "v" * 512
    both = {"expected": {"value": long}, "actual": {"value": long}}
    assert thermo.update({f"k{i}": both for i in range(800)}).error is None
    [row] = thermo.outbox
    assert 900_000 < len(json.dumps(row.body, separators=(",", ":"))) < 1024 * 1024
    thermo.forget()
    refused = thermo.update({f"k{i}": both for i in range(800, 900)}, event_id="big")
    assert _result(refused)["reason"] == (
        "Update twin error, the device's twins would take more than 1048576 bytes"
    )
    assert (refused.updated, thermo.outbox) == ((), [])
    assert len(thermo.devices["default/thermo"].twins) == 800


def test_a_hub_change_past_the_limits_applies_but_is_not_reported(thermo: Edge) -> None:
    """The hub's Device always applies at the edge, but when the mapper's twins and the hub's
    properties together pass a limit, the report the hub could not take is not queued, and the
    outcome says why."""
    thermo.update(_keys(0, 10))
    thermo.forget()
    props: dict[str, str | tuple[str, Any] | None] = {f"p{i}": "1" for i in range(995)}
    outcome = thermo.cloud(device(properties=props))
    assert outcome.error is not None and "at most 1000 twins" in outcome.error.reason
    assert "not reported to the hub" in outcome.error.reason
    assert outcome.reports == () and len(thermo.devices["default/thermo"].twins) == 1005
    assert any(p.topic.endswith("/twin/update/delta") for p in outcome.publish)


def test_a_hub_change_whose_report_would_be_too_large_is_not_reported(thermo: Edge) -> None:
    """Long desired values from the hub on twins whose mapper values are long too: the values
    apply, the report that would exceed 1 MiB is not queued."""
    long = "v" * 512
    thermo.update({f"k{i}": {"actual": {"value": long}} for i in range(900)})
    thermo.forget()
    outcome = thermo.cloud(device(properties={f"k{i}": long for i in range(900)}))
    assert outcome.error is not None and "more than 1048576 bytes" in outcome.error.reason
    assert outcome.reports == () and thermo.twin("k1").expected.value == long
