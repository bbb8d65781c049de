"""``edgeward twin set|get``: a device's desired values and what its edge reported."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any

from edgeward.cli.client import HubClient
from edgeward.cli.common import add_command, hub_client, namespace_of, out
from edgeward.cli.errors import ApiError, CliError, UsageError
from edgeward.cli.output import (
    DASH,
    age_of_epoch,
    as_dict,
    as_list,
    dig,
    dump_json,
    dump_yaml,
    parse_millis,
    render_table,
)
from edgeward.kinds import DEFAULT_NAMESPACE, DEVICE

MAX_ATTEMPTS = 5
HEADERS = ["PROPERTY", "DESIRED", "REPORTED", "OBSERVED-DESIRED", "UPDATED"]

SET_EPILOG = """\
Values are strings; a property the device does not list yet is added.

examples:
  edgeward twin set thermo target=21
  edgeward twin set thermo target=21 mode=eco -n plant-3
"""

GET_EPILOG = """\
DESIRED is what the hub wants (spec.properties[].desired.value); REPORTED and
OBSERVED-DESIRED are what the edge last reported (status.twins[]); UPDATED is the
age of the reported value. "-" means not known yet.

examples:
  edgeward twin get thermo
  edgeward twin get thermo -o json
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "twin",
        help="set or show a device's twin (desired and reported property values)",
        description="Set or show a device's twin: desired and reported property values.",
        epilog="examples:\n  edgeward twin set thermo target=21\n  edgeward twin get thermo\n",
    )
    parser.set_defaults(run=lambda args: _usage(parser))
    twin_sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    setter = add_command(
        twin_sub,
        "set",
        help="set desired property values",
        description="Set desired values of a device's properties.",
        epilog=SET_EPILOG,
    )
    setter.add_argument("device", metavar="DEVICE")
    setter.add_argument("assignments", metavar="PROP=VALUE", nargs="+")
    setter.add_argument("-n", "--namespace", metavar="NS", help="namespace (default: default)")
    setter.set_defaults(run=run_set)

    getter = add_command(
        twin_sub,
        "get",
        help="show desired and reported values",
        description="Show a device's desired and reported property values.",
        epilog=GET_EPILOG,
    )
    getter.add_argument("device", metavar="DEVICE")
    getter.add_argument("-n", "--namespace", metavar="NS", help="namespace (default: default)")
    getter.add_argument("-o", "--output", choices=("json", "yaml"))
    getter.set_defaults(run=run_get)


def _usage(parser: argparse.ArgumentParser) -> int:
    raise UsageError(f"say what to do: twin set or twin get (see '{parser.prog} --help')")


def parse_assignments(words: list[str]) -> list[tuple[str, str]]:
    """``["a=1", "b=x=y"]`` → ``[("a", "1"), ("b", "x=y")]``; UsageError for a bad word."""
    out_pairs = []
    for word in words:
        name, eq, value = word.partition("=")
        if not eq:
            raise UsageError(f'"{word}" is not PROP=VALUE')
        if not name:
            raise UsageError(f'"{word}" names no property (PROP=VALUE)')
        out_pairs.append((name, value))
    return out_pairs


def with_desired(
    device: dict[str, Any], pairs: list[tuple[str, str]], stamp_ms: int | None = None
) -> dict[str, Any]:
    """A copy of ``device`` (without status) with each property's desired value set.

    Each value is stamped (``desired.metadata.timestamp``, ms): the edge takes a new stamp as
    a new operator write even when the value is the same, so ``twin set`` re-asserts a value
    a mapper changed locally.
    """
    stamp = str(time.time_ns() // 1_000_000 if stamp_ms is None else stamp_ms)
    body = {k: v for k, v in device.items() if k != "status"}
    spec = dict(as_dict(body.get("spec")))
    props = [dict(p) if isinstance(p, dict) else p for p in as_list(spec.get("properties"))]
    for name, value in pairs:
        entry = next((p for p in props if isinstance(p, dict) and p.get("name") == name), None)
        desired = {"value": value, "metadata": {"timestamp": stamp}}
        if entry is None:
            props.append({"name": name, "desired": desired})
        else:
            previous = as_dict(entry.get("desired"))
            meta = {**as_dict(previous.get("metadata")), **desired["metadata"]}
            entry["desired"] = {**previous, **desired, "metadata": meta}
    spec["properties"] = props
    body["spec"] = spec
    return body


def run_set(args: argparse.Namespace) -> int:
    pairs = parse_assignments(args.assignments)
    client = hub_client(args)
    namespace = namespace_of(DEVICE, args)
    path = client.object_path(DEVICE, namespace, args.device)
    summary = ", ".join(f"{k}={v}" for k, v in pairs)
    for _attempt in range(MAX_ATTEMPTS):
        current = client.request("GET", path)
        try:
            written = client.request("PUT", path, with_desired(current, pairs))
        except ApiError as exc:
            if exc.status == 409 and exc.reason == "Conflict":
                continue  # someone wrote in between: read again and reapply our values
            raise
        verb = "unchanged" if _rv(written) == _rv(current) else "updated"
        out(f"device/{args.device} twin {verb} ({summary})\n")
        return 0
    raise CliError(
        f"device/{args.device} kept changing; gave up after {MAX_ATTEMPTS} attempts, try again"
    )


def run_get(args: argparse.Namespace) -> int:
    client: HubClient = hub_client(args)
    namespace = namespace_of(DEVICE, args)
    device = client.request("GET", client.object_path(DEVICE, namespace, args.device))
    if args.output in ("json", "yaml"):
        summary = twin_summary(device)
        out(dump_json(summary) if args.output == "json" else dump_yaml(summary))
    else:
        out(render_table(HEADERS, twin_rows(device, time.time())))
    return 0


def twin_state(device: Any) -> dict[str, dict[str, Any]]:
    """Per property: desired, reported, observedDesired and reportedAt (epoch seconds).

    Properties in the spec come first, in order, then any the edge reported beyond them.
    """
    state: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return state.setdefault(
            name, {"desired": None, "reported": None, "observedDesired": None, "reportedAt": None}
        )

    for prop in as_list(dig(device, "spec", "properties")):
        name = dig(prop, "name")
        if isinstance(name, str):
            entry(name)["desired"] = dig(prop, "desired", "value")
    for twin in as_list(dig(device, "status", "twins")):
        name = dig(twin, "propertyName")
        if not isinstance(name, str):
            continue
        e = entry(name)
        e["reported"] = dig(twin, "reported", "value")
        e["observedDesired"] = dig(twin, "observedDesired", "value")
        e["reportedAt"] = parse_millis(dig(twin, "reported", "metadata", "timestamp"))
    return state


def sync_state(device: Any) -> str:
    """Whether a device has reached its desired values: ``yes``; ``pending`` while a desired
    value has not reached the edge yet; ``no`` when the edge has it but the device reports
    something else; ``-`` when nothing is desired."""
    wanted = [s for s in twin_state(device).values() if s["desired"] is not None]
    if not wanted:
        return DASH
    if any(s["observedDesired"] != s["desired"] for s in wanted):
        return "pending"
    if any(s["reported"] != s["desired"] for s in wanted):
        return "no"
    return "yes"


def twin_rows(device: Any, now: float) -> list[list[str]]:
    """Rows for :data:`HEADERS`; ``-`` for what is not known."""
    return [
        [
            name,
            _text(s["desired"]),
            _text(s["reported"]),
            _text(s["observedDesired"]),
            age_of_epoch(s["reportedAt"], now),
        ]
        for name, s in twin_state(device).items()
    ]


def twin_summary(device: Any) -> dict[str, Any]:
    """What ``twin get -o json`` prints: ``{"device": "ns/name", "twins": {...}}``."""
    ns = dig(device, "metadata", "namespace") or DEFAULT_NAMESPACE
    name = dig(device, "metadata", "name")
    twins = {}
    for prop, s in twin_state(device).items():
        at = s["reportedAt"]
        twins[prop] = {**s, "reportedAt": None if at is None else _rfc3339_ms(at)}
    return {"device": f"{ns}/{name}", "twins": twins}


def _text(value: Any) -> str:
    if value is None:
        return DASH
    if value == "":
        return '""'
    return value if isinstance(value, str) else str(value)


def _rfc3339_ms(epoch: float) -> str:
    try:
        when = dt.datetime.fromtimestamp(epoch, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return str(int(epoch * 1000))
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _rv(obj: Any) -> str | None:
    rv = dig(obj, "metadata", "resourceVersion")
    return None if rv is None else str(rv)
