"""``edgeward events``: apps' uploads the hub keeps ($hw/events/upload/…), newest last;
``-w`` prints each new one as the hub stores it."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from edgeward.cli.common import add_command, hub_client, out
from edgeward.cli.output import as_dict, cell, render_table, truncate

PATH = "/api/v1/events"
HEADERS = ["TIME", "NODE", "SEQ", "DEVICE", "PAYLOAD"]
PAYLOAD_WIDTH = 60
MAX_LIMIT = 1000

EPILOG = """\
An upload's DEVICE is its topic after $hw/events/upload/ (meter-7, or default/meter-7);
--device D shows D and what is under it (--device default: every default/… device).
A payload that was not UTF-8 is shown as base64:… . The hub keeps uploads for its
event_retention setting (7 days by default).

examples:
  edgeward events                              the 100 newest uploads
  edgeward events --node gw-1 --device meter-7 --limit 20
  edgeward events -w                           and every new one as it arrives
  edgeward events -o json                      one JSON object per line
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "events",
        help="show apps' uploads ($hw/events/upload/...) the hub keeps; -w follows them",
        description="List the newest uploads the hub keeps, oldest first; with -w, go on "
        "printing each new one as the hub stores it.",
        epilog=EPILOG,
    )
    parser.add_argument("--node", metavar="NAME", help="only this node's uploads")
    parser.add_argument("--device", metavar="DEVICE", help="only this device's uploads")
    parser.add_argument(
        "--limit",
        type=_limit,
        default=100,
        metavar="N",
        help=f"how many of the newest to list, 1 to {MAX_LIMIT} (default 100)",
    )
    parser.add_argument("-w", "--watch", action="store_true", help="then follow new ones")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    client = hub_client(args)
    query = {k: v for k, v in (("node", args.node), ("device", args.device)) if v}
    listing = as_dict(client.request("GET", f"{PATH}?{urlencode({**query, 'limit': args.limit})}"))
    items = [as_dict(item) for item in listing.get("items") or []]
    if args.output == "json":
        for item in items:
            out(json.dumps(item) + "\n")
    else:
        out(render_table(HEADERS, [_row(item) for item in items]))
    if not args.watch:
        return 0
    last = as_dict(listing.get("metadata")).get("last", 0)
    path = f"{PATH}?{urlencode({**query, 'watch': 1, 'after': last})}"
    for event in client.stream(path):
        item = as_dict(event.get("object"))
        if args.output == "json":
            out(json.dumps(item) + "\n")
        else:
            out(render_table(HEADERS, [_row(item)]).split("\n", 1)[1])
    return 0


def _row(item: dict[str, Any]) -> list[str]:
    received = item.get("receivedTime")
    when = (
        dt.datetime.fromtimestamp(received, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(received, int | float) and not isinstance(received, bool)
        else cell(received)
    )
    payload = str(item.get("payload", ""))
    if item.get("encoding") == "base64":
        payload = f"base64:{payload}"
    return [
        when,
        cell(item.get("node")),
        cell(item.get("seq")),
        cell(item.get("device")),
        truncate(cell(payload), PAYLOAD_WIDTH),
    ]


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_LIMIT}, not {value}")
    return value
