"""``edgeward``: the operator CLI's entry point.

To add a subcommand, write a module with ``register(subparsers)`` (see
:func:`edgeward.cli.common.add_command`) that sets ``run`` as a parser default,
and list its ``register`` in :data:`SUBCOMMANDS`. ``run(args)`` returns the
exit status and raises :class:`~edgeward.cli.errors.CliError` for failures;
:func:`main` turns those into one ``edgeward: <reason>`` line.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import edgeward
from edgeward.cli import (
    apply,
    delete,
    demo,
    demo_ha,
    describe,
    events,
    get,
    join,
    reset,
    resync,
    token,
    twin,
    version,
)
from edgeward.cli.common import PROG, Parser, add_hub_flags, error_line
from edgeward.cli.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
)

DEBUG_ENV = "EDGEWARD_DEBUG"

#: Each registers one subcommand.
SUBCOMMANDS: list[Callable[[Any], None]] = [
    get.register,
    describe.register,
    apply.register,
    delete.register,
    twin.register,
    events.register,
    resync.register,
    token.register,
    join.register,
    reset.register,
    version.register,
    demo.register,
    demo_ha.register,
]

EPILOG = """\
examples:
  edgeward apply -f thermo.yaml               create or update from a manifest
  edgeward get devices -o wide                devices with their desired values
  edgeward get nodes                          node readiness and agent versions
  edgeward twin set thermo target=21          set a desired value
  edgeward twin get thermo                    desired vs reported values
  edgeward token create --node gw-1           a token to join gateway gw-1 with
  edgeward token list                         tokens, their roles and states
  edgeward --hub http://hub:10002 get nodes   another hub (or set EDGEWARD_HUB)

configuration:
  The hub URL, token and CA come from --config FILE, else $EDGEWARD_CONFIG, else
  ~/.config/edgeward/config.yaml (keys: hub, token, and ca or ca_file); 'cloudhub
  init' writes one for its admin as <data-dir>/admin.yaml. EDGEWARD_HUB,
  EDGEWARD_TOKEN and EDGEWARD_CA (a PEM file) override the file; --hub overrides
  them all.

Run 'edgeward COMMAND --help' for a command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Operate an Edgeward fleet: the devices, device models and nodes a "
        "cloudhub holds.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_hub_flags(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"{PROG} {edgeward.__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it)."""
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version and usage errors
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        run = getattr(args, "run", None)
        if run is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(run(args))
    except CliError as exc:
        error_line(exc.message)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`edgeward get ... | head`); keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        error_line(
            f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)"
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
