"""Every MQTT twin payload: requests parsed from mappers, replies built for them.

One frozen dataclass per message. Requests have ``parse(payload)``, which
raises a :class:`~devicetwin.errors.TwinError` carrying KubeEdge's exact
reason (the engine adds the reply topic); replies have ``to_wire()``, which
returns the JSON-able dict to publish. Versions never appear in anything
built here: they travel only between edge and hub.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from devicetwin import errors, gojson
from devicetwin.gojson import Bool, Int64, Map, Str, Struct
from devicetwin.model import DeviceTwin, Twin, TwinValue
from devicetwin.values import key_ok, value_ok

# KubeEdge's message structs (edge/pkg/devicetwin/dttype), as far as they are decoded.
_TYPE_METADATA = Struct({"type": Str()})
_TWIN_VALUE = Struct({"value": Str(pointer=True), "metadata": Struct({"timestamp": Int64()})})
_TWIN_VERSION = Struct({"cloud": Int64(), "edge": Int64()})
_MSG_TWIN = Struct(
    {
        "expected": _TWIN_VALUE,
        "actual": _TWIN_VALUE,
        "optional": Bool(),
        "metadata": _TYPE_METADATA,
        "expected_version": _TWIN_VERSION,
        "actual_version": _TWIN_VERSION,
    }
)
_BASE = {"event_id": Str(), "timestamp": Int64()}
_BASE_MESSAGE = Struct(_BASE)
_TWIN_UPDATE = Struct({**_BASE, "twin": Map(_MSG_TWIN)})
_MSG_ATTR = Struct({"value": Str(), "optional": Bool(), "metadata": _TYPE_METADATA})
_DEVICE_UPDATE = Struct({**_BASE, "state": Str(), "attributes": Map(_MSG_ATTR)})


def _decode(schema: Struct, payload: bytes, reason: str) -> dict[str, Any]:
    try:
        return schema.decode_body(payload)
    except gojson.Mismatch:
        raise errors.BadRequest(reason) from None


@dataclass(frozen=True)
class TwinPatch:
    """One twin of an update request; a None field was not sent."""

    expected: str | None = None
    actual: str | None = None
    optional: bool | None = None
    type: str | None = None  # metadata.type as sent ("" when metadata came without a type)


def _patch_value(twin_value: dict[str, Any] | None, event_id: str) -> str | None:
    if twin_value is None:
        return None
    value = twin_value.get("value")
    if value is None:
        # "actual": {} would crash KubeEdge (nil dereference); we refuse it.
        raise errors.BadRequest(errors.NO_VALUE, event_id)
    if not value_ok(value):
        raise errors.BadRequest(errors.BAD_VALUE, event_id)
    return value


@dataclass(frozen=True)
class UpdateRequest:
    """D/twin/update: ``twins`` maps each key to its patch, or to None to delete the twin."""

    event_id: str
    timestamp: int
    twins: Mapping[str, TwinPatch | None]

    @classmethod
    def parse(cls, payload: bytes) -> UpdateRequest:
        body = _decode(_TWIN_UPDATE, payload, errors.UNMARSHAL_UPDATE)
        event_id = body.get("event_id") or ""
        raw = body.get("twin")
        if raw is None:
            raise errors.BadRequest(errors.NO_TWIN, event_id)
        twins: dict[str, TwinPatch | None] = {}
        for key, msg in raw.items():
            if not key_ok(key):
                raise errors.BadRequest(errors.BAD_KEY, event_id)
            if msg is None:
                twins[key] = None
                continue
            metadata = msg.get("metadata")
            twins[key] = TwinPatch(
                expected=_patch_value(msg.get("expected"), event_id),
                actual=_patch_value(msg.get("actual"), event_id),
                optional=msg.get("optional"),
                type=None if metadata is None else metadata.get("type") or "",
            )
        return cls(event_id=event_id, timestamp=body.get("timestamp") or 0, twins=twins)


@dataclass(frozen=True)
class BaseRequest:
    """D/twin/get and membership/get: only an event id (and a timestamp nobody reads)."""

    event_id: str
    timestamp: int

    @classmethod
    def parse(cls, payload: bytes, reason: str) -> BaseRequest:
        body = _decode(_BASE_MESSAGE, payload, reason)
        return cls(event_id=body.get("event_id") or "", timestamp=body.get("timestamp") or 0)


@dataclass(frozen=True)
class StateRequest:
    """D/state/update: the device's state as the mapper spells it."""

    event_id: str
    timestamp: int
    state: str

    @classmethod
    def parse(cls, payload: bytes) -> StateRequest:
        body = _decode(_DEVICE_UPDATE, payload, errors.UNMARSHAL_STATE)
        return cls(
            event_id=body.get("event_id") or "",
            timestamp=body.get("timestamp") or 0,
            state=body.get("state") or "",
        )


# ---- replies -------------------------------------------------------------------------------


def _msg_value(value: TwinValue) -> dict[str, Any]:
    return {"value": value.value, "metadata": {"timestamp": value.timestamp}}


def msg_twin(twin: Twin, *, expected: bool = True, actual: bool = True) -> dict[str, Any]:
    """A twin as KubeEdge's MsgTwin, without versions (``expected``/``actual`` False omit them)."""
    out: dict[str, Any] = {}
    if expected and twin.expected is not None:
        out["expected"] = _msg_value(twin.expected)
    if actual and twin.actual is not None:
        out["actual"] = _msg_value(twin.actual)
    out["optional"] = twin.optional
    out["metadata"] = {"type": twin.type}
    return out


def visible_twins(device: DeviceTwin) -> dict[str, dict[str, Any]]:
    """Every twin that is not deleted, as MsgTwins (what twin/get returns)."""
    return {key: msg_twin(t) for key, t in device.twins.items() if not t.deleted}


@dataclass(frozen=True)
class ErrorResult:
    """An error result, on the empty-id topic or the device's result topic."""

    event_id: str
    timestamp: int
    code: int
    reason: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "timestamp": self.timestamp,
            "code": self.code,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class TwinResult:
    """D/twin/update/result and D/twin/get/result: twins by key (None: deleted by the request)."""

    event_id: str
    timestamp: int
    twins: Mapping[str, dict[str, Any] | None]

    def to_wire(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "timestamp": self.timestamp, "twin": dict(self.twins)}


@dataclass(frozen=True)
class Document:
    """D/twin/update/document: the last and current state of each changed twin."""

    event_id: str
    timestamp: int
    twins: Mapping[str, tuple[Twin | None, Twin | None]]

    def to_wire(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "timestamp": self.timestamp,
            "twin": {
                key: {
                    "last": None if last is None else msg_twin(last),
                    "current": None if current is None else msg_twin(current),
                }
                for key, (last, current) in self.twins.items()
            },
        }


@dataclass(frozen=True)
class Delta:
    """D/twin/update/delta: twins with an expected value, and those whose actual differs."""

    event_id: str
    timestamp: int
    twins: Mapping[str, dict[str, Any]]
    delta: Mapping[str, str]

    @classmethod
    def of(cls, device: DeviceTwin, new_id: Callable[[], str], timestamp: int) -> Delta | None:
        """The device's delta (with a new event id), or None when every expected value is met."""
        twins: dict[str, dict[str, Any]] = {}
        delta: dict[str, str] = {}
        for key, twin in device.twins.items():
            if twin.deleted or twin.expected is None or twin.expected.value == "":
                continue
            twins[key] = msg_twin(twin)
            actual = "" if twin.actual is None else twin.actual.value
            if twin.expected.value != actual:
                delta[key] = twin.expected.value
        if not delta:
            return None
        return cls(event_id=new_id(), timestamp=timestamp, twins=twins, delta=delta)

    def to_wire(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "timestamp": self.timestamp,
            "twin": dict(self.twins),
            "delta": dict(self.delta),
        }


@dataclass(frozen=True)
class StateResult:
    """D/state/update/result; ``last_online`` is set only for online and ok."""

    event_id: str
    timestamp: int
    name: str
    state: str
    last_online: str | None

    def to_wire(self) -> dict[str, Any]:
        device: dict[str, Any] = {"name": self.name, "state": self.state}
        if self.last_online is not None:
            device["lastOnlineTime"] = self.last_online
        return {"event_id": self.event_id, "timestamp": self.timestamp, "device": device}


def member(device: DeviceTwin) -> dict[str, Any]:
    """A device as membership lists show it (no twins)."""
    return {
        "id": device.id,
        "name": device.name,
        "description": device.description,
        "state": device.state or "",
        "last_online": device.last_online or "",
    }


@dataclass(frozen=True)
class MembershipResult:
    """$hw/events/node/<node>/membership/get/result: every device bound to the node."""

    event_id: str
    timestamp: int
    devices: tuple[DeviceTwin, ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "timestamp": self.timestamp,
            "devices": [member(d) for d in self.devices],
        }


@dataclass(frozen=True)
class MembershipUpdated:
    """$hw/events/node/<node>/membership/updated: devices added (with their twins) or removed."""

    event_id: str
    timestamp: int
    added: tuple[DeviceTwin, ...] = ()
    removed: tuple[DeviceTwin, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        added = [{**member(d), "twin": visible_twins(d)} for d in self.added]
        removed = [member(d) for d in self.removed]
        return {
            "event_id": self.event_id,
            "timestamp": self.timestamp,
            "added_devices": added or None,
            "removed_devices": removed or None,
        }
