"""``edgeward resync NODE``: make a node replace its cache with a full snapshot from the
hub — the remedy when `get nodes -o wide` shows its cache as Drift."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from edgeward.cli.common import add_command, hub_client, out
from edgeward.cli.errors import UsageError
from edgeward.kinds import dns_subdomain_problem

EPILOG = """\
A connected node is closed and reconnects at once; one that is offline takes the
snapshot when it next connects. Its cache is replaced whole; its outbox (reports not
yet delivered) is kept.

examples:
  edgeward get nodes -o wide        CACHE shows Synced or Drift
  edgeward resync press-7
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "resync",
        help="make a node replace its cache with a full snapshot (after drift)",
        description="Ask the hub to send NODE a full snapshot of its desired state, "
        "replacing the node's cache.",
        epilog=EPILOG,
    )
    parser.add_argument("node", metavar="NODE", help="the node's name")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if (problem := dns_subdomain_problem(args.node)) is not None:
        raise UsageError(f'node "{args.node}": {problem}')
    answer = hub_client(args).request("POST", f"/api/v1/nodes/{quote(args.node)}/resync")
    out(f"{answer.get('message', 'resync requested') if isinstance(answer, dict) else answer}\n")
    return 0
