"""How a twin changes: a mapper's update or delete, and a cloud write.

Every function here is pure and works on immutable Twins. The version rules:

- a mapper's ``expected`` or ``actual`` (even an unchanged value) bumps that
  field's ``edge`` counter; a new twin's fields therefore start at {0, 1};
- a soft delete bumps the ``edge`` counter of each field that held a value;
- a cloud write bumps ``expected_version.cloud``;
- counters never go down, a twin's type never changes, ``optional`` only
  goes from true to false.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from devicetwin import errors
from devicetwin.model import DeviceTwin, Twin, TwinValue
from devicetwin.payloads import TwinPatch, UpdateRequest, msg_twin
from devicetwin.values import check_value, normalize_type

#: A changed twin before and after (None: absent or deleted), as documents show it.
Change = tuple[Twin | None, Twin | None]


@dataclass(frozen=True)
class Merge:
    """What a mapper's update request did to a device's twins."""

    twins: Mapping[str, Twin]  # every twin of the device afterwards
    result: Mapping[str, dict[str, Any] | None]  # the update result's "twin" map
    changes: Mapping[str, Change]  # the document's entries; empty when nothing changed


def _visible(twin: Twin | None) -> Twin | None:
    return None if twin is None or twin.deleted else twin


def soft_delete(twin: Twin | None) -> Twin | None:
    """The twin after a mapper's delete, or None when the delete changes nothing.

    Only an optional twin that is not already deleted is deleted; it keeps its
    type and counters and loses its values.
    """
    if twin is None or twin.deleted or not twin.optional:
        return None
    return replace(
        twin,
        deleted=True,
        expected=None,
        actual=None,
        expected_version=(
            twin.expected_version if twin.expected is None else twin.expected_version.bump_edge()
        ),
        actual_version=(
            twin.actual_version if twin.actual is None else twin.actual_version.bump_edge()
        ),
    )


def mapper_update(twin: Twin | None, patch: TwinPatch, now_ms: int, event_id: str) -> Twin | None:
    """The twin after a mapper's patch, or None when the patch changes nothing.

    Raises ValueTypeError when the type name is unknown or a value does not
    fit the twin's type (a new twin's type comes from the patch, default string).
    """
    kind = None
    if patch.type is not None:
        kind = normalize_type(patch.type)
        if kind is None:
            raise errors.ValueTypeError(errors.TYPE_NOT_ALLOWED, event_id)
    new = twin if twin is not None else Twin(type=kind or "string")
    for value in (patch.expected, patch.actual):
        if value is not None and (reason := check_value(new.type, value)) is not None:
            raise errors.ValueTypeError(reason, event_id)
    fields: dict[str, Any] = {"deleted": False}  # an update revives a deleted twin
    if patch.expected is not None:
        fields["expected"] = TwinValue(patch.expected, now_ms)
        fields["expected_version"] = new.expected_version.bump_edge()
    if patch.actual is not None:
        fields["actual"] = TwinValue(patch.actual, now_ms)
        fields["actual_version"] = new.actual_version.bump_edge()
    if patch.optional is False:
        fields["optional"] = False
    new = replace(new, **fields)
    if twin is not None and new == twin:
        return None
    return new


def merge_update(device: DeviceTwin, request: UpdateRequest, now_ms: int) -> Merge:
    """Apply a whole update request, all or nothing: raises ValueTypeError and changes nothing."""
    twins = dict(device.twins)
    result: dict[str, dict[str, Any] | None] = {}
    changes: dict[str, Change] = {}
    for key, patch in request.twins.items():
        old = twins.get(key)
        if patch is None:
            new = soft_delete(old)
            if new is not None:
                result[key] = None
        else:
            new = mapper_update(old, patch, now_ms, request.event_id)
            if new is not None:
                whole = _visible(old) is None  # created or revived: show every field
                result[key] = msg_twin(
                    new,
                    expected=whole or patch.expected is not None,
                    actual=whole or patch.actual is not None,
                )
        if new is not None:
            twins[key] = new
            changes[key] = (_visible(old), _visible(new))
    return Merge(twins=twins, result=result, changes=changes)


def cloud_write(
    twin: Twin, value: str, identity: tuple[str, str | None], seen_edge: int, now_ms: int
) -> tuple[Twin, dict[str, Any] | None]:
    """The twin after the hub wrote a new desired value, and the conflict to report, if any.

    The write always wins. When the hub had not seen the edge's latest change
    of ``expected`` (``seen_edge`` is behind), the local value it replaces is
    reported as ``{"supersededLocalValue": ...}`` instead of being dropped silently.
    """
    conflict = None
    if seen_edge < twin.expected_version.edge:
        local = None if twin.expected is None else twin.expected.value
        conflict = {"supersededLocalValue": local}
    new = replace(
        twin,
        expected=TwinValue(value, now_ms),
        expected_version=twin.expected_version.bump_cloud(),
        cloud_desired=identity,
        deleted=False,
    )
    return new, conflict
