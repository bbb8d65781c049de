"""The daemons' manual pages, rendered from their command lines (packaging/deb/manpage.py)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

import cloudhub.init
import cloudhub.main
import edgecore.main

_PATH = Path(__file__).resolve().parents[2] / "packaging" / "deb" / "manpage.py"
_spec = importlib.util.spec_from_file_location("manpage", _PATH)
assert _spec is not None and _spec.loader is not None
manpage = importlib.util.module_from_spec(_spec)
sys.modules["manpage"] = manpage
_spec.loader.exec_module(manpage)


def page(parser: argparse.ArgumentParser, **extra: object) -> str:
    options = {"name": "edgecore", "section": 8, "summary": "s", "version": "1.0", "date": "d"}
    return manpage.render(parser, **{**options, **extra})


def test_every_option_of_the_daemons_is_on_their_page() -> None:
    for parser in (edgecore.main.build_parser(), cloudhub.main.build_parser()):
        text = page(parser)
        for action in parser._actions:
            for flag in action.option_strings:
                assert "\\fB" + flag.replace("-", "\\-") + "\\fR" in text, flag
    assert "\\fB\\-\\-edge\\-handshake\\-timeout\\fR \\fIEDGE_HANDSHAKE_TIMEOUT\\fR" in page(
        cloudhub.main.build_parser()
    )


def test_the_page_has_the_sections_a_reader_looks_for() -> None:
    init = cloudhub.init.build_parser()
    text = page(
        cloudhub.main.build_parser(),
        name="cloudhub",
        extra=[
            manpage.Section("cloudhub init", ("Creates the CA.",), parser=init),
            manpage.Section("Files", entries=(("/etc/edgeward/cloudhub.yaml", "config"),)),
        ],
    )
    lines = text.splitlines()
    assert lines[0] == '.TH CLOUDHUB 8 "d" "Edgeward 1.0" "Edgeward"'
    headings = [line for line in lines if line.startswith(".SH")]
    assert headings == [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH CLOUDHUB INIT",
        ".SH FILES",
    ]
    assert "cloudhub init [\\-h]" not in text  # usage is text, only option names get \-
    assert any(line.startswith("cloudhub init [-h]") for line in lines)
    assert "\\fB/etc/edgeward/cloudhub.yaml\\fR" in lines


def test_help_text_cannot_become_a_roff_request() -> None:
    parser = argparse.ArgumentParser(prog="x", description=".so /etc/passwd\n'tm hi \\n")
    parser.add_argument("--rate", help="a line\n.rm TH\n50%% of %(prog)s, default %(default)s")
    text = page(parser)
    assert "\\&.so /etc/passwd" in text and "\\&'tm hi \\en" in text
    assert "\\&.rm TH" in text
    assert "50% of x, default None" in text
    assert not any(line.startswith((".so", ".rm", "'tm")) for line in text.splitlines())


def test_the_synopsis_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = edgecore.main.build_parser()
    monkeypatch.setenv("COLUMNS", "300")
    wide = page(parser)
    monkeypatch.setenv("COLUMNS", "40")
    assert wide == page(parser)
