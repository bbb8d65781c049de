"""``edgeward delete``: delete objects by kind and name, or those a manifest file names."""

from __future__ import annotations

import argparse
from typing import Any

from edgeward.cli.common import (
    add_command,
    error_line,
    hub_client,
    namespace_of,
    out,
    resolve_kind,
)
from edgeward.cli.errors import ApiError, HubUnreachable, TokenRefused, UsageError
from edgeward.cli.manifests import ManifestError, Target, identify, read_manifests

EPILOG = """\
examples:
  edgeward delete device thermo
  edgeward delete devices thermo hygro -n plant-3
  edgeward delete -f thermo.yaml              what the manifests name
  edgeward delete node edge-9 --ignore-not-found
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "delete",
        help="delete objects",
        description="Delete objects by kind and name, or the objects manifest files name.",
        epilog=EPILOG,
    )
    parser.add_argument("kind", metavar="KIND", nargs="?", help="devices, devicemodels or nodes")
    parser.add_argument("names", metavar="NAME", nargs="*")
    parser.add_argument(
        "-f",
        "--filename",
        metavar="FILE",
        action="append",
        help="a manifest file, a directory of them, or - for stdin (repeatable)",
    )
    parser.add_argument("-n", "--namespace", metavar="NS", help="namespace (default: default)")
    parser.add_argument(
        "--ignore-not-found", action="store_true", help="say nothing about objects already gone"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    targets, failed = _targets(args)
    client = hub_client(args)
    for target in targets:
        try:
            client.request("DELETE", client.object_path(target.kind, target.namespace, target.name))
        except (HubUnreachable, TokenRefused):
            raise
        except ApiError as exc:
            if exc.status == 404 and args.ignore_not_found:
                continue
            error_line(exc.message)
            failed = True
            continue
        out(f"{target.label} deleted\n")
    return 1 if failed else 0


def _targets(args: argparse.Namespace) -> tuple[list[Target], bool]:
    """What to delete, and whether some manifest could not be understood (already reported)."""
    if args.filename:
        if args.kind or args.names:
            raise UsageError("give either -f FILE or KIND NAME..., not both")
        targets, failed = [], False
        for doc in read_manifests(args.filename):
            try:
                targets.append(identify(doc, args.namespace))
            except ManifestError as exc:
                error_line(exc.message)
                failed = True
        return targets, failed
    if not args.kind:
        raise UsageError("say what to delete: KIND NAME... or -f FILE")
    if not args.names:
        raise UsageError(f"name the {args.kind} to delete")
    kind = resolve_kind(args.kind)
    namespace = namespace_of(kind, args)
    return [Target(kind, namespace, name) for name in args.names], False
