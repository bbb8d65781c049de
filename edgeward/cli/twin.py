"""``edgeward twin set|get|history``: a device's desired values, what its edge reported, and
the reported values over time."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any
from urllib.parse import urlencode

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

HISTORY_EPILOG = """\
Each value the edge reported, with the time it was reported (the edge's clock). While
its link is down an edge keeps each device's latest state only, so an outage leaves the
last value of each property from before the link came back, not every one.

examples:
  edgeward twin history thermo temperature
  edgeward twin history thermo temperature --since 1h
  edgeward twin history thermo temperature --limit 10 -o json
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
        epilog="examples:\n  edgeward twin set thermo target=21\n  edgeward twin get thermo\n"
        "  edgeward twin history thermo temperature --since 1h\n",
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

    past = add_command(
        twin_sub,
        "history",
        help="show a property's reported values over time",
        description="Show the values the edge reported for one property of a device, oldest "
        "first, as the hub keeps them (history_retention, history_max_per_property).",
        epilog=HISTORY_EPILOG,
    )
    past.add_argument("device", metavar="DEVICE")
    past.add_argument("property", metavar="PROPERTY")
    past.add_argument(
        "--since",
        metavar="AGE",
        type=_age,
        help="only values reported within this long: 90s, 30m, 24h, 7d, 2w (default: all)",
    )
    past.add_argument(
        "--limit",
        metavar="N",
        type=_limit,
        default=1000,
        help="at most the newest N values (1 to 10000, default 1000)",
    )
    past.add_argument("-n", "--namespace", metavar="NS", help="namespace (default: default)")
    past.add_argument("-o", "--output", choices=("json", "yaml"))
    past.set_defaults(run=run_history)


HISTORY_HEADERS = ["TIME", "VALUE"]


def _usage(parser: argparse.ArgumentParser) -> int:
    raise UsageError(
        f"say what to do: twin set, twin get or twin history (see '{parser.prog} --help')"
    )


def _age(text: str) -> int:
    from edgeward.cli.token import parse_ttl

    try:
        return parse_ttl(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f'"{text}" is not a number from 1 to 10000')
    return int(text)


def run_history(args: argparse.Namespace) -> int:
    client: HubClient = hub_client(args)
    namespace = namespace_of(DEVICE, args)
    query = {"property": args.property, "limit": str(args.limit)}
    if args.since is not None:
        query["since"] = f"{time.time() - args.since:.3f}"
    path = f"{client.object_path(DEVICE, namespace, args.device)}/history?{urlencode(query)}"
    answer = client.request("GET", path)
    if args.output in ("json", "yaml"):
        out(dump_json(answer) if args.output == "json" else dump_yaml(answer))
        return 0
    items = as_list(dig(answer, "items"))
    if not items:
        out(f"no reported values of {args.property} on device/{args.device}\n")
        return 0
    out(render_table(HISTORY_HEADERS, [[dig(i, "time"), dig(i, "value")] for i in items]))
    return 0


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
