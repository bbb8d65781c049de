"""What the subcommands share: parser helpers, the hub client, kinds and printing.

A subcommand module has a ``register(subparsers)`` function that calls
:func:`add_command` and sets ``run`` (``run(args) -> exit status``) as the
parser default; :mod:`edgeward.cli.main` lists the modules in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from edgeward.cli import config
from edgeward.cli.client import DEFAULT_HUB, DEFAULT_TIMEOUT, HubClient
from edgeward.cli.errors import UsageError
from edgeward.kinds import DEFAULT_NAMESPACE, Kind, kind_named

PROG = "edgeward"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``edgeward: <reason>``."""

    def error(self, message: str) -> Any:  # argparse declares NoReturn
        self.exit(2, f"{PROG}: {message} (see '{self.prog} --help')\n")


def add_hub_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """``--hub``, ``--config`` and ``--timeout``; ``suppress`` keeps a subcommand's copy from
    hiding the global value when it is not given after the subcommand."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--hub",
        metavar="URL",
        default=default,
        help=f"the cloudhub REST API (default: ${config.HUB_ENV}, else the config's hub, "
        f"else {DEFAULT_HUB})",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help=f"the hub URL, token and CA, e.g. the admin.yaml 'cloudhub init' wrote "
        f"(default: ${config.CONFIG_ENV}, else ~/{config.DEFAULT_CONFIG} if it exists)",
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
    """A client for the hub the flags, environment and config file name (see
    :mod:`edgeward.cli.config`)."""
    settings = config.load(
        getattr(args, "hub", None), getattr(args, "config", None), os.environ, _home()
    )
    try:
        return HubClient(
            settings.hub, getattr(args, "timeout", DEFAULT_TIMEOUT), settings.credentials
        )
    except UsageError as exc:
        if settings.hub_from in ("--hub", "default"):
            raise
        raise UsageError(f"{exc.message} (from {settings.hub_from})") from None


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


def _home() -> Path | None:
    try:
        return Path.home()
    except RuntimeError:  # no $HOME and no password entry: there is no default config
        return None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
    return value
