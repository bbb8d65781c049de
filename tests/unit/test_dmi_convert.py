"""Devices and models as DMI messages, and DMI reports as MQTT twin messages
(edgecore/dmi/convert.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import wrappers_pb2

from edgecore.dmi import api_pb2 as pb
from edgecore.dmi.convert import (
    device_message,
    model_message,
    model_of,
    protocol_of,
    state_update,
    twin_update,
    wrapped,
)


@pytest.mark.parametrize(
    ("value", "kind", "inside"),
    [
        ("even", wrappers_pb2.StringValue, "even"),
        (True, wrappers_pb2.BoolValue, True),
        (9600, wrappers_pb2.Int64Value, 9600),
        (-(2**63), wrappers_pb2.Int64Value, -(2**63)),
        (2**63, wrappers_pb2.StringValue, str(2**63)),  # past int64: its JSON text
        (1.5, wrappers_pb2.DoubleValue, 1.5),
        ({"a": [1, 2]}, wrappers_pb2.StringValue, '{"a":[1,2]}'),
    ],
)
def test_config_values_travel_in_wrapper_types(value: Any, kind: Any, inside: Any) -> None:
    packed = wrapped(value)
    assert packed is not None and packed.Is(kind.DESCRIPTOR)
    message = kind()
    packed.Unpack(message)
    assert message.value == inside
    assert wrapped(None) is None


def test_a_bare_device_still_has_what_a_framework_mapper_reads_unchecked() -> None:
    """No protocol config, no desired value, no visitors: all present, empty."""
    device = {"metadata": {"name": "d", "namespace": "ns"},
              "spec": {"properties": [{"name": "p"}, {"nope": 1}, "junk"]}}  # fmt: skip
    message = pb.Device.FromString(device_message(device).SerializeToString())
    assert (message.name, message.namespace) == ("d", "ns")
    assert message.spec.HasField("protocol") and message.spec.protocol.HasField("configData")
    [prop] = message.spec.properties
    assert prop.HasField("desired") and prop.desired.value == ""
    assert prop.HasField("visitors") and prop.visitors.HasField("configData")
    assert (prop.reportCycle, prop.collectCycle, prop.reportToCloud) == (0, 0, False)


def test_hostile_fields_do_not_break_the_conversion() -> None:
    device = {"metadata": "x", "spec": {"protocol": [], "deviceModelRef": 5, "properties": [
        {"name": "p", "desired": {"value": 7, "metadata": {"timestamp": 12}},
         "visitors": "v", "reportCycle": 2**70, "collectCycle": True, "reportToCloud": 1},
    ]}}  # fmt: skip
    message = device_message(device)
    [prop] = message.spec.properties
    assert prop.desired.value == "7" and dict(prop.desired.metadata) == {"timestamp": "12"}
    assert (prop.reportCycle, prop.collectCycle, prop.reportToCloud) == (0, 0, True)
    assert protocol_of(device) == "" and protocol_of(None) == "" and model_of(device) == ""


def test_a_model_keeps_its_properties() -> None:
    model = {"metadata": {"name": "m", "namespace": "default"}, "spec": {"properties": [
        {"name": "speed", "type": "INT", "accessMode": "ReadWrite", "minimum": "0",
         "maximum": 3000, "unit": "rpm"}, {"type": "no name"}]}}  # fmt: skip
    [prop] = model_message(model).spec.properties
    assert (prop.name, prop.type, prop.maximum, prop.unit) == ("speed", "INT", "3000", "rpm")


def test_reports_become_the_mqtt_messages_a_mapper_would_send() -> None:
    status = pb.DeviceStatus()
    status.twins.add(
        propertyName="speed", reported=pb.TwinProperty(value="5", metadata={"type": "INT"})
    )
    status.twins.add(
        propertyName="mode", reported=pb.TwinProperty(value="a", metadata={"type": "enum"})
    )
    status.twins.add(propertyName="unreported")
    topic, payload = twin_update("default", "pump", status, 1000)
    assert topic == "$hw/events/device/default/pump/twin/update"
    assert json.loads(payload) == {
        "event_id": "",
        "timestamp": 1000,
        "twin": {
            "speed": {"actual": {"value": "5"}, "metadata": {"type": "int"}},
            "mode": {"actual": {"value": "a"}},
        },
    }
    topic, payload = state_update("plant", "pump", "OK", 5)
    assert topic == "$hw/events/device/plant/pump/state/update"
    assert json.loads(payload) == {"event_id": "", "timestamp": 5, "state": "OK"}
