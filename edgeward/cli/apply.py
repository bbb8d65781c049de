"""``edgeward apply``: create or replace the objects manifests describe."""

from __future__ import annotations

import argparse
from typing import Any

from edgeward.cli.client import HubClient
from edgeward.cli.common import add_command, error_line, hub_client, out
from edgeward.cli.errors import ApiError, CliError, HubUnreachable, TokenRefused
from edgeward.cli.manifests import (
    ManifestError,
    Target,
    expand_paths,
    identify,
    load_documents,
    read_source,
)
from edgeward.cli.output import dig

MAX_ATTEMPTS = 5

EPILOG = """\
Each document is created, or replaced when it exists ("configured"), or left
alone when nothing changed ("unchanged"). KubeEdge devices.kubeedge.io/v1beta1
Device and DeviceModel manifests and v1 Node manifests apply as they are. A bad
document is reported and skipped; the exit status is 1 if any failed.

examples:
  edgeward apply -f thermo.yaml
  edgeward apply -f manifests/ -n plant-3     every .yaml/.yml/.json file in the directory
  edgeward get devices -o yaml | edgeward apply -f -
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "apply",
        help="create or update objects from YAML or JSON manifests",
        description="Create or update the objects described by YAML or JSON manifests.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "-f",
        "--filename",
        metavar="FILE",
        action="append",
        required=True,
        help="a manifest file, a directory of them, or - for stdin (repeatable)",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        metavar="NS",
        help="namespace for documents that name none (default: default)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    client = hub_client(args)
    failed = False
    for path in expand_paths(args.filename):
        try:
            docs = load_documents(read_source(path), "<stdin>" if path == "-" else path)
        except ManifestError as exc:
            error_line(exc.message)
            failed = True
            continue
        for doc in docs:
            try:
                target = identify(doc, args.namespace)
                result = apply_one(client, target, doc.body)
            except (HubUnreachable, TokenRefused):
                raise  # every further document would fail the same way
            except ManifestError as exc:
                error_line(exc.message)
                failed = True
                continue
            except CliError as exc:
                error_line(f"{doc.where}: {exc.message}")
                failed = True
                continue
            out(f"{target.label} {result}\n")
    return 1 if failed else 0


def apply_one(client: HubClient, target: Target, body: dict[str, Any]) -> str:
    """Create or replace one object: ``created``, ``configured`` or ``unchanged``."""
    collection = client.collection_path(target.kind, target.namespace)
    path = client.object_path(target.kind, target.namespace, target.name)
    exists = False
    for _attempt in range(MAX_ATTEMPTS):
        if not exists:
            try:
                client.request("POST", collection, body)
                return "created"
            except ApiError as exc:
                if not (exc.status == 409 and exc.reason == "AlreadyExists"):
                    raise
            exists = True
        try:
            current = client.request("GET", path)
            rv = dig(current, "metadata", "resourceVersion")
            written = client.request("PUT", path, with_resource_version(body, rv))
        except ApiError as exc:
            if exc.status == 404:
                exists = False  # deleted in between: create it again
                continue
            if exc.status == 409 and exc.reason == "Conflict":
                continue  # written in between: read it again
            raise
        same = str(dig(written, "metadata", "resourceVersion")) == str(rv)
        return "unchanged" if same else "configured"
    raise CliError(f"{target.label} kept changing; gave up after {MAX_ATTEMPTS} attempts")


def with_resource_version(body: dict[str, Any], rv: Any) -> dict[str, Any]:
    """A copy of ``body`` whose metadata carries ``rv``, the precondition of the replace."""
    meta = body.get("metadata")
    meta = dict(meta) if isinstance(meta, dict) else {}
    if rv is None:
        meta.pop("resourceVersion", None)
    else:
        meta["resourceVersion"] = str(rv)
    return {**body, "metadata": meta}
