"""The outbox rows the edge writes for the hub about devices (HubReport bodies)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from devicetwin.limits import MAX_REPORT_BYTES
from devicetwin.model import DeviceTwin, Twin, TwinValue, Version
from devicetwin.outcome import DEVICE_STATE, TWIN_REPORTED, HubReport

#: Rows as the edge stores and sends them: compact JSON, non-ASCII kept as UTF-8.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


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


def _largest_entry_bytes() -> int:
    """The most one twin can add to a twin report: its key and three values (reported,
    observedDesired, a conflict) at their longest, every number at int64's 20 characters."""
    number = -(2**63)
    value = TwinValue("v" * 512, number)
    version = Version(number, number)
    twin = Twin(type="boolean", expected=value, actual=value, expected_version=version)
    entry = {"k" * 128: _reported_twin(twin, {"supersededLocalValue": value.value})}
    return len(_encode(entry))  # its braces count for the comma between entries


_LARGEST_ENTRY_BYTES = _largest_entry_bytes()


def twin_report_fits(report: HubReport) -> bool:
    """True when a twin report's row is at most MAX_REPORT_BYTES.

    Keys and values are ASCII of a bounded length, so unless the device has hundreds of
    twins the bound (every twin at its largest) settles it; only above that is the row
    encoded and measured.
    """
    twins = report.body["twins"]
    header = {"device": report.body["device"], "twins": {}}
    bound = len(_utf8(_encode(header))) + len(twins) * _LARGEST_ENTRY_BYTES
    return bound <= MAX_REPORT_BYTES or len(_utf8(_encode(report.body))) <= MAX_REPORT_BYTES


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # measures; never raises
