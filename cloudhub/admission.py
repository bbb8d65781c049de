"""Checks a write must pass that need other stored objects (run inside the write's transaction).

A Device's desired values must fit the types its DeviceModel gives them, so a
value no edge could accept is refused by the API (422) before it reaches one.
And a Device's spec may not take it past storable.MAX_TWINS twin properties
together with those its edge reports (a mapper may create twins of its own):
the edge would apply it and then could report nothing more for the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devicetwin import check_value, twin_type_of
from devicetwin.values import range_problem
from edgeward.errors import FieldCause, InvalidObject
from edgeward.kinds import DEVICE, DEVICE_MODEL, Kind
from edgeward.storable import MAX_TWINS

Lookup = Callable[[Kind, str | None, str], dict[str, Any] | None]


def admit(kind: Kind, body: dict[str, Any], lookup: Lookup) -> None:
    """Raise InvalidObject when ``body`` may not be written as it is."""
    if kind is not DEVICE:
        return
    if (cause := twin_count_problem(body)) is not None:
        raise InvalidObject(DEVICE.name, body["metadata"]["name"], [cause])
    ref = body.get("spec", {}).get("deviceModelRef")
    name = ref.get("name") if isinstance(ref, dict) else None
    if not name:
        return
    model = lookup(DEVICE_MODEL, body["metadata"]["namespace"], name)
    if model is None:
        return  # applied before its model: checked on its next write
    causes = desired_type_problems(body, model)
    if causes:
        raise InvalidObject(DEVICE.name, body["metadata"]["name"], causes)


def twin_count_problem(device: dict[str, Any]) -> FieldCause | None:
    """Why the spec's properties, with the twins the edge reports, are too many (or None)."""
    spec_names = {
        p.get("name") for p in device.get("spec", {}).get("properties", []) or []
        if isinstance(p, dict)
    }  # fmt: skip
    twins = (device.get("status") or {}).get("twins") or []
    reported = {t.get("propertyName") for t in twins if isinstance(t, dict)}
    total = len(spec_names | reported)
    if total <= MAX_TWINS or len(spec_names) > MAX_TWINS:  # the latter: the spec check says it
        return None
    return FieldCause(
        "spec.properties",
        f"with the {len(reported - spec_names)} twin properties its edge reports besides "
        f"these, the device would have {total}, more than {MAX_TWINS}",
    )


def desired_type_problems(device: dict[str, Any], model: dict[str, Any]) -> list[FieldCause]:
    """A cause for each desired value that does not fit its model property's type, or lies
    outside its ``minimum``/``maximum``."""
    declared = {
        p.get("name"): p
        for p in model.get("spec", {}).get("properties", []) or []
        if isinstance(p, dict)
    }
    causes = []
    for i, prop in enumerate(device.get("spec", {}).get("properties", []) or []):
        value = (prop.get("desired") or {}).get("value")
        if not isinstance(value, str) or not value or prop.get("name") not in declared:
            continue
        spec = declared[prop["name"]]
        twin_type = twin_type_of(spec.get("type"))
        problem = check_value(twin_type, value)
        if problem is not None:
            problem = f"{problem} (property {prop['name']} is {spec.get('type')})"
        else:
            problem = range_problem(twin_type, value, spec.get("minimum"), spec.get("maximum"))
            if problem is not None:
                problem = f"{problem} of property {prop['name']}"
        if problem is not None:
            causes.append(FieldCause(f"spec.properties[{i}].desired.value", problem))
    return causes
