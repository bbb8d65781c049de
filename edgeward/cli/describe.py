"""``edgeward describe``: one object as readable text, kubectl describe style."""

from __future__ import annotations

import argparse
import time
from typing import Any

from edgeward.cli import columns
from edgeward.cli.common import add_command, hub_client, namespace_of, out, resolve_kind
from edgeward.cli.output import (
    DASH,
    NONE,
    age,
    as_dict,
    as_list,
    cell,
    dig,
    human_bytes,
    outage_summary,
    parse_time,
    render_table,
)
from edgeward.cli.twin import twin_rows
from edgeward.kinds import DEVICE, DEVICE_MODEL, NODE, Kind

LABEL_WIDTH = 19
INDENT = "  "
#: Who last wrote the object and when ("token:abc123 at 2026-01-15T07:57:00Z"), set by the hub.
CHANGED_BY = "edgeward.io/last-changed-by"

EPILOG = """\
examples:
  edgeward describe device thermo           desired values, reported twins, model and node
  edgeward describe dm thermostat -n plant-3
  edgeward describe node edge-1             conditions, capacity, usage, heartbeat
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "describe",
        help="show one object in detail",
        description="Show one object in detail: metadata, spec and what the edge reported.",
        epilog=EPILOG,
    )
    parser.add_argument("kind", metavar="KIND", help="devices, devicemodels or nodes")
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("-n", "--namespace", metavar="NS", help="namespace (default: default)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    kind = resolve_kind(args.kind)
    client = hub_client(args)
    obj = client.request("GET", client.object_path(kind, namespace_of(kind, args), args.name))
    out(describe(kind, obj, time.time()))
    return 0


def describe(kind: Kind, obj: Any, now: float) -> str:
    """The description of ``obj``; any field may be missing."""
    obj = as_dict(obj)
    lines: list[str] = []
    meta = as_dict(obj.get("metadata"))
    _field(lines, "Name", cell(meta.get("name")))
    if kind.namespaced:
        _field(lines, "Namespace", cell(meta.get("namespace")))
    _mapping(lines, "Labels", meta.get("labels"))
    _mapping(lines, "Annotations", meta.get("annotations"))
    created = meta.get("creationTimestamp")
    _field(lines, "Created", f"{created} ({age(created, now)} ago)" if created else NONE)
    _field(lines, "Resource Version", cell(meta.get("resourceVersion")))
    _field(lines, "UID", cell(meta.get("uid")))
    changed = as_dict(meta.get("annotations")).get(CHANGED_BY)
    if changed:
        _field(lines, "Last changed by", _changed_by(changed, now))
    if kind is DEVICE:
        _device(lines, obj, now)
    elif kind is DEVICE_MODEL:
        _model(lines, obj)
    elif kind is NODE:
        _node(lines, obj, now)
    return "\n".join(lines) + "\n"


def _device(lines: list[str], obj: dict[str, Any], now: float) -> None:
    _field(lines, "Model", cell(dig(obj, "spec", "deviceModelRef", "name")))
    _field(lines, "Node", cell(dig(obj, "spec", "nodeName")))
    protocol = dig(obj, "spec", "protocol", "protocolName")
    if protocol:
        _field(lines, "Protocol", cell(protocol))
    rows = twin_rows(obj, now)
    if not rows:
        _field(lines, "Properties", NONE)
        return
    lines.append("Properties:")
    headers = ["PROPERTY", "DESIRED", "REPORTED", "OBSERVED-DESIRED", "UPDATED"]
    _indented(lines, render_table(headers, rows))


def _model(lines: list[str], obj: dict[str, Any]) -> None:
    props = [p for p in as_list(dig(obj, "spec", "properties")) if isinstance(p, dict)]
    if not props:
        _field(lines, "Properties", NONE)
        return
    lines.append("Properties:")
    headers = ["NAME", "TYPE", "ACCESS", "UNIT", "MIN", "MAX", "DESCRIPTION"]
    rows = [
        [
            cell(p.get(k)) if p.get(k) is not None else DASH
            for k in ("name", "type", "accessMode", "unit", "minimum", "maximum", "description")
        ]
        for p in props
    ]
    _indented(lines, render_table(headers, rows))


def _node(lines: list[str], obj: dict[str, Any], now: float) -> None:
    status = as_dict(obj.get("status"))
    _field(lines, "Status", columns.node_status(obj))
    beat = status.get("lastHeartbeatTime")
    _field(lines, "Last Heartbeat", f"{beat} ({age(beat, now)} ago)" if beat else NONE)
    conditions = [c for c in as_list(status.get("conditions")) if isinstance(c, dict)]
    if conditions:
        lines.append("Conditions:")
        headers = ["TYPE", "STATUS", "LAST-HEARTBEAT", "LAST-TRANSITION", "REASON", "MESSAGE"]
        rows = [
            [
                cell(c.get("type")),
                cell(c.get("status")),
                _when(c.get("lastHeartbeatTime"), now),
                _when(c.get("lastTransitionTime"), now),
                cell(c.get("reason")),
                cell(c.get("message")),
            ]
            for c in conditions
        ]
        _indented(lines, render_table(headers, rows))
    else:
        _field(lines, "Conditions", NONE)
    capacity = as_dict(status.get("capacity"))
    usage = as_dict(status.get("usage"))
    lines.append("Resources:")
    rows = [
        ["cpu", _cores(capacity.get("cpu")), _percent(usage.get("cpuPercent"))],
        ["memory", _bytes(capacity.get("memoryBytes")), _bytes(usage.get("memoryBytes"))],
        ["disk", _bytes(capacity.get("diskBytes")), _bytes(usage.get("diskBytes"))],
    ]
    _indented(lines, render_table(["RESOURCE", "CAPACITY", "USED"], rows))
    _mapping(lines, "Node Info", status.get("nodeInfo"))
    cache = as_dict(status.get("cache"))
    if cache:
        _field(
            lines,
            "Cache",
            f"{cell(cache.get('state'))} at revision {cell(cache.get('revision'))} "
            f"(checked {_when(cache.get('checkedTime'), now)})",
        )
    outages = [o for o in as_list(status.get("outages")) if isinstance(o, dict)]
    if outages:
        lines.append("Outages:")
        for outage in outages:
            lines.append(f"{INDENT}{cell(outage.get('start'))}  {outage_summary(outage)}")
    outbox = as_dict(status.get("outbox"))
    if outbox:
        _field(lines, "Outbox", _outbox(outbox, usage))
    sync = as_dict(status.get("sync"))
    if sync:
        _field(
            lines,
            "Sync",
            f"acked revision {cell(sync.get('ackedRevision'))}, "
            f"report seq {cell(sync.get('reportSeq'))}",
        )


def _outbox(outbox: dict[str, Any], usage: dict[str, Any]) -> str:
    """``12 reports waiting (3.1 KiB of a 256.0 MiB quota); deleted unsent since edgecore
    started: expired 4, quota 120``."""
    rows = usage.get("outboxRows")
    text = (
        f"{rows:,} reports waiting"
        if isinstance(rows, int) and not isinstance(rows, bool)
        else f"{cell(rows)} reports waiting"
    )
    text += f" ({_bytes(usage.get('outboxBytes'))} of a {_bytes(outbox.get('quotaBytes'))} quota)"
    dropped = {k: v for k, v in as_dict(outbox.get("dropped")).items() if v}
    if dropped:
        counts = ", ".join(f"{reason} {cell(n)}" for reason, n in sorted(dropped.items()))
        return f"{text}; deleted unsent since edgecore started: {counts}"
    return f"{text}; none deleted unsent"


def _changed_by(value: Any, now: float) -> str:
    """The annotation's text, with the age of its time when it ends in one."""
    text = cell(value)
    _, at, when = text.rpartition(" at ")
    return f"{text} ({age(when, now)} ago)" if at and parse_time(when) is not None else text


def _field(lines: list[str], label: str, value: str) -> None:
    lines.append(f"{label + ':':<{LABEL_WIDTH}}{value}")


def _mapping(lines: list[str], label: str, value: Any) -> None:
    """``Labels:  a=b`` with each further pair on its own aligned line."""
    pairs = [f"{k}={cell(v)}" for k, v in sorted(as_dict(value).items())]
    if not pairs:
        _field(lines, label, NONE)
        return
    _field(lines, label, pairs[0])
    lines.extend(" " * LABEL_WIDTH + p for p in pairs[1:])


def _indented(lines: list[str], table: str) -> None:
    lines.extend(INDENT + line for line in table.rstrip("\n").split("\n"))


def _when(timestamp: Any, now: float) -> str:
    return f"{timestamp} ({age(timestamp, now)} ago)" if timestamp else DASH


def _bytes(value: Any) -> str:
    return human_bytes(value) or DASH


def _cores(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g} cores"
    return cell(value) if value else DASH


def _percent(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.0f}%"
    return DASH
