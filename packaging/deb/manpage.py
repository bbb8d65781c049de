"""Manual pages for the daemons, rendered from their command lines at package build time.

The page is the ``--help`` a user already gets (one source, never out of date), in the
man(7) macros: NAME, SYNOPSIS, DESCRIPTION, OPTIONS, then sections the caller adds
(commands, files, see also). argparse has no public way to walk a parser's options, so
this reads ``parser._actions``, as help2man-like tools do.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Section:
    """A section the caller adds: paragraphs, then a list of (term, definition) pairs, then
    the usage and options of a subcommand's parser. All plain text: render escapes it."""

    title: str
    paragraphs: tuple[str, ...] = ()
    entries: tuple[tuple[str, str], ...] = ()
    parser: argparse.ArgumentParser | None = None


def escape(text: str) -> str:
    """``text`` as roff input: backslashes escaped, and no line may start with a control
    character ('.' or "'"), which roff would take as a request."""
    lines = text.replace("\\", "\\e").splitlines() or [""]
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in lines)


def _flag(text: str) -> str:
    """An option name in bold, its hyphens as minus signs (what a user types)."""
    return "\\fB" + escape(text).replace("-", "\\-") + "\\fR"


def option_term(action: argparse.Action) -> str:
    """``--name METAVAR`` for one option (names joined by commas)."""
    names = ", ".join(_flag(name) for name in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    return f"{names} \\fI{escape(str(metavar))}\\fR"


def option_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The option's help, its %-formatting done as argparse does it for --help."""
    text = action.help or ""
    if "%" in text:
        params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
        params["prog"] = parser.prog
        text = text % params
    return escape(text)


def options(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(term, help) of each documented option of ``parser``."""
    return [
        (option_term(action), option_help(parser, action))
        for action in parser._actions
        if action.option_strings and action.help != argparse.SUPPRESS
    ]


def _usage(parser: argparse.ArgumentParser) -> str:
    """The usage line without its "usage: ", wrapped at 78 columns whatever the terminal."""
    formatter = argparse.HelpFormatter(parser.prog, width=78)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, "")
    return textwrap.dedent(formatter.format_help()).strip()


def render(
    parser: argparse.ArgumentParser,
    *,
    name: str,
    section: int,
    summary: str,
    version: str,
    date: str,
    extra: Iterable[Section] = (),
) -> str:
    """The manual page of ``parser``'s command, in man(7) macros."""
    out = [
        f'.TH {name.upper()} {section} "{date}" "Edgeward {escape(version)}" "Edgeward"',
        ".SH NAME",
        f"{escape(name)} \\- {escape(summary)}",
        ".SH SYNOPSIS",
        ".nf",
        escape(_usage(parser)),
        ".fi",
    ]
    if parser.description:
        out += [".SH DESCRIPTION", escape(parser.description)]
    out.append(".SH OPTIONS")
    for term, help_text in options(parser):
        out += [".TP", term, help_text]
    if parser.epilog:
        out += [".SH EXAMPLE", ".nf", escape(parser.epilog.removeprefix("example: ")), ".fi"]
    for part in extra:
        out.append(f".SH {escape(part.title.upper())}")
        for i, paragraph in enumerate(part.paragraphs):
            out += ([".PP"] if i else []) + [escape(paragraph)]
        for term, definition in part.entries:
            out += [".TP", f"\\fB{escape(term)}\\fR", escape(definition)]
        if part.parser is not None:
            out += [".PP", ".nf", escape(_usage(part.parser)), ".fi"]
            for term, help_text in options(part.parser):
                out += [".TP", term, help_text]
    return "\n".join(out) + "\n"
