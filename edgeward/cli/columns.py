"""The table columns of ``edgeward get`` for each kind.

A missing or malformed field shows ``<none>`` (or ``-`` for figures), never an error:
the objects come from a hub that may be newer or older than this CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeward.cli.output import (
    DASH,
    NONE,
    age,
    as_dict,
    as_list,
    cell,
    dig,
    human_bytes,
    long_duration,
    truncate,
)
from edgeward.cli.twin import sync_state
from edgeward.kinds import DEVICE, DEVICE_MODEL, NODE, Kind

LIST_LIMIT = 48  # wide columns that list things are cut here, ending in "..."

Row = Callable[[dict[str, Any], float], list[str]]


def label(kind: Kind, obj: Any) -> str:
    """``device/thermo``: how kubectl names an object in messages and ``-o name``."""
    return f"{kind.name.lower()}/{cell(dig(obj, 'metadata', 'name'))}"


def headers(kind: Kind, wide: bool = False, all_namespaces: bool = False) -> list[str]:
    names = list(_COLUMNS[kind.name][0])
    if wide:
        names += _COLUMNS[kind.name][2]
    if all_namespaces and kind.namespaced:
        names.insert(0, "NAMESPACE")
    return names


def row(
    kind: Kind, obj: Any, now: float, wide: bool = False, all_namespaces: bool = False
) -> list[str]:
    """The cells of one object, matching :func:`headers` for the same flags."""
    obj = as_dict(obj)
    _, basic, _, extra = _COLUMNS[kind.name]
    cells = basic(obj, now)
    if wide:
        cells += extra(obj, now)
    if all_namespaces and kind.namespaced:
        cells.insert(0, cell(dig(obj, "metadata", "namespace")))
    return cells


# -- devices --------------------------------------------------------------------


def _name_and_age(obj: dict[str, Any], now: float) -> tuple[str, str]:
    return cell(dig(obj, "metadata", "name")), age(dig(obj, "metadata", "creationTimestamp"), now)


def _device(obj: dict[str, Any], now: float) -> list[str]:
    name, created = _name_and_age(obj, now)
    node = cell(dig(obj, "spec", "nodeName"))
    model = cell(dig(obj, "spec", "deviceModelRef", "name"))
    return [name, node, model, created]


def desired_values(device: dict[str, Any]) -> list[tuple[str, Any]]:
    """(property, desired value) for each device property that has a desired value."""
    out = []
    for prop in as_list(dig(device, "spec", "properties")):
        value = dig(prop, "desired", "value")
        name = dig(prop, "name")
        if isinstance(name, str) and value is not None:
            out.append((name, value))
    return out


def _device_wide(obj: dict[str, Any], now: float) -> list[str]:
    count = len(as_list(dig(obj, "spec", "properties")))
    desired = ",".join(
        f"{k}={v if isinstance(v, str) else cell(v)}" for k, v in desired_values(obj)
    )
    state = dig(obj, "status", "state")
    return [
        str(count),
        truncate(desired, LIST_LIMIT) or NONE,
        state if isinstance(state, str) and state else DASH,
        sync_state(obj),
    ]


# -- device models ----------------------------------------------------------------


def _model(obj: dict[str, Any], now: float) -> list[str]:
    name, created = _name_and_age(obj, now)
    return [name, str(len(as_list(dig(obj, "spec", "properties")))), created]


def _model_wide(obj: dict[str, Any], now: float) -> list[str]:
    types = []
    for prop in as_list(dig(obj, "spec", "properties")):
        name = dig(prop, "name")
        if isinstance(name, str):
            kind = dig(prop, "type")
            types.append(f"{name}:{kind if isinstance(kind, str) and kind else DASH}")
    return [truncate(",".join(types), LIST_LIMIT) or NONE]


# -- nodes ------------------------------------------------------------------------


def node_status(node: dict[str, Any]) -> str:
    """Ready, NotReady, or Unknown when the node has reported no conditions at all."""
    conditions = as_list(dig(node, "status", "conditions"))
    if not conditions:
        return "Unknown"
    for cond in conditions:
        if dig(cond, "type") == "Ready":
            return "Ready" if dig(cond, "status") == "True" else "NotReady"
    return "NotReady"


def _node(obj: dict[str, Any], now: float) -> list[str]:
    name, created = _name_and_age(obj, now)
    version = cell(dig(obj, "status", "nodeInfo", "agentVersion"))
    return [name, node_status(obj), created, version]


def cpu_summary(node: dict[str, Any]) -> str:
    """``12%/4``: CPU use in percent over the node's cores."""
    percent = dig(node, "status", "usage", "cpuPercent")
    cores = dig(node, "status", "capacity", "cpu")
    used = f"{percent:.0f}%" if _is_number(percent) else None
    total = _cores(cores)
    if used is None and total is None:
        return NONE
    if total is None:
        return str(used)
    return f"{used or DASH}/{total}"


def usage_summary(node: dict[str, Any], field: str) -> str:
    """``1.2Gi/7.6Gi``: used over capacity of ``memoryBytes`` or ``diskBytes``."""
    used = human_bytes(dig(node, "status", "usage", field))
    total = human_bytes(dig(node, "status", "capacity", field))
    if used is None and total is None:
        return NONE
    return f"{used or DASH}/{total or DASH}"


def _node_wide(obj: dict[str, Any], now: float) -> list[str]:
    heartbeat = age(dig(obj, "status", "lastHeartbeatTime"), now)
    return [
        heartbeat,
        cpu_summary(obj),
        usage_summary(obj, "memoryBytes"),
        usage_summary(obj, "diskBytes"),
        cache_state(obj),
        last_outage(obj, now),
    ]


def last_outage(node: dict[str, Any], now: float) -> str:
    """``3h12m, 2d ago``: how long the node's last outage lasted and when it ended."""
    outages = as_list(dig(node, "status", "outages"))
    if not outages or not isinstance(outages[0], dict):
        return NONE
    last = outages[0]
    duration = last.get("durationSeconds")
    lasted = long_duration(duration) if isinstance(duration, int | float) else DASH
    return f"{lasted}, {age(last.get('end'), now, DASH)} ago"


def cache_state(node: dict[str, Any]) -> str:
    """``Synced`` or ``Drift`` as the hub last judged the node's cache; ``<none>`` before."""
    state = dig(node, "status", "cache", "state")
    return state if isinstance(state, str) and state else NONE


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cores(value: Any) -> str | None:
    if _is_number(value):
        return f"{value:g}"
    if isinstance(value, str) and value:
        return value
    return None


_COLUMNS: dict[str, tuple[tuple[str, ...], Row, tuple[str, ...], Row]] = {
    DEVICE.name: (
        ("NAME", "NODE", "MODEL", "AGE"),
        _device,
        ("PROPERTIES", "DESIRED", "STATE", "SYNCED"),
        _device_wide,
    ),
    DEVICE_MODEL.name: (("NAME", "PROPERTIES", "AGE"), _model, ("TYPES",), _model_wide),
    NODE.name: (
        ("NAME", "STATUS", "AGE", "VERSION"),
        _node,
        ("LAST-HEARTBEAT", "CPU", "MEMORY", "DISK", "CACHE", "LAST-OUTAGE"),
        _node_wide,
    ),
}
