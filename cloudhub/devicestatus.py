"""What edges report about their devices, written into each Device's status.

``twin/reported`` carries a device's whole twin state (reported values and the
desired values the edge holds, with their version vectors); ``device/state``
its state as the mapper sent it. A node may only report on devices bound to
it: anything else is logged and ignored (and still acknowledged, so a bad
row cannot block the node's outbox).
"""

from __future__ import annotations

import logging
from typing import Any

from cloudhub.store import Tx
from edgeward.kinds import DEVICE, TWIN_KEY, TWIN_VALUE
from edgeward.protocol import TOPIC_TWIN_REPORTED, ReportItem

log = logging.getLogger(__name__)

MAX_TWINS = 1000


def _bound_device(tx: Tx, node: str, item: ReportItem) -> dict[str, Any] | None:
    device_id = item.body.get("device")
    if not isinstance(device_id, str) or device_id.count("/") != 1:
        log.warning("node %s: %s report without a valid device id", node, item.topic)
        return None
    namespace, name = device_id.split("/")
    device = tx.get(DEVICE, namespace, name)
    if device is None:
        log.info("node %s: %s report for %s, which no longer exists", node, item.topic, device_id)
        return None
    if device.get("spec", {}).get("nodeName") != node:
        log.warning(
            "node %s: ignored a %s report for %s, which is not bound to it",
            node,
            item.topic,
            device_id,
        )
        return None
    return device


def _value(entry: Any, with_version: bool) -> dict[str, Any] | None:
    """A reported or observed value in the Device status shape, or None when absent/invalid."""
    if not isinstance(entry, dict):
        return None
    value, stamp = entry.get("value"), entry.get("timestamp")
    if not isinstance(value, str) or (value and not TWIN_VALUE.fullmatch(value)):
        return None
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        return None
    meta: dict[str, Any] = {"timestamp": str(stamp)}
    version = entry.get("version")
    if with_version and isinstance(version, dict):
        meta["version"] = {
            k: v for k, v in version.items() if k in ("cloud", "edge") and type(v) is int
        }
    return {"value": value, "metadata": meta}


def _readable_twins(twins: Any) -> bool:
    return isinstance(twins, dict) and len(twins) <= MAX_TWINS


def twin_reported(tx: Tx, node: str, item: ReportItem) -> None:
    device = _bound_device(tx, node, item)
    twins = item.body.get("twins")
    if device is None:
        return
    if not _readable_twins(twins):
        log.warning(
            "node %s: twin report for %s without a valid twin map", node, item.body["device"]
        )
        return
    entries = []
    for key in sorted(twins):
        twin = twins[key]
        if not isinstance(key, str) or not TWIN_KEY.fullmatch(key) or not isinstance(twin, dict):
            continue
        if twin.get("deleted") is True:
            continue
        entry: dict[str, Any] = {"propertyName": key}
        kind = twin.get("type")
        reported = _value(twin.get("reported"), with_version=False)
        observed = _value(twin.get("observedDesired"), with_version=True)
        for field, value in (("reported", reported), ("observedDesired", observed)):
            if value is not None:
                if isinstance(kind, str):
                    value["metadata"]["type"] = kind
                entry[field] = value
        if isinstance(twin.get("conflict"), dict):
            entry["conflict"] = twin["conflict"]
        entries.append(entry)
    status = {**device.get("status", {}), "twins": entries}
    _write_status(tx, device, status)


def device_state(tx: Tx, node: str, item: ReportItem) -> None:
    device = _bound_device(tx, node, item)
    state = item.body.get("state")
    if device is None:
        return
    if not isinstance(state, str) or not 0 < len(state) <= 64:
        log.warning(
            "node %s: device state report for %s without a valid state", node, item.body["device"]
        )
        return
    status = dict(device.get("status", {}))
    status["state"] = state
    last_online = item.body.get("lastOnlineTime")
    if isinstance(last_online, str) and len(last_online) <= 64:
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


def upload(tx: Tx, node: str, item: ReportItem) -> None:
    """Apps' opaque uploads: nothing on the hub consumes them yet, so they are only logged."""
    log.info(
        "node %s: upload on %s (%d bytes)",
        node,
        item.body.get("topic"),
        len(str(item.body.get("payload", ""))),
    )
