"""``edgeward token``'s pure parts: durations, the create request, rows and ids."""

from __future__ import annotations

import argparse

import pytest

from edgeward.cli.errors import UsageError
from edgeward.cli.token import (
    HEADERS,
    describe_created,
    parse_ttl,
    token_id,
    token_request,
    token_row,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("24h", 86400),
        ("7d", 604800),
        ("2w", 1209600),
        ("3600", 3600),
        (" 1 ", 1),
        ("3650d", 315360000),
    ],
)
def test_ttl_units(text: str, seconds: int) -> None:
    """A TTL is a whole number of seconds, minutes, hours, days or weeks, or plain seconds."""
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is not a duration"),
        ("1.5h", "is not a duration"),
        ("-5m", "is not a duration"),
        ("24H", "is not a duration"),
        ("1h30m", "is not a duration"),
        ("9" * 13, "is not a duration"),
        ("0", "is out of range: from 1s to 3650d"),
        ("0s", "is out of range"),
        ("3651d", "is out of range"),
        ("999999999999w", "is out of range"),
    ],
)
def test_bad_ttls(text: str, problem: str) -> None:
    """A TTL the hub would refuse is a usage error naming what was typed."""
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_ttl(text)
    assert f'"{text}" {problem}' in str(info.value)


def args(**given: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "ttl": 86400,
        "role": None,
        "node": None,
        "single_use": None,
        "description": None,
    }
    return argparse.Namespace(**{**values, **given})


def test_create_request_sends_only_what_was_asked() -> None:
    """Unset options are left to the hub's defaults (role node; single use with a node)."""
    assert token_request(args()) == {"ttlSeconds": 86400}
    assert token_request(
        args(ttl=60, role="node", node="gw-1", single_use=False, description="press 7")
    ) == {
        "ttlSeconds": 60,
        "role": "node",
        "node": "gw-1",
        "singleUse": False,
        "description": "press 7",
    }
    assert token_request(args(role="viewer", single_use=True)) == {
        "ttlSeconds": 86400,
        "role": "viewer",
        "singleUse": True,
    }


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"role": "admin", "node": "gw-1"}, "--node binds a node token: it cannot go with --role"),
        ({"node": "GW_1"}, '--node "GW_1": '),
        ({"description": "x" * 201}, "--description: at most 200 printable characters"),
        ({"description": "two\nlines"}, "--description: at most 200"),
    ],
)
def test_create_request_mistakes(given: dict[str, object], problem: str) -> None:
    with pytest.raises(UsageError) as info:
        token_request(args(**given))
    assert problem in info.value.message


def test_rows_never_show_secrets_and_tolerate_missing_fields() -> None:
    """A row shows the listing's public fields; a field the hub left out shows <none>."""
    row = token_row(
        {
            "id": "k3x9a2",
            "role": "node",
            "node": "gw-1",
            "created": "2027-01-15T07:57:00Z",
            "expires": "2027-01-16T07:57:00Z",
            "singleUse": True,
            "state": "used",
            "createdBy": "token:abc123",
            "description": "press   7\tline",
            "token": "must-not-show",
        }
    )
    assert len(row) == len(HEADERS)
    assert row == [
        "k3x9a2",
        "node",
        "gw-1",
        "used",
        "2027-01-16T07:57:00Z",
        "single-use",
        "token:abc123",
        "press 7 line",
    ]
    assert token_row({"id": "x", "expires": None}) == [
        "x",
        "<none>",
        "<none>",
        "<none>",
        "never",
        "reusable",
        "<none>",
        "<none>",
    ]
    assert token_row("junk")[0] == "<none>"
    assert token_row({"description": "d" * 300})[-1] == "d" * 45 + "..."


def test_created_line() -> None:
    """What goes to stderr beside a new token."""
    assert describe_created(
        {"id": "k3x9a2", "role": "node", "node": "gw-1", "expires": "T", "singleUse": True}
    ) == ("created node token k3x9a2 for node gw-1: expires T, single use")
    assert describe_created({"id": "a", "role": "admin", "expires": None}) == (
        "created admin token a: expires never, reusable"
    )


def test_token_ids_from_whole_tokens() -> None:
    """delete takes an id, ``id.secret`` or the whole printed token, and uses only the id."""
    assert token_id("k3x9a2") == "k3x9a2"
    assert token_id("k3x9a2.secret") == "k3x9a2"
    assert token_id("ab" * 32 + ".k3x9a2.secret") == "k3x9a2"
    for word in ("", " ", ".", "..secret"):
        with pytest.raises(UsageError):
            token_id(word)
