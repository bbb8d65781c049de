"""The outbox rows the edge writes for the hub about devices (HubReport bodies)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devicetwin.model import DeviceTwin, Twin
from devicetwin.outcome import DEVICE_STATE, TWIN_REPORTED, HubReport


def _reported_twin(twin: Twin, conflict: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "reported": None if twin.actual is None else twin.actual.to_dict(),
        "observedDesired": (
            None
            if twin.expected is None
            else {**twin.expected.to_dict(), "version": twin.expected_version.to_dict()}
        ),
        "deleted": twin.deleted,
        "type": twin.type,
    }
    if conflict is not None:
        out["conflict"] = conflict
    return out


def twin_report(
    device: DeviceTwin, conflicts: Mapping[str, dict[str, Any]] | None = None
) -> HubReport:
    """Every twin of the device (a state row: the latest one replaces older unsent ones)."""
    conflicts = conflicts or {}
    twins = {key: _reported_twin(t, conflicts.get(key)) for key, t in device.twins.items()}
    return HubReport(TWIN_REPORTED, f"twin/{device.id}", {"device": device.id, "twins": twins})


def state_report(device: DeviceTwin) -> HubReport:
    """The device's state as the mapper sent it, and when it was last online."""
    body = {"device": device.id, "state": device.state, "lastOnlineTime": device.last_online}
    return HubReport(DEVICE_STATE, f"state/{device.id}", body)
