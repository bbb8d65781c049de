"""``edgeward get``: list or show objects, as a table, JSON, YAML or names; ``-w`` watches."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from edgeward.cli import columns
from edgeward.cli.client import HubClient
from edgeward.cli.common import (
    add_command,
    add_namespace_flags,
    hub_client,
    namespace_of,
    out,
    resolve_kind,
)
from edgeward.cli.errors import UsageError
from edgeward.cli.output import (
    column_widths,
    dig,
    dump_json,
    dump_json_line,
    dump_yaml,
    format_row,
)
from edgeward.kinds import Kind

OUTPUTS = ("json", "yaml", "wide", "name")

EPILOG = """\
KIND is devices (device, dev), devicemodels (dm, model) or nodes (node, no).

examples:
  edgeward get devices                   devices in the default namespace
  edgeward get dev -n plant-3 -o wide    with property counts and desired values
  edgeward get devices -A                every namespace
  edgeward get device thermo -o yaml     one device as YAML
  edgeward get nodes -o wide             heartbeats, CPU, memory and disk
  edgeward get devices -w                print the table, then a row per change (Ctrl-C stops)
  edgeward get devices -o json -w        one JSON watch event per line
  edgeward get devices -w --output-watch-events
                                         rows start with ADDED, MODIFIED or DELETED
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "get",
        help="list objects, or show one",
        description="List the objects of a kind, or show one by name.",
        epilog=EPILOG,
    )
    parser.add_argument("kind", metavar="KIND", help="devices, devicemodels or nodes")
    parser.add_argument("name", metavar="NAME", nargs="?", help="show only this object")
    add_namespace_flags(parser, all_namespaces=True)
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        help="json or yaml (the object or List as the API returns it), "
        "wide (more columns) or name (kind/name)",
    )
    parser.add_argument(
        "-w", "--watch", action="store_true", help="after the listing, print every change"
    )
    parser.add_argument(
        "--output-watch-events",
        action="store_true",
        help="with -w in table form: an EVENT column (ADDED, MODIFIED, DELETED)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    kind = resolve_kind(args.kind)
    all_ns = bool(args.all_namespaces) and kind.namespaced
    if args.name and args.all_namespaces:
        raise UsageError("a name cannot be looked up across all namespaces; use -n NS")
    namespace = None if all_ns else namespace_of(kind, args)
    client = hub_client(args)
    events = args.watch and args.output_watch_events
    view = View(kind, args.output, all_ns, events)
    if args.name:
        obj = client.request("GET", client.object_path(kind, namespace, args.name))
        view.show_one(obj, args.watch)
        if args.watch:
            path = client.object_path(kind, namespace, args.name) + "?watch=1"
            # No resourceVersion: the hub replays the object's current state first,
            # which is skipped if it is what was just printed.
            return watch(client, path, view, skip_through=_rv(obj))
        return 0
    listing = client.request("GET", client.collection_path(kind, namespace))
    items = [i for i in (dig(listing, "items") or []) if isinstance(i, dict)]
    view.show_list(listing, items, namespace, args.watch)
    if args.watch:
        rv = dig(listing, "metadata", "resourceVersion")
        path = client.collection_path(kind, namespace) + "?watch=1"
        if rv:
            path += f"&resourceVersion={rv}"
        return watch(client, path, view)
    return 0


def watch(client: HubClient, path: str, view: View, skip_through: int = -1) -> int:
    """Print each watch event until the stream ends (0) or Ctrl-C (130, in main)."""
    for event in client.stream(path):
        obj = event.get("object")
        if not isinstance(obj, dict):
            continue
        if event.get("type") == "ADDED" and _rv(obj) <= skip_through:
            continue
        view.show_event(event)
    return 0


class View:
    """Prints objects for one ``-o`` choice, remembering column widths across watch events."""

    def __init__(
        self, kind: Kind, output: str | None, all_namespaces: bool, events: bool = False
    ) -> None:
        self.kind = kind
        self.output = output
        self.all_ns = all_namespaces
        self.events = events  # an EVENT column first
        self.widths: list[int] | None = None

    @property
    def tabular(self) -> bool:
        return self.output in (None, "wide")

    def show_one(self, obj: Any, watching: bool) -> None:
        if watching and self.output == "json":
            out(dump_json_line({"type": "ADDED", "object": obj}))
        elif self.output == "json":
            out(dump_json(obj))
        elif self.output == "yaml":
            out(("---\n" if watching else "") + dump_yaml(obj))
        elif self.output == "name":
            out(columns.label(self.kind, obj) + "\n")
        else:
            self._table([obj])

    def show_list(
        self, listing: Any, items: list[dict[str, Any]], namespace: str | None, watching: bool
    ) -> None:
        if self.output == "json":
            if watching:  # a watch prints one JSON event per line, the listing included
                for obj in items:
                    out(dump_json_line({"type": "ADDED", "object": obj}))
            else:
                out(dump_json(listing))
        elif self.output == "yaml":
            if watching:
                for obj in items:
                    out("---\n" + dump_yaml(obj))
            else:
                out(dump_yaml(listing))
        elif self.output == "name":
            out("".join(columns.label(self.kind, obj) + "\n" for obj in items))
        elif items or watching:
            self._table(items)
        else:
            where = f" in {namespace} namespace" if namespace else ""
            sys.stderr.write(f"No resources found{where}.\n")

    def show_event(self, event: dict[str, Any]) -> None:
        obj = event["object"]
        if self.output == "json":
            out(dump_json_line(event))
        elif self.output == "yaml":
            out("---\n" + dump_yaml(obj))
        elif self.output == "name":
            out(columns.label(self.kind, obj) + "\n")
        else:
            cells = self._cells(obj, str(event.get("type", "")))
            widths = self.widths or column_widths(self._headers(), [cells])
            out(format_row(cells, widths) + "\n")

    def _headers(self) -> list[str]:
        names = columns.headers(self.kind, self.output == "wide", self.all_ns)
        return ["EVENT", *names] if self.events else names

    def _cells(self, obj: dict[str, Any], event: str = "ADDED") -> list[str]:
        cells = columns.row(self.kind, obj, time.time(), self.output == "wide", self.all_ns)
        return [event, *cells] if self.events else cells

    def _table(self, objs: list[dict[str, Any]]) -> None:
        headers = self._headers()
        rows = [self._cells(o) for o in objs]
        self.widths = column_widths(headers, rows)
        out("".join(format_row(r, self.widths) + "\n" for r in [headers, *rows]))


def _rv(obj: Any) -> int:
    try:
        return int(dig(obj, "metadata", "resourceVersion"))
    except (TypeError, ValueError):
        return -1
