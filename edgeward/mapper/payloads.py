"""The JSON bodies a mapper sends and receives (KUBEEDGE-MQTT.md), as pure functions.

Builders return plain dicts ready for :func:`encode`; parsers take the raw MQTT
payload and return a small frozen dataclass or raise :class:`BadPayload`, whose
``reason`` says what is wrong. A parser accepts a message whole or not at all:
one wrong-typed entry refuses the message, as edgecore does with update requests.
Field names match case-insensitively and unknown fields are ignored, as in
KubeEdge.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeward.mapper.topics import check_device_id

#: Twin keys and non-empty values use this alphabet (KUBEEDGE-MQTT.md, "Rules").
KEY_PATTERN = re.compile(r"[a-zA-Z0-9\-_.,:/@#]{1,128}")
VALUE_PATTERN = re.compile(r"[a-zA-Z0-9\-_.,:/@#]{1,512}")

#: Twin types edgecore accepts in ``metadata.type``.
TWIN_TYPES = frozenset({"string", "int", "integer", "float", "boolean"})

#: Device states edgecore takes (compared case-insensitively; devicetwin.engine.STATES).
DEVICE_STATES = frozenset({"online", "offline", "ok", "disconnected", "unknown", "unhealthy"})

#: Payloads larger than this are refused before parsing. Edgecore's replies for a
#: device with hundreds of twins stay far below it.
MAX_PAYLOAD_BYTES = 1 << 20


class BadPayload(ValueError):
    """A received payload is not a message of the expected kind; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def valid_key(key: object) -> bool:
    """True if ``key`` may name a twin."""
    return isinstance(key, str) and KEY_PATTERN.fullmatch(key) is not None


def valid_value(value: object) -> bool:
    """True if ``value`` may be a twin value: a string, empty or in the value alphabet."""
    return isinstance(value, str) and (value == "" or VALUE_PATTERN.fullmatch(value) is not None)


def new_event_id() -> str:
    return str(uuid.uuid4())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()


# --- what the mapper sends -------------------------------------------------------------


def update_request(
    values: Mapping[str, str],
    types: Mapping[str, str] | None = None,
    *,
    event_id: str,
    timestamp: int,
) -> dict[str, Any]:
    """``D/twin/update`` reporting ``values`` as ``actual``; ``types`` adds ``metadata.type``.

    The caller has checked the keys and values (:func:`valid_key`, :func:`valid_value`).
    """
    twin: dict[str, Any] = {}
    for key, value in values.items():
        entry: dict[str, Any] = {"actual": {"value": value}}
        if types and key in types:
            entry["metadata"] = {"type": types[key]}
        twin[key] = entry
    return {"event_id": event_id, "timestamp": timestamp, "twin": twin}


def get_request(*, event_id: str, timestamp: int) -> dict[str, Any]:
    """``D/twin/get`` or ``…/membership/get``: only an event id and a timestamp."""
    return {"event_id": event_id, "timestamp": timestamp}


def state_request(state: str, *, event_id: str, timestamp: int) -> dict[str, Any]:
    """``D/state/update``; ``state`` must be one of :data:`DEVICE_STATES`."""
    return {"event_id": event_id, "timestamp": timestamp, "state": state}


# --- what the mapper receives ----------------------------------------------------------


@dataclass(frozen=True)
class Twin:
    """One twin as a mapper sees it: values are strings, None when absent."""

    expected: str | None = None
    actual: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class Delta:
    """``D/twin/update/delta``: ``delta`` maps each key whose expected ≠ actual to expected."""

    event_id: str
    delta: Mapping[str, str]
    twins: Mapping[str, Twin] = field(default_factory=dict)


@dataclass(frozen=True)
class TwinResult:
    """``D/twin/update/result`` or ``D/twin/get/result``: twins, or an error ``code``.

    In an update result a key mapped to None was deleted by that update.
    """

    event_id: str
    twins: Mapping[str, Twin | None] = field(default_factory=dict)
    code: int | None = None
    reason: str = ""

    @property
    def is_error(self) -> bool:
        return self.code is not None


@dataclass(frozen=True)
class DeviceRef:
    """A device named in a membership message."""

    id: str
    name: str = ""
    state: str = ""


@dataclass(frozen=True)
class Membership:
    """A membership get result (``devices``) or update (``added`` / ``removed``)."""

    event_id: str
    devices: tuple[DeviceRef, ...] = ()
    added: tuple[DeviceRef, ...] = ()
    removed: tuple[DeviceRef, ...] = ()


def parse_delta(payload: bytes) -> Delta:
    body = _object(payload)
    event_id = _envelope(body)
    raw = _field(body, "delta")
    if not isinstance(raw, dict):
        raise BadPayload("'delta' is missing or not an object")
    delta: dict[str, str] = {}
    for key, value in raw.items():
        if not valid_key(key):
            raise BadPayload(f"delta key {_short(key)} is not a valid twin key")
        if not valid_value(value):
            raise BadPayload(f"delta value of {key!r} is not a valid twin value: {_short(value)}")
        delta[key] = value
    twins_raw = _field(body, "twin")
    twins: dict[str, Twin] = {}
    if isinstance(twins_raw, dict):
        for key, twin in _twins(twins_raw).items():
            if twin is not None:
                twins[key] = twin
    elif twins_raw is not None:
        raise BadPayload("'twin' is not an object")
    return Delta(event_id=event_id, delta=delta, twins=twins)


def parse_twin_result(payload: bytes) -> TwinResult:
    """An update or get result: the twins, or the error code and reason."""
    body = _object(payload)
    event_id = _envelope(body)
    code = _field(body, "code")
    if code is not None:
        if not isinstance(code, int) or isinstance(code, bool):
            raise BadPayload("'code' is not an integer")
        reason = _field(body, "reason")
        return TwinResult(event_id=event_id, code=code, reason=_text(reason))
    raw = _field(body, "twin")
    if not isinstance(raw, dict):
        raise BadPayload("'twin' is missing or not an object")
    return TwinResult(event_id=event_id, twins=_twins(raw))


def parse_membership(payload: bytes) -> Membership:
    """A ``membership/get/result`` (``devices``) or ``membership/updated`` body."""
    body = _object(payload)
    event_id = _envelope(body)
    return Membership(
        event_id=event_id,
        devices=_devices(body, "devices"),
        added=_devices(body, "added_devices"),
        removed=_devices(body, "removed_devices"),
    )


# --- helpers ---------------------------------------------------------------------------


def _object(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise BadPayload(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        body = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadPayload("payload is not UTF-8") from None
    except RecursionError:
        raise BadPayload("payload is nested too deeply") from None
    except ValueError as exc:
        raise BadPayload(f"payload is not JSON ({exc.args[0] if exc.args else exc})") from None
    if not isinstance(body, dict):
        raise BadPayload(f"payload is a JSON {type(body).__name__}, not an object")
    return body


def _field(body: Mapping[str, Any], name: str) -> Any:
    """``body[name]``, matching the field name case-insensitively as KubeEdge does."""
    if name in body:
        return body[name]
    for key, value in body.items():
        if key.lower() == name:
            return value
    return None


def _envelope(body: Mapping[str, Any]) -> str:
    event_id = _field(body, "event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise BadPayload("'event_id' is not a string")
    timestamp = _field(body, "timestamp")
    if timestamp is not None and (not isinstance(timestamp, int) or isinstance(timestamp, bool)):
        raise BadPayload("'timestamp' is not an integer")
    return event_id or ""


def _twins(raw: Mapping[str, Any]) -> dict[str, Twin | None]:
    twins: dict[str, Twin | None] = {}
    for key, twin in raw.items():
        if not valid_key(key):
            raise BadPayload(f"twin key {_short(key)} is not a valid twin key")
        if twin is None:
            twins[key] = None
            continue
        if not isinstance(twin, dict):
            raise BadPayload(f"twin {key!r} is not an object")
        metadata = _field(twin, "metadata")
        kind = _field(metadata, "type") if isinstance(metadata, dict) else None
        twins[key] = Twin(
            expected=_twin_value(twin, "expected", key),
            actual=_twin_value(twin, "actual", key),
            type=kind if isinstance(kind, str) else None,
        )
    return twins


def _twin_value(twin: Mapping[str, Any], which: str, key: str) -> str | None:
    part = _field(twin, which)
    if part is None:
        return None
    if not isinstance(part, dict):
        raise BadPayload(f"twin {key!r}: '{which}' is not an object")
    value = _field(part, "value")
    if value is None:
        return None
    if not valid_value(value):
        raise BadPayload(f"twin {key!r}: {which} value {_short(value)} is not a valid twin value")
    return value


def _devices(body: Mapping[str, Any], name: str) -> tuple[DeviceRef, ...]:
    raw = _field(body, name)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise BadPayload(f"'{name}' is not a list")
    refs = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise BadPayload(f"an entry of '{name}' is not an object")
        ident = _field(entry, "id")
        short_name = _field(entry, "name")
        if not isinstance(ident, str) or not ident:
            ident = short_name
        if not isinstance(ident, str) or not ident:
            raise BadPayload(f"an entry of '{name}' has neither 'id' nor 'name'")
        if "/" not in ident:
            ident = f"default/{ident}"  # devices without a namespace live in "default"
        try:
            check_device_id(ident)
        except ValueError:
            raise BadPayload(f"an entry of '{name}' has a bad device id {_short(ident)}") from None
        refs.append(
            DeviceRef(id=ident, name=_text(short_name), state=_text(_field(entry, "state")))
        )
    return tuple(refs)


def _text(value: object) -> str:
    return value[:512] if isinstance(value, str) else ""


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
