"""apply_cloud: Devices from the hub become twins; cloud writes, removals and conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from devicetwin import BadRequest, Outcome, Twin, TwinValue, ValueTypeError, Version
from tests.unit.devicetwin.support import NODE, T0, D, Edge, device, model, published, wire

MEMBERSHIP_UPDATED = f"$hw/events/node/{NODE}/membership/updated"


def test_new_device_gets_twins_typed_by_its_model(edge: Edge) -> None:
    """Each property becomes a twin whose type comes from the DeviceModel, else string."""
    props = {p: None for p in ("i", "f", "d", "b", "s", "by", "st", "untyped", "unmodelled")}
    edge.cloud(
        device(properties=props),
        model(i="INT", f="FLOAT", d="DOUBLE", b="boolean", s="STRING", by="BYTES", st="STREAM"),
    )
    types = {k: t.type for k, t in edge.devices["default/thermo"].twins.items()}
    assert types == {
        "i": "int",
        "f": "float",
        "d": "float",
        "b": "boolean",
        "s": "string",
        "by": "string",
        "st": "string",
        "untyped": "string",
        "unmodelled": "string",
    }


def test_model_property_without_type_is_a_string(edge: Edge) -> None:
    """A model property with no type gives a string twin."""
    m = {"spec": {"properties": [{"name": "temp"}, {"type": "INT"}, "junk"]}}
    edge.cloud(device(properties={"temp": None}), m)
    assert edge.twin("temp").type == "string"


def test_new_device_with_desired_value(edge: Edge) -> None:
    """A desired value becomes expected with cloud version 1, and the whole news is published."""
    outcome = edge.cloud(device(properties={"temp": ("21", 1700)}), model(temp="INT"))
    assert edge.twin("temp") == Twin(
        type="int",
        expected=TwinValue("21", T0),
        expected_version=Version(1, 0),
        cloud_desired=("21", "1700"),
    )
    assert [p.topic for p in outcome.publish] == [
        MEMBERSHIP_UPDATED,
        f"{D}/twin/update/document",
        f"{D}/twin/update/delta",
    ]
    assert published(outcome)[f"{D}/twin/update/delta"]["delta"] == {"temp": "21"}
    [row] = outcome.reports
    assert wire(row.body)["twins"]["temp"]["observedDesired"] == {
        "value": "21",
        "timestamp": T0,
        "version": {"cloud": 1, "edge": 0},
    }


def test_new_device_without_properties_is_only_announced(edge: Edge) -> None:
    """A device with no properties is stored and announced; no document, no report."""
    outcome = edge.cloud({"metadata": {"name": "thermo"}, "spec": {"properties": "junk"}})
    assert [p.topic for p in outcome.publish] == [MEMBERSHIP_UPDATED]
    assert outcome.reports == ()
    stored = edge.devices["default/thermo"]
    assert (stored.id, stored.name, stored.namespace, stored.description) == (
        "default/thermo",
        "thermo",
        "default",
        "",
    )


def test_device_in_other_namespace(edge: Edge) -> None:
    """The device id is namespace/name."""
    edge.cloud(device(namespace="plant", properties={"temp": "1"}), device_id="plant/thermo")
    assert "plant/thermo" in edge.devices
    assert edge.published[1].topic == "$hw/events/device/plant/thermo/twin/update/document"


@pytest.mark.parametrize(
    ("annotations", "description"),
    [({"description": "hall"}, "hall"), ({"description": 5}, ""), ("junk", ""), (None, "")],
)
def test_description_comes_from_the_annotation(
    edge: Edge, annotations: Any, description: str
) -> None:
    """The description is the description annotation when it is a string, else empty."""
    obj = device()
    obj["metadata"]["annotations"] = annotations
    edge.cloud(obj)
    assert edge.devices["default/thermo"].description == description


def test_description_change_is_stored_without_publishing(thermo: Edge) -> None:
    """A new description is persisted; mappers are not told."""
    outcome = thermo.cloud(device(description="hall"))
    assert outcome.updated[0].description == "hall"
    assert outcome.publish == () and outcome.reports == ()


def test_resending_the_same_device_is_a_no_op(edge: Edge) -> None:
    """The same Device applied twice changes nothing the second time (replays are harmless)."""
    obj = device(properties={"temp": "21", "hum": None}, description="x")
    edge.cloud(obj, model(temp="INT"))
    assert edge.cloud(obj, model(temp="INT")) == Outcome()


def test_unrelated_edit_never_reverts_a_local_change(edge: Edge) -> None:
    """A Device re-sent with the same desired identity (e.g. a label edit) is not a cloud write."""
    edge.cloud(device(properties={"temp": ("21", 1)}), model(temp="INT"))
    edge.update({"temp": {"expected": {"value": "25"}}})
    relabelled = device(properties={"temp": ("21", 1)})
    relabelled["metadata"]["labels"] = {"room": "b"}
    outcome = edge.cloud(relabelled, model(temp="INT"))
    assert outcome == Outcome()
    assert edge.twin("temp").expected.value == "25"


def test_new_identity_is_a_cloud_write(edge: Edge) -> None:
    """A new desired value, or the same value with a new timestamp, is written again."""
    edge.cloud(device(properties={"temp": ("21", 1)}))
    edge.now_ms = T0 + 1
    edge.cloud(device(properties={"temp": ("21", 2)}))
    twin = edge.twin("temp")
    assert (twin.expected, twin.expected_version) == (TwinValue("21", T0 + 1), Version(2, 0))
    edge.cloud(device(properties={"temp": ("22", 2)}))
    assert edge.twin("temp").expected_version == Version(3, 0)


def test_cloud_write_after_a_local_change_wins(edge: Edge) -> None:
    """An operator's newer write replaces a mapper's local expected value."""
    edge.cloud(device(properties={"temp": "21"}))
    edge.update({"temp": {"expected": {"value": "25"}}})
    outcome = edge.cloud(
        device(properties={"temp": "30"}, status={"temp": {"cloud": 1, "edge": 1}})
    )
    twin = edge.twin("temp")
    assert twin.expected.value == "30"
    assert twin.expected_version == Version(2, 1)
    assert "conflict" not in wire(outcome.reports[0].body)["twins"]["temp"]
    doc = published(outcome)[f"{D}/twin/update/document"]["twin"]["temp"]
    assert (doc["last"]["expected"]["value"], doc["current"]["expected"]["value"]) == ("25", "30")


@pytest.mark.parametrize(
    "status",
    [
        None,  # the hub never saw a report
        {"temp": {"cloud": 1, "edge": 0}},  # the hub saw the cloud write, not the local change
        {"temp": {"cloud": 1, "edge": True}},  # not a number: nothing seen
        {"temp": {"cloud": 1, "edge": "1"}},
        {"other": {"cloud": 1, "edge": 5}},
    ],
)
def test_cloud_write_over_an_unseen_local_change_is_reported_as_conflict(
    edge: Edge, status: dict[str, dict[str, Any]] | None
) -> None:
    """When the hub had not seen the local expected, the superseded value is reported."""
    edge.cloud(device(properties={"temp": "21"}))
    edge.update({"temp": {"expected": {"value": "25"}}})
    outcome = edge.cloud(device(properties={"temp": "30"}, status=status))
    assert edge.twin("temp").expected.value == "30"
    reported = wire(outcome.reports[0].body)["twins"]["temp"]
    assert reported["conflict"] == {"supersededLocalValue": "25"}
    assert reported["observedDesired"]["version"] == {"cloud": 2, "edge": 1}


def test_malformed_status_is_ignored(edge: Edge) -> None:
    """Status entries that are not objects, or lack a property name, count as nothing seen."""
    edge.cloud(device(properties={"temp": "21"}))
    edge.update({"temp": {"expected": {"value": "25"}}})
    obj = device(properties={"temp": "30"})
    obj["status"] = {"twins": ["junk", {"observedDesired": {"metadata": {"version": {"edge": 9}}}}]}
    outcome = edge.cloud(obj)
    assert "conflict" in wire(outcome.reports[0].body)["twins"]["temp"]


def test_cloud_write_revives_a_deleted_twin(edge: Edge) -> None:
    """A cloud write to a twin the mapper deleted brings it back with the desired value."""
    edge.cloud(device(properties={"temp": "21"}))
    edge.update({"temp": None})
    outcome = edge.cloud(device(properties={"temp": "22"}))
    assert edge.get()["twin"]["temp"]["expected"]["value"] == "22"
    reported = wire(outcome.reports[0].body)["twins"]["temp"]
    assert reported["conflict"] == {"supersededLocalValue": None}  # the local delete
    doc = published(outcome)[f"{D}/twin/update/document"]["twin"]["temp"]
    assert doc["last"] is None


def test_losing_the_desired_value_keeps_the_twin(edge: Edge) -> None:
    """A property without desired keeps its twin and expected; the same value later is a write."""
    edge.cloud(device(properties={"temp": "21"}))
    outcome = edge.cloud(device(properties={"temp": None}))
    assert outcome.publish == () and outcome.reports == ()
    twin = edge.twin("temp")
    assert (twin.expected.value, twin.cloud_desired) == ("21", None)
    edge.cloud(device(properties={"temp": "21"}))
    assert edge.twin("temp").expected_version == Version(2, 0)


def test_removed_property_keeps_its_twin(edge: Edge) -> None:
    """A property dropped from the Device keeps its twin (mappers may still use it)."""
    edge.cloud(device(properties={"temp": "21"}))
    edge.update({"local": {"actual": {"value": "1"}}})
    edge.cloud(device(properties={}))
    twins = edge.devices["default/thermo"].twins
    assert set(twins) == {"temp", "local"} and twins["temp"].cloud_desired is None


def test_model_does_not_retype_an_existing_twin(edge: Edge) -> None:
    """A twin created by a mapper keeps its type when the model later defines the property."""
    edge.cloud(device())
    edge.update({"temp": {"actual": {"value": "x"}}})
    edge.cloud(device(properties={"temp": "abc"}), model(temp="INT"))
    assert edge.twin("temp").type == "string" and edge.twin("temp").expected.value == "abc"


def test_desired_value_that_does_not_fit_is_skipped(edge: Edge) -> None:
    """A desired value of the wrong type is skipped with an error; other properties still apply."""
    outcome = edge.cloud(device(properties={"temp": "warm", "hum": "40"}), model(temp="INT"))
    assert isinstance(outcome.error, ValueTypeError)
    assert (outcome.error.code, outcome.error.reason) == (400, "the value is not int or integer")
    assert outcome.error.reply_topic is None
    assert edge.twin("temp").expected is None and edge.twin("temp").cloud_desired is None
    assert edge.twin("hum").expected.value == "40"


def test_desired_value_outside_the_alphabet_is_skipped(edge: Edge) -> None:
    """A desired value with spaces (which the hub refuses) is skipped with an error."""
    outcome = edge.cloud(device(properties={"temp": "a b"}))
    assert isinstance(outcome.error, BadRequest) and outcome.error.reason.startswith("The value")
    assert edge.twin("temp").expected is None


def test_desired_values_that_are_not_strings(edge: Edge) -> None:
    """Numbers and booleans count as their JSON text; objects are refused."""
    obj = device(properties={"n": None, "b": None, "o": None})
    obj["spec"]["properties"][0]["desired"] = {"value": 21}
    obj["spec"]["properties"][1]["desired"] = {"value": True}
    obj["spec"]["properties"][2]["desired"] = {"value": {"x": 1}}
    outcome = edge.cloud(obj, model(n="INT", b="BOOLEAN"))
    assert edge.twin("n").expected.value == "21" and edge.twin("b").expected.value == "true"
    assert edge.twin("o").expected is None and isinstance(outcome.error, BadRequest)


@pytest.mark.parametrize("name", [None, 5, "", "a b"])
def test_property_with_bad_name_is_skipped(edge: Edge, name: Any) -> None:
    """A property whose name is not a twin key is skipped with an error."""
    obj = device(properties={"temp": "1"})
    obj["spec"]["properties"].append({"name": name, "desired": {"value": "2"}})
    obj["spec"]["properties"].append("junk")
    outcome = edge.cloud(obj)
    assert outcome.error is not None and outcome.error.reason.startswith("The key of twin")
    assert set(edge.devices["default/thermo"].twins) == {"temp"}


def test_first_error_is_kept(edge: Edge) -> None:
    """With several bad properties Outcome.error holds the first."""
    outcome = edge.cloud(device(properties={"a": "x y", "b": "x"}), model(b="INT"))
    assert outcome.error is not None and outcome.error.reason.startswith("The value")


def test_malformed_device_is_read_defensively(edge: Edge) -> None:
    """Missing metadata or spec does not crash: a device named "" in default."""
    outcome = edge.cloud({"metadata": "junk", "spec": "junk"}, "junk", device_id="default/")  # type: ignore[arg-type]
    assert outcome.updated[0].id == "default/"


def test_removed_device(edge: Edge) -> None:
    """A Device deleted or bound elsewhere removes the twin state and tells mappers."""
    edge.cloud(device(properties={"temp": "1"}))
    edge.forget()
    outcome = edge.cloud(None)
    assert outcome.removed == ("default/thermo",) and outcome.updated == ()
    assert published(outcome)[MEMBERSHIP_UPDATED]["removed_devices"][0]["id"] == "default/thermo"
    assert edge.devices == {}


def test_removing_an_unknown_device_is_a_no_op(edge: Edge) -> None:
    """Removing a device this edge does not hold does nothing."""
    assert edge.cloud(None) == Outcome()


def test_cloud_updated_from_mqtt_is_ignored(thermo: Edge) -> None:
    """Only the hub link writes desired values: twin/cloud_updated from MQTT does nothing."""
    body = {
        "event_id": "c",
        "twin": {"temp": {"expected": {"value": "1"}, "metadata": {"type": "deleted"}}},
    }
    assert thermo.mqtt(f"{D}/twin/cloud_updated", body) == Outcome()
    assert thermo.devices["default/thermo"].twins == {}
