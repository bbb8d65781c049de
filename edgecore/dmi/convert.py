"""Between the edge's objects and DMI's messages: Devices and DeviceModels as a mapper made
with KubeEdge's mapper-framework needs them, and its reports as the MQTT twin messages
edgecore already handles (so both kinds of mapper share one twin state and outbox).

A framework mapper crashes on a Device without ``spec.protocol`` or with a property that
has no ``desired`` or no ``visitors.configData``: every property gets all three, empty
when the Device has none. Config values travel as ``google.protobuf.Any`` holding the
protobuf wrapper types, as KubeEdge's edgecore sends them.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import any_pb2, wrappers_pb2

from devicetwin.topics import device_topic
from edgecore.dmi import api_pb2 as pb

#: Twin types a report may name in its metadata (the MQTT protocol's).
_TYPES = {"string", "int", "integer", "float", "boolean"}


def device_message(device: dict[str, Any]) -> pb.Device:
    """A Device object (as the hub sent it) as DMI's Device."""
    meta, spec = _dict(device.get("metadata")), _dict(device.get("spec"))
    protocol = _dict(spec.get("protocol"))
    protocol_name = str(protocol.get("protocolName") or "")
    out = pb.Device(name=str(meta.get("name", "")), namespace=str(meta.get("namespace", "")))
    out.spec.deviceModelReference = str(_dict(spec.get("deviceModelRef")).get("name") or "")
    out.spec.protocol.protocolName = protocol_name
    _fill(out.spec.protocol.configData, protocol.get("configData"))
    for prop in spec.get("properties") or []:
        if not isinstance(prop, dict) or not isinstance(prop.get("name"), str):
            continue
        item = out.spec.properties.add(name=prop["name"])
        desired = _dict(prop.get("desired"))
        item.desired.SetInParent()
        item.desired.value = _text(desired.get("value"))
        for key, value in _dict(desired.get("metadata")).items():
            item.desired.metadata[str(key)] = _text(value)
        visitors = _dict(prop.get("visitors"))
        item.visitors.protocolName = str(visitors.get("protocolName") or protocol_name)
        _fill(item.visitors.configData, visitors.get("configData"))
        item.reportCycle = _int(prop.get("reportCycle"))
        item.collectCycle = _int(prop.get("collectCycle"))
        item.reportToCloud = bool(prop.get("reportToCloud", False))
    return out


def model_message(model: dict[str, Any]) -> pb.DeviceModel:
    """A DeviceModel object as DMI's DeviceModel."""
    meta, spec = _dict(model.get("metadata")), _dict(model.get("spec"))
    out = pb.DeviceModel(name=str(meta.get("name", "")), namespace=str(meta.get("namespace", "")))
    for prop in spec.get("properties") or []:
        if isinstance(prop, dict) and isinstance(prop.get("name"), str):
            out.spec.properties.add(
                name=prop["name"],
                description=_text(prop.get("description")),
                type=_text(prop.get("type")),
                accessMode=_text(prop.get("accessMode")),
                minimum=_text(prop.get("minimum")),
                maximum=_text(prop.get("maximum")),
                unit=_text(prop.get("unit")),
            )
    return out


def protocol_of(device: dict[str, Any] | None) -> str:
    """The protocol name a Device names (whose mapper serves it), or ""."""
    if device is None:
        return ""
    protocol = _dict(_dict(device.get("spec")).get("protocol"))
    name = protocol.get("protocolName")
    return name if isinstance(name, str) else ""


def model_of(device: dict[str, Any]) -> str:
    name = _dict(_dict(device.get("spec")).get("deviceModelRef")).get("name")
    return name if isinstance(name, str) else ""


def twin_update(
    namespace: str, name: str, status: pb.DeviceStatus, now_ms: int
) -> tuple[str, bytes]:
    """ReportDeviceStatus as the MQTT twin update a mapper would send: (topic, payload)."""
    twin: dict[str, Any] = {}
    for reported in status.twins:
        if not reported.HasField("reported"):
            continue
        entry: dict[str, Any] = {"actual": {"value": reported.reported.value}}
        kind = reported.reported.metadata.get("type", "").lower()
        if kind in _TYPES:
            entry["metadata"] = {"type": kind}
        twin[reported.propertyName] = entry
    body = {"event_id": "", "timestamp": now_ms, "twin": twin}
    return device_topic(f"{namespace}/{name}", "twin/update"), json.dumps(body).encode()


def state_update(namespace: str, name: str, state: str, now_ms: int) -> tuple[str, bytes]:
    """ReportDeviceStates as the MQTT state update a mapper would send: (topic, payload)."""
    body = {"event_id": "", "timestamp": now_ms, "state": state}
    return device_topic(f"{namespace}/{name}", "state/update"), json.dumps(body).encode()


def wrapped(value: Any) -> any_pb2.Any | None:
    """A config value in an Any of the wrapper type for it; None for a null. Objects and
    lists go as their JSON text."""
    message: Any
    if value is None:
        return None
    if isinstance(value, bool):
        message = wrappers_pb2.BoolValue(value=value)
    elif isinstance(value, int) and -(2**63) <= value < 2**63:
        message = wrappers_pb2.Int64Value(value=value)
    elif isinstance(value, float):
        message = wrappers_pb2.DoubleValue(value=value)
    elif isinstance(value, str):
        message = wrappers_pb2.StringValue(value=value)
    else:
        message = wrappers_pb2.StringValue(value=json.dumps(value, separators=(",", ":")))
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _fill(target: pb.CustomizedValue, data: Any) -> None:
    target.SetInParent()  # present even when empty: a framework mapper reads it unchecked
    for key, value in _dict(data).items():
        packed = wrapped(value)
        if packed is not None:
            target.data[str(key)].CopyFrom(packed)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def _int(value: Any) -> int:
    return (
        value
        if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
        else 0
    )
