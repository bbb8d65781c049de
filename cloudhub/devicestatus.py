"""What edges report about their devices, written into each Device's status.

``twin/reported`` carries a device's whole twin state (reported values and the
desired values the edge holds, with their version vectors); ``device/state``
its state as the mapper sent it. A node may only report on devices bound to
it. Every field the hub keeps is checked with edgeward.storable's rules where
it is copied; a row that fails a check, or names a device the node may not
report on, is refused whole (:class:`~edgeward.errors.ReportRefused`): it is
still acknowledged, with its reason, so a bad row cannot block the node's
outbox.
"""

from __future__ import annotations

import logging
from typing import Any

from cloudhub import history
from cloudhub.store import Tx
from devicetwin.engine import STATES
from devicetwin.values import TWIN_TYPES
from edgeward import storable
from edgeward.errors import ReportRefused
from edgeward.kinds import DEVICE, TWIN_KEY, TWIN_VALUE, dns_label_problem
from edgeward.protocol import TOPIC_TWIN_REPORTED, ReportItem

log = logging.getLogger(__name__)

#: A twin's conflict mark ({"supersededLocalValue": <a value of up to 512 characters>}).
MAX_CONFLICT_BYTES = 1024
#: A device's state and lastOnlineTime, as the mapper sent them.
MAX_STATE_CHARS = 64


def _device_key(item: ReportItem) -> tuple[str, str]:
    device_id = item.body.get("device")
    if isinstance(device_id, str) and device_id.count("/") == 1:
        namespace, name = device_id.split("/")
        if dns_label_problem(namespace) is None and dns_label_problem(name) is None:
            return namespace, name
    raise ReportRefused(f"{item.topic}: device must be <namespace>/<name>, each a DNS label")


def _bound_device(tx: Tx, node: str, item: ReportItem) -> dict[str, Any]:
    namespace, name = _device_key(item)
    device = tx.get(DEVICE, namespace, name)
    if device is None:
        raise ReportRefused(f"{item.topic}: device {namespace}/{name} does not exist")
    if device.get("spec", {}).get("nodeName") != node:
        raise ReportRefused(f"{item.topic}: device {namespace}/{name} is not bound to {node}")
    return device


def _value(key: str, field: str, entry: Any, with_version: bool) -> dict[str, Any] | None:
    """A reported or observed value in the Device status shape (None when absent)."""
    if entry is None:
        return None
    where = f"twin/reported: {key}.{field}"
    if not isinstance(entry, dict):
        raise ReportRefused(f"{where} must be an object")
    value, stamp = entry.get("value"), entry.get("timestamp")
    if not isinstance(value, str) or (value and not TWIN_VALUE.fullmatch(value)):
        raise ReportRefused(f"{where}.value must be at most 512 letters, digits and -_.,:/@#")
    if not storable.is_int64(stamp):
        raise ReportRefused(f"{where}.timestamp must be an integer within int64")
    meta: dict[str, Any] = {"timestamp": str(stamp)}
    version = entry.get("version")
    if with_version and version is not None:
        if not isinstance(version, dict):
            raise ReportRefused(f"{where}.version must be an object")
        counters = {k: version[k] for k in ("cloud", "edge") if k in version}
        if not all(storable.is_int64(v) for v in counters.values()):
            raise ReportRefused(f"{where}.version counters must be integers within int64")
        meta["version"] = counters
    return {"value": value, "metadata": meta}


def _twin_entry(key: Any, twin: Any) -> dict[str, Any] | None:
    """One ``status.twins[]`` entry (None for a deleted twin)."""
    if not isinstance(key, str) or not TWIN_KEY.fullmatch(key):
        raise ReportRefused(
            "twin/reported: twin keys must be 1 to 128 letters, digits and -_.,:/@#"
        )
    if not isinstance(twin, dict):
        raise ReportRefused(f"twin/reported: {key} must be an object")
    deleted = twin.get("deleted", False)
    if type(deleted) is not bool:
        raise ReportRefused(f"twin/reported: {key}.deleted must be true or false")
    if deleted:
        return None
    kind = twin.get("type")
    if kind is not None and kind not in TWIN_TYPES:
        raise ReportRefused(f"twin/reported: {key}.type must be one of {', '.join(TWIN_TYPES)}")
    entry: dict[str, Any] = {"propertyName": key}
    for field, with_version in (("reported", False), ("observedDesired", True)):
        value = _value(key, field, twin.get(field), with_version)
        if value is not None:
            if kind is not None:
                value["metadata"]["type"] = kind
            entry[field] = value
    conflict = twin.get("conflict")
    if conflict is not None:
        entry["conflict"] = kept_object(
            conflict, MAX_CONFLICT_BYTES, f"twin/reported: {key}.conflict"
        )
    return entry


def _readable_twins(twins: Any) -> bool:
    return isinstance(twins, dict) and len(twins) <= storable.MAX_TWINS


def kept_object(value: Any, max_bytes: int, what: str) -> dict[str, Any]:
    """A free-form part of a report the hub keeps as it is: an object of storable JSON within
    ``max_bytes``, else ReportRefused naming ``what``."""
    if not isinstance(value, dict):
        raise ReportRefused(f"{what} must be an object")
    try:
        storable.check(value, max_bytes, what)
    except storable.Unstorable as exc:
        raise ReportRefused(str(exc)) from None
    return value


def twin_reported(tx: Tx, node: str, item: ReportItem) -> None:
    twins = item.body.get("twins")
    if not _readable_twins(twins):
        raise ReportRefused(
            f"twin/reported: twins must be a map of at most {storable.MAX_TWINS} twins"
        )
    device = _bound_device(tx, node, item)
    entries = [e for key in sorted(twins) if (e := _twin_entry(key, twins[key])) is not None]
    if tx.twin_history:
        history.record(tx, device, entries)
    _write_status(tx, device, {**device.get("status", {}), "twins": entries})


def _short_text(body: dict[str, Any], field: str) -> bool:
    value = body.get(field)
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_STATE_CHARS
        and storable.problem(value) is None
    )


def device_state(tx: Tx, node: str, item: ReportItem) -> None:
    if not _short_text(item.body, "state"):
        raise ReportRefused(f"device/state: state must be 1 to {MAX_STATE_CHARS} characters")
    last_online = item.body.get("lastOnlineTime")
    if last_online not in (None, "") and not _short_text(item.body, "lastOnlineTime"):
        raise ReportRefused(
            f"device/state: lastOnlineTime must be at most {MAX_STATE_CHARS} characters"
        )
    device = _bound_device(tx, node, item)
    status = dict(device.get("status", {}))
    # an edge from before the hub's states sends the mapper's spelling: mapped here too
    state = item.body["state"]
    status["state"] = STATES.get(state.lower(), state) if state.isascii() else state
    if last_online:
        status["lastOnlineTime"] = last_online
    _write_status(tx, device, status)


def _write_status(tx: Tx, device: dict[str, Any], status: dict[str, Any]) -> None:
    meta = device["metadata"]
    tx.replace_status(DEVICE, meta["namespace"], meta["name"], status, current=device)


def superseded(items: tuple[ReportItem, ...]) -> set[int]:
    """Seqs of ``twin/reported`` rows that a later row of the same frame replaces.

    Each such row carries the device's whole twin state, so only the last one per
    device needs writing; an unreadable later row replaces nothing.
    """
    later: set[str] = set()
    skipped: set[int] = set()
    for item in reversed(items):
        if item.topic != TOPIC_TWIN_REPORTED:
            continue
        device, twins = item.body.get("device"), item.body.get("twins")
        if not isinstance(device, str) or not _readable_twins(twins):
            continue
        if device in later:
            skipped.add(item.seq)
        later.add(device)
    return skipped
