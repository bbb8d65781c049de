"""``edgeward token create|list|delete``: the hub's bearer and join tokens (admins only).

``create`` prints the token alone on stdout, so ``T=$(edgeward token create ...)``
captures it; what it is for goes to stderr. The hub never shows a secret again:
``list`` shows ids, roles and states only.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any
from urllib.parse import quote

from edgeward.cli.common import add_command, error_line, hub_client, out
from edgeward.cli.errors import ApiError, CliError, UsageError
from edgeward.cli.output import (
    as_dict,
    as_list,
    cell,
    dump_json,
    dump_yaml,
    render_table,
    truncate,
)
from edgeward.kinds import dns_subdomain_problem

PATH = "/api/v1/tokens"
ROLES = ("node", "admin", "viewer")
#: The hub's bounds: ttlSeconds 1 to ten years, a description of 200 printable characters.
MAX_TTL_SECONDS = 10 * 365 * 86400
MAX_DESCRIPTION = 200
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TTL = re.compile(r"(\d{1,12})([smhdw]?)")
HEADERS = ["ID", "ROLE", "NODE", "STATE", "EXPIRES", "USES", "CREATED-BY", "DESCRIPTION"]
DESCRIPTION_WIDTH = 48

EPILOG = """\
examples:
  edgeward token create --node gw-1            a single-use token to join gateway gw-1
  edgeward token create --role viewer --ttl 7d --description "dashboard"
  edgeward token list
  edgeward token delete k3x9a2
"""

CREATE_EPILOG = """\
Only the token goes to stdout; what it is for goes to stderr. A token bound to a
node (--node) is single-use unless --reusable: it is for one 'edgeward join'.

examples:
  T=$(edgeward token create --node gw-1)
  edgeward join --hub https://hub.example:10002 --token "$T" --node gw-1   (on gw-1)
  edgeward token create --role admin --ttl 2w --description "ci pipeline"
  edgeward token create --role viewer --ttl 90d --reusable
"""

LIST_EPILOG = """\
STATE is valid, expired, revoked or used (a single-use token that joined a node).
No secret is ever shown again.

examples:
  edgeward token list
  edgeward token list -o json
"""

DELETE_EPILOG = """\
A revoked token is refused from the next request on; nodes already joined with
it keep their certificates (delete the Node to lock one out).

examples:
  edgeward token delete k3x9a2
  edgeward token delete k3x9a2 p0q1r2
  edgeward token delete "$T"                   the whole token works too
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "token",
        help="create, list or revoke the hub's tokens (admins only)",
        description="Create, list or revoke the tokens the hub accepts: node join tokens "
        "and API tokens for admins and viewers.",
        epilog=EPILOG,
    )
    parser.set_defaults(run=lambda args: _usage(parser))
    token_sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    create = add_command(
        token_sub,
        "create",
        help="create a token and print it",
        description="Create a token and print it (on stdout, alone).",
        epilog=CREATE_EPILOG,
    )
    create.add_argument(
        "--ttl",
        type=parse_ttl,
        default=86400,
        metavar="DURATION",
        help="how long it is valid: 90s, 30m, 24h, 7d, 2w or seconds (default: 24h)",
    )
    create.add_argument(
        "--role", choices=ROLES, help="node (default): join a gateway; admin; viewer: read only"
    )
    create.add_argument(
        "--node", metavar="NAME", help="bind a node token to this node (makes it single-use)"
    )
    uses = create.add_mutually_exclusive_group()
    uses.add_argument(
        "--single-use",
        dest="single_use",
        action="store_const",
        const=True,
        help="good for one join (the default with --node)",
    )
    uses.add_argument(
        "--reusable",
        dest="single_use",
        action="store_const",
        const=False,
        help="good until it expires (the default without --node)",
    )
    create.add_argument("--description", metavar="TEXT", help="what the token is for")
    create.set_defaults(run=run_create)

    listing = add_command(
        token_sub,
        "list",
        help="list tokens (never their secrets)",
        description="List the hub's tokens: id, role, node, state and expiry.",
        epilog=LIST_EPILOG,
    )
    listing.add_argument("-o", "--output", choices=("json", "yaml"))
    listing.set_defaults(run=run_list)

    delete = add_command(
        token_sub,
        "delete",
        help="revoke tokens",
        description="Revoke tokens by id.",
        epilog=DELETE_EPILOG,
    )
    delete.add_argument("ids", metavar="ID", nargs="+")
    delete.set_defaults(run=run_delete)


def _usage(parser: argparse.ArgumentParser) -> int:
    raise UsageError(f"say what to do: token create, list or delete (see '{parser.prog} --help')")


def parse_ttl(text: str) -> int:
    """Seconds in ``90s``, ``30m``, ``24h``, ``7d``, ``2w`` or ``3600``; at most ten years."""
    match = _TTL.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f'"{text}" is not a duration like 90s, 30m, 24h, 7d or 2w (or seconds)'
        )
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise argparse.ArgumentTypeError(
            f'"{text}" is out of range: from 1s to {MAX_TTL_SECONDS // 86400}d'
        )
    return seconds


def token_request(args: argparse.Namespace) -> dict[str, Any]:
    """The POST body for ``token create``; UsageError for what the hub would refuse."""
    body: dict[str, Any] = {"ttlSeconds": args.ttl}
    if args.role:
        body["role"] = args.role
    if args.node is not None:
        if args.role not in (None, "node"):
            raise UsageError(f"--node binds a node token: it cannot go with --role {args.role}")
        if (problem := dns_subdomain_problem(args.node)) is not None:
            raise UsageError(f'--node "{args.node}": {problem} (a node name, e.g. edge-1)')
        body["node"] = args.node
    if args.single_use is not None:
        body["singleUse"] = args.single_use
    if args.description is not None:
        if len(args.description) > MAX_DESCRIPTION or not args.description.isprintable():
            raise UsageError(
                f"--description: at most {MAX_DESCRIPTION} printable characters, one line"
            )
        body["description"] = args.description
    return body


def run_create(args: argparse.Namespace) -> int:
    body = token_request(args)
    client = hub_client(args)
    answer = as_dict(client.request("POST", PATH, body))
    token = answer.get("token")
    if not isinstance(token, str) or not token or not token.isprintable() or " " in token:
        raise CliError(f"the hub at {client.url} sent a token answer this CLI cannot read")
    out(f"{token}\n")
    sys.stderr.write(f"{describe_created(answer)}\n")
    sys.stderr.flush()
    return 0


def describe_created(row: dict[str, Any]) -> str:
    """The stderr line beside a new token: what it is for and until when."""
    what = f"{cell(row.get('role'))} token {cell(row.get('id'))}"
    if row.get("node"):
        what += f" for node {cell(row.get('node'))}"
    expires = row.get("expires")
    uses = "single use" if row.get("singleUse") else "reusable"
    return f"created {what}: expires {cell(expires) if expires else 'never'}, {uses}"


def run_list(args: argparse.Namespace) -> int:
    client = hub_client(args)
    listing = client.request("GET", PATH)
    if args.output == "json":
        out(dump_json(listing))
        return 0
    if args.output == "yaml":
        out(dump_yaml(listing))
        return 0
    rows = [token_row(item) for item in as_list(as_dict(listing).get("items"))]
    if not rows:
        sys.stderr.write("No tokens found.\n")
        return 0
    out(render_table(HEADERS, rows))
    return 0


def token_row(item: Any) -> list[str]:
    """A table row for one token of the hub's TokenList; any field may be missing."""
    item = as_dict(item)
    expires = item.get("expires")
    return [
        cell(item.get("id")),
        cell(item.get("role")),
        cell(item.get("node")),
        cell(item.get("state")),
        cell(expires) if expires else "never",
        "single-use" if item.get("singleUse") else "reusable",
        cell(item.get("createdBy")),
        truncate(cell(item.get("description")), DESCRIPTION_WIDTH),
    ]


def run_delete(args: argparse.Namespace) -> int:
    ids = [token_id(word) for word in args.ids]
    client = hub_client(args)
    failed = False
    for tid in ids:
        try:
            client.request("DELETE", f"{PATH}/{quote(tid, safe='')}")
        except ApiError as exc:
            if exc.status in (401, 403):
                raise  # the next ones would be refused the same way
            error_line(exc.message)
            failed = True
            continue
        out(f"token {tid} revoked\n")
    return 1 if failed else 0


def token_id(word: str) -> str:
    """The id in ``ID``, ``ID.SECRET`` or ``CAHASH.ID.SECRET`` (never echoing a secret)."""
    parts = word.strip().split(".")
    tid = parts[-2] if len(parts) > 1 else parts[0]
    if not tid:
        raise UsageError(f'"{word}" is not a token id (see edgeward token list)')
    return tid
