"""Tokens and node certificates as the hub records them: every credential decision is here.

A token is ``<id>.<secret>``: the id is public (lists and the audit log show it),
the secret is 128 bits from ``secrets`` and only its SHA-256 is stored (a random
secret needs no slow hash). What ``edgeward token create`` prints prefixes the
CA's SHA-256, ``<ca sha256>.<id>.<secret>``, so a gateway joining with it can
check the hub before sending anything; as a bearer token, either form works.

Node certificates are recorded by serial when signed. The edge endpoint accepts
only recorded, unrevoked, unexpired serials, so deleting a Node (which revokes
its serials) locks its certificates out although the CA signed them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, insert, select, update

from cloudhub.schema import node_certs, tokens

ROLES = ("admin", "viewer", "node")
ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 6
SECRET_LENGTH = 26  # 26 characters of 36: 134 bits
_TOKEN = re.compile(r"^(?:([0-9a-f]{64})\.)?([a-z0-9]{6})\.([a-z0-9]{26})$")
#: How long an accepted bearer token is trusted without reading the database again.
CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Identity:
    """Who is behind a request: a token (by id) or a node certificate."""

    name: str  # "token:<id>", or "certificate:<serial>" for a node certificate
    role: str
    node: str | None = None  # the node a node credential is bound to
    #: When a token stops being valid (epoch seconds; None: never), and whether one join
    #: spends it: what bounds how long the API may trust it without asking the database.
    expires: float | None = field(default=None, compare=False)
    single_use: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        return self.name if self.node is None else f"{self.name} (node {self.node})"


class TokenRefused(Exception):
    """A token that cannot be used; ``reason`` is one of unknown, expired, revoked, used,
    malformed, and the message says which and what to do."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class ParsedToken:
    ca_hash: str | None
    id: str
    secret: str


def parse_token(text: str) -> ParsedToken:
    match = _TOKEN.match(text.strip())
    if match is None:
        raise TokenRefused(
            "malformed",
            "the token is not an Edgeward token (<ca sha256>.<id>.<secret> or <id>.<secret>)",
        )
    return ParsedToken(match.group(1), match.group(2), match.group(3))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _random(length: int) -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def create_token(
    conn: Connection,
    role: str,
    *,
    ttl: float | None,
    node: str | None = None,
    single_use: bool = False,
    created_by: str = "",
    description: str = "",
    now: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """A new token's ``<id>.<secret>`` and its listing row; ttl None never expires."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    now = time.time() if now is None else now
    token_id, secret = _random(ID_LENGTH), _random(SECRET_LENGTH)
    row = {
        "id": token_id,
        "secret_sha256": _digest(secret),
        "role": role,
        "node": node,
        "created": now,
        "expires": None if ttl is None else now + ttl,
        "single_use": single_use,
        "used": None,
        "revoked": None,
        "created_by": created_by,
        "description": description,
    }
    conn.execute(insert(tokens).values(**row))
    return f"{token_id}.{secret}", _public(row)


def list_tokens(conn: Connection, now: float | None = None) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    rows = conn.execute(select(tokens).order_by(tokens.c.created)).mappings().all()
    return [_public(dict(row), now) for row in rows]


def revoke_token(conn: Connection, token_id: str, now: float | None = None) -> bool:
    """Revoke ``token_id``; False when there is no such token."""
    now = time.time() if now is None else now
    result = conn.execute(
        update(tokens)
        .where(tokens.c.id == token_id, tokens.c.revoked.is_(None))
        .values(revoked=now)
    )
    if result.rowcount:
        return True
    return conn.execute(select(tokens.c.id).where(tokens.c.id == token_id)).first() is not None


def check_token(conn: Connection, text: str, now: float | None = None) -> Identity:
    """The identity behind a token; TokenRefused saying why it cannot be used."""
    parsed = parse_token(text)
    now = time.time() if now is None else now
    row = conn.execute(select(tokens).where(tokens.c.id == parsed.id)).mappings().first()
    if row is None or not hmac.compare_digest(row["secret_sha256"], _digest(parsed.secret)):
        raise TokenRefused("unknown", f"token {parsed.id} is not known to this hub")
    if row["revoked"] is not None:
        raise TokenRefused("revoked", f"token {parsed.id} was revoked")
    if row["expires"] is not None and row["expires"] <= now:
        raise TokenRefused("expired", f"token {parsed.id} expired at {_utc(row['expires'])}")
    if row["single_use"] and row["used"] is not None:
        raise TokenRefused(
            "used", f"token {parsed.id} was for one join and was used at {_utc(row['used'])}"
        )
    return Identity(
        f"token:{row['id']}",
        row["role"],
        row["node"],
        expires=row["expires"],
        single_use=bool(row["single_use"]),
    )


def consume(conn: Connection, token_id: str, now: float | None = None) -> bool:
    """Mark a single-use token used; False when another join used it first."""
    now = time.time() if now is None else now
    result = conn.execute(
        update(tokens)
        .where(tokens.c.id == token_id, tokens.c.single_use.is_(True), tokens.c.used.is_(None))
        .values(used=now)
    )
    return bool(result.rowcount)


def is_single_use(conn: Connection, token_id: str) -> bool:
    return bool(conn.execute(select(tokens.c.single_use).where(tokens.c.id == token_id)).scalar())


def record_certificate(conn: Connection, serial: str, node: str, not_after: float) -> None:
    conn.execute(
        insert(node_certs).values(serial=serial, node=node, not_after=not_after, revoked=False)
    )


def certificate_refusal(
    conn: Connection, serial: str, node: str, now: float | None = None
) -> str | None:
    """Why the node certificate ``serial`` may not connect, or None when it may."""
    now = time.time() if now is None else now
    row = conn.execute(select(node_certs).where(node_certs.c.serial == serial)).mappings().first()
    if row is None or row["node"] != node:
        return f"certificate {serial} was not issued by this hub for node {node}"
    if row["revoked"]:
        return f"certificate {serial} of node {node} was revoked (its Node was deleted); join again"
    if row["not_after"] <= now:
        return f"certificate {serial} of node {node} expired; join again with a new token"
    return None


def revoke_node(conn: Connection, node: str) -> int:
    """Revoke every certificate of ``node``; how many were valid."""
    result = conn.execute(
        update(node_certs)
        .where(node_certs.c.node == node, node_certs.c.revoked.is_(False))
        .values(revoked=True)
    )
    return result.rowcount


def has_live_certificate(conn: Connection, node: str, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return (
        conn.execute(
            select(node_certs.c.serial).where(
                node_certs.c.node == node,
                node_certs.c.revoked.is_(False),
                node_certs.c.not_after > now,
            )
        ).first()
        is not None
    )


def _public(row: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    if row["revoked"] is not None:
        state = "revoked"
    elif row["expires"] is not None and row["expires"] <= now:
        state = "expired"
    elif row["single_use"] and row["used"] is not None:
        state = "used"
    else:
        state = "valid"
    return {
        "id": row["id"],
        "role": row["role"],
        "node": row["node"],
        "created": _utc(row["created"]),
        "expires": None if row["expires"] is None else _utc(row["expires"]),
        "singleUse": bool(row["single_use"]),
        "state": state,
        "createdBy": row["created_by"],
        "description": row["description"],
    }


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
