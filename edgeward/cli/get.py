"""``edgeward get``: list or show objects, as a table, JSON, YAML or names; ``-w`` watches."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from edgeward.cli import columns
from edgeward.cli.client import HubClient, status_message
from edgeward.cli.common import (
    add_command,
    add_namespace_flags,
    error_line,
    hub_client,
    namespace_of,
    out,
    resolve_kind,
)
from edgeward.cli.errors import ApiError, UsageError
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
#: A watch that expires again right after each new listing is not making progress.
MAX_EXPIRED_IN_A_ROW = 3

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
    follower = Follower(client, view, kind, namespace, args.name)
    if args.name:
        obj = client.request("GET", client.object_path(kind, namespace, args.name))
        view.show_one(obj, args.watch)
        if args.watch:
            follower.shown[_key(obj)] = obj
            return follower.follow(follower.object_watch())
        return 0
    listing = client.request("GET", client.collection_path(kind, namespace))
    items = [i for i in (dig(listing, "items") or []) if isinstance(i, dict)]
    view.show_list(listing, items, namespace, args.watch)
    if args.watch:
        follower.shown.update((_key(obj), obj) for obj in items)
        return follower.follow(follower.collection_watch(listing))
    return 0


class Follower:
    """Prints a watch's events until the stream ends (0) or Ctrl-C (130, in main).

    When the hub ends the watch as expired (410: it can no longer send every change
    since the watch's revision), it lists again, prints what changed meanwhile — as
    the events that would have come — and watches on from the new listing, with one
    line on stderr. Events for what is already shown are not printed twice.
    """

    def __init__(
        self, client: HubClient, view: View, kind: Kind, namespace: str | None, name: str | None
    ) -> None:
        self.client = client
        self.view = view
        self.kind = kind
        self.namespace = namespace
        self.name = name
        #: The object last printed for each (namespace, name).
        self.shown: dict[tuple[str, str], dict[str, Any]] = {}

    def collection_watch(self, listing: Any) -> str:
        path = self.client.collection_path(self.kind, self.namespace) + "?watch=1"
        rv = dig(listing, "metadata", "resourceVersion")
        return f"{path}&resourceVersion={rv}" if rv else path

    def object_watch(self) -> str:
        # No resourceVersion: the object's own may be older than the change log. The hub
        # sends the object's current state first, which is skipped if already shown.
        assert self.name is not None
        return self.client.object_path(self.kind, self.namespace, self.name) + "?watch=1"

    def follow(self, path: str) -> int:
        expired_in_a_row = 0
        while True:
            try:
                for event in self.client.stream(path):
                    if event.get("type") == "ERROR":
                        raise _status_error(event.get("object"))
                    if self.show(event):
                        expired_in_a_row = 0
                return 0
            except ApiError as exc:
                if exc.status != 410:
                    raise
                expired_in_a_row += 1
                if expired_in_a_row > MAX_EXPIRED_IN_A_ROW:
                    raise ApiError(
                        410, exc.reason, f"{exc.message} ({MAX_EXPIRED_IN_A_ROW} times in a row)"
                    ) from None
                error_line(f"watch expired, listing again: {exc.message}")
                path = self.relist()

    def relist(self) -> str:
        """Print what changed since the objects shown; the path to watch on from."""
        if self.name is not None:
            try:
                obj = self.client.request(
                    "GET", self.client.object_path(self.kind, self.namespace, self.name)
                )
            except ApiError as exc:
                if exc.status != 404:
                    raise
                for gone in list(self.shown.values()):
                    self.show({"type": "DELETED", "object": gone})
            else:
                self.show({"type": "ADDED", "object": obj})
            return self.object_watch()
        listing = self.client.request("GET", self.client.collection_path(self.kind, self.namespace))
        items = [i for i in (dig(listing, "items") or []) if isinstance(i, dict)]
        present = {_key(obj) for obj in items}
        for obj in items:
            self.show({"type": "ADDED", "object": obj})
        for key, gone in list(self.shown.items()):
            if key not in present:
                self.show({"type": "DELETED", "object": gone})
        return self.collection_watch(listing)

    def show(self, event: dict[str, Any]) -> bool:
        """Print ``event`` unless it shows nothing new; whether it was printed."""
        obj = event.get("object")
        if not isinstance(obj, dict):
            return False
        kind = event.get("type")
        key = _key(obj)
        before = self.shown.get(key)
        if kind in ("ADDED", "MODIFIED"):
            if before is not None and _rv(obj) <= _rv(before):
                return False  # printed already
            if before is not None:
                kind = "MODIFIED"
            self.shown[key] = obj
        elif kind == "DELETED":
            self.shown.pop(key, None)
        self.view.show_event({**event, "type": kind})
        return True


def _status_error(status: Any) -> ApiError:
    """The error an in-stream ERROR event reports."""
    if not isinstance(status, dict):
        return ApiError(500, "", "the hub ended the watch with an error it did not describe")
    code = status.get("code")
    reason = str(status.get("reason") or "")
    return ApiError(code if isinstance(code, int) else 500, reason, status_message(status))


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


def _key(obj: Any) -> tuple[str, str]:
    return (str(dig(obj, "metadata", "namespace") or ""), str(dig(obj, "metadata", "name") or ""))


def _rv(obj: Any) -> int:
    try:
        return int(dig(obj, "metadata", "resourceVersion"))
    except (TypeError, ValueError):
        return -1
