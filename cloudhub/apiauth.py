"""Authentication of REST calls: bearer tokens checked once per request, before any route.

An ASGI middleware, so no route can forget it: it reads ``Authorization: Bearer
<token>``, answers 401 without one or with a token the hub does not accept,
applies the role rule that needs no object (``cloudhub/authz.py``), leaves the
identity in ``request.state.identity`` for the object rules, and writes every
write and every refused request to the audit log.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from cloudhub import console
from cloudhub.audit import AuditLog
from cloudhub.authz import ANONYMOUS, INSECURE, READS, Forbidden, check_request
from cloudhub.credentials import CACHE_SECONDS, Identity, TokenRefused
from cloudhub.status import status_body

#: Paths anyone may call: the health check and the join handshake.
PUBLIC_PATHS = frozenset({"/healthz", "/api/v1/join", "/api/v1/join/ca"})
TOKENS_PATH = "/api/v1/tokens"
MAX_CACHED = 10_000


class Authenticator:
    """Checks bearer tokens against the database, trusting an accepted one for a few seconds.

    Never past the token's expiry, and never a single-use token: a join may spend it at
    any moment, on any hub replica. A revocation through this hub drops the token at once
    (:meth:`forget`); through another replica, within ``CACHE_SECONDS``.
    """

    def __init__(
        self,
        check: Callable[[str], Identity],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self._check = check
        self._clock = clock
        self._wall_clock = wall_clock  # what token expiry times are in
        self._cache: dict[str, tuple[Identity, float]] = {}

    async def identify(self, header: str | None) -> Identity:
        if not header:
            raise TokenRefused(
                "missing",
                "this hub needs a token: send 'Authorization: Bearer <token>' "
                "(the CLI reads it from its config; see 'edgeward --help')",
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenRefused("malformed", "the Authorization header must be 'Bearer <token>'")
        token = token.strip()
        cached = self._cache.get(token)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        identity = await asyncio.to_thread(self._check, token)
        trust = self._trust_for(identity)
        if trust > 0:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[token] = (identity, now + trust)
        return identity

    def _trust_for(self, identity: Identity) -> float:
        """Seconds an accepted token may be used without asking the database again."""
        if identity.single_use:
            return 0.0
        if identity.expires is None:
            return CACHE_SECONDS
        return min(CACHE_SECONDS, identity.expires - self._wall_clock())

    def forget(self, token_id: str) -> None:
        """Drop a revoked token from the cache: it is refused from the next request on."""
        for key in [
            k for k, (ident, _) in self._cache.items() if ident.name == f"token:{token_id}"
        ]:
            del self._cache[key]


class AuthMiddleware:
    """``auth`` None: the hub runs --insecure and every caller is an admin."""

    def __init__(self, app: Any, auth: Authenticator | None, audit: AuditLog) -> None:
        self.app = app
        self.auth = auth
        self.audit = audit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        peer = (scope.get("client") or ("", 0))[0]
        identity = INSECURE if self.auth is None else ANONYMOUS
        if self.auth is not None and path not in PUBLIC_PATHS and not console.is_public(path):
            header = _header(scope, b"authorization")
            try:
                identity = await self.auth.identify(header)
                check_request(identity, method, admin_only=path.startswith(TOKENS_PATH))
            except TokenRefused as exc:
                self.audit.record(identity, method, path, 401, peer, str(exc))
                await _refuse(send, 401, "Unauthorized", str(exc), exc.reason)
                return
            except Forbidden as exc:
                self.audit.record(identity, method, path, 403, peer, str(exc))
                await _refuse(send, 403, "Forbidden", str(exc))
                return
        scope.setdefault("state", {})["identity"] = identity
        status = 0

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, tracking_send)
        if method not in READS or status in (401, 403):
            state = scope["state"]
            who = state.get("audit_identity", identity)
            self.audit.record(who, method, path, status, peer, state.get("refused"))


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def _refuse(send: Any, code: int, reason: str, message: str, cause: str = "") -> None:
    raw = json.dumps(status_body(code, reason, message, cause_reason=cause)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    if code == 401:
        headers.append((b"www-authenticate", b'Bearer realm="edgeward"'))
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": raw})
