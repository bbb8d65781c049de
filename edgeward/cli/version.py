"""``edgeward version``: this CLI's version and the hub's, to check they match."""

from __future__ import annotations

import argparse
import json
from typing import Any

import edgeward
from edgeward.cli.common import add_command, hub_client, out
from edgeward.cli.errors import CliError


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "version",
        help="show this CLI's version and the hub's",
        description="Print the edgeward CLI's version, then the version of the hub it is "
        "configured for (from its /healthz, which needs no token). Exit status 1, after the "
        "client line, when the hub cannot be asked.",
        epilog="examples:\n  edgeward version\n  edgeward version -o json",
    )
    parser.add_argument(
        "--client", action="store_true", help="only this CLI's version (no hub is contacted)"
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    versions: dict[str, Any] = {"client": edgeward.__version__}
    failure: CliError | None = None
    if not args.client:
        client = hub_client(args)
        try:
            health = client.request("GET", "/healthz")
            versions["hub"] = {"version": str(health.get("version", "?")), "url": client.url}
        except CliError as exc:
            failure = exc
    if args.output == "json":
        out(json.dumps(versions) + "\n")
    else:
        out(f"client  {versions['client']}\n")
        if "hub" in versions:
            out(f"hub     {versions['hub']['version']} ({versions['hub']['url']})\n")
    if failure is not None:
        raise failure
    return 0
