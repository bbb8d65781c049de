"""What the subcommands share: parser helpers, the hub client, kinds and printing.

A subcommand module has a ``register(subparsers)`` function that calls
:func:`add_command` and sets ``run`` (``run(args) -> exit status``) as the
parser default; :mod:`edgeward.cli.main` lists the modules in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from edgeward.cli.client import DEFAULT_HUB, DEFAULT_TIMEOUT, HubClient
from edgeward.cli.errors import UsageError
from edgeward.kinds import DEFAULT_NAMESPACE, Kind, kind_named

HUB_ENV = "EDGEWARD_HUB"
PROG = "edgeward"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``edgeward: <reason>``."""

    def error(self, message: str) -> Any:  # argparse declares NoReturn
        self.exit(2, f"{PROG}: {message} (see '{self.prog} --help')\n")


def add_hub_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """``--hub`` and ``--timeout``; ``suppress`` keeps a subcommand's copy from hiding the
    global value when it is not given after the subcommand."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--hub",
        metavar="URL",
        default=default,
        help=f"the cloudhub REST API (default: ${HUB_ENV}, else {DEFAULT_HUB})",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive_float,
        default=argparse.SUPPRESS if suppress else DEFAULT_TIMEOUT,
        help=f"give up on a request after this long (default: {DEFAULT_TIMEOUT:g})",
    )


def add_command(
    subparsers: Any,
    name: str,
    *,
    help: str,
    description: str,
    epilog: str = "",
    hub: bool = True,
) -> argparse.ArgumentParser:
    """A subcommand parser; ``epilog`` holds examples and keeps its line breaks."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if hub:
        add_hub_flags(parser, suppress=True)
    return parser


def add_namespace_flags(parser: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-n",
        "--namespace",
        metavar="NS",
        help=f"namespace of namespaced kinds (default: {DEFAULT_NAMESPACE})",
    )
    if all_namespaces:
        group.add_argument(
            "-A",
            "--all-namespaces",
            action="store_true",
            help="every namespace (adds a NAMESPACE column)",
        )


def hub_client(args: argparse.Namespace) -> HubClient:
    url = getattr(args, "hub", None) or os.environ.get(HUB_ENV) or DEFAULT_HUB
    return HubClient(url, getattr(args, "timeout", DEFAULT_TIMEOUT))


def resolve_kind(word: str) -> Kind:
    """The kind a user typed (``devices``, ``dev``, ``no``...); UsageError when unknown."""
    try:
        return kind_named(word)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None


def namespace_of(kind: Kind, args: argparse.Namespace) -> str | None:
    """Where a namespaced kind is read: ``-n``, else default; None for cluster-scoped kinds."""
    if not kind.namespaced:
        return None
    return getattr(args, "namespace", None) or DEFAULT_NAMESPACE


def out(text: str) -> None:
    """Print to stdout at once: a watch must show each event as it arrives."""
    sys.stdout.write(text)
    sys.stdout.flush()


def error_line(message: str) -> None:
    """Report one failure on stderr and carry on (the caller sets the exit status)."""
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value
