"""The REST routes of node join and token management (admins only; the middleware checks).

GET    /api/v1/join/ca         the CA certificate (PEM), for a gateway to pin-check
POST   /api/v1/join            {token, node, csr} -> {certificate, ca, edgeEndpoints}
GET    /api/v1/tokens          every token, never a secret
POST   /api/v1/tokens          {role, ttlSeconds, node, singleUse, description} -> {token}
DELETE /api/v1/tokens/{id}     revoke
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cloudhub import credentials
from cloudhub.apiauth import Authenticator
from cloudhub.joining import JoinRefused, JoinService
from cloudhub.status import status_body
from cloudhub.store import Store
from edgeward.kinds import dns_subdomain_problem

MAX_TTL_SECONDS = 10 * 365 * 86400


def add_security_routes(
    app: FastAPI, store: Store, join: JoinService, auth: Authenticator | None
) -> None:
    from cloudhub.api import ApiError, identity_of, read_json

    @app.get("/api/v1/join/ca", tags=["join"], summary="The hub's CA certificate (PEM)")
    async def join_ca() -> Response:
        return Response(join.authority.ca_pem, media_type="application/x-pem-file")

    @app.post("/api/v1/join", tags=["join"], summary="Join a node: a token and a CSR in")
    async def join_node(request: Request) -> Any:
        body = await read_json(request)
        token, node, csr = (_text_field(body, f) for f in ("token", "node", "csr"))
        host = request.headers.get("host", "")
        try:
            answer = await run_in_threadpool(join.join, token, node, csr, host)
        except JoinRefused as exc:
            request.state.refused = str(exc)
            reason = {401: "Unauthorized", 403: "Forbidden", 409: "Conflict"}.get(
                exc.code, "BadRequest" if exc.code == 400 else "Invalid"
            )
            body = status_body(exc.code, reason, str(exc), cause_reason=exc.reason)
            return JSONResponse(body, status_code=exc.code)
        request.state.audit_identity = answer.pop("identity")  # the token, and the node joined
        return JSONResponse(answer, status_code=201)

    def _text_field(body: Any, field: str) -> str:
        if not isinstance(body, dict) or not isinstance(body.get(field), str) or not body[field]:
            raise ApiError(400, "BadRequest", f'the join request needs "{field}" (a string)')
        if len(body[field]) > 16384:
            raise ApiError(400, "BadRequest", f'"{field}" is too long')
        return body[field]

    @app.get("/api/v1/tokens", tags=["tokens"], summary="List tokens (never their secrets)")
    async def list_tokens() -> Any:
        def read() -> list[dict[str, Any]]:
            with store.reading() as conn:
                return credentials.list_tokens(conn)

        return {"kind": "TokenList", "items": await run_in_threadpool(read)}

    @app.post("/api/v1/tokens", tags=["tokens"], status_code=201, summary="Create a token")
    async def create_token(request: Request) -> Any:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "a token request must be a JSON object")
        role = body.get("role", "node")
        if role not in credentials.ROLES:
            raise ApiError(422, "Invalid", f"role must be one of {', '.join(credentials.ROLES)}")
        ttl = body.get("ttlSeconds", 86400)
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, int | float)
            or not math.isfinite(ttl)
            or not 0 < ttl <= MAX_TTL_SECONDS
        ):
            raise ApiError(
                422, "Invalid", f"ttlSeconds must be a number of seconds, 1 to {MAX_TTL_SECONDS}"
            )
        node = body.get("node")
        if node is not None:
            if not isinstance(node, str) or dns_subdomain_problem(node) is not None:
                raise ApiError(422, "Invalid", "node must be a node name (a DNS-1123 subdomain)")
            if role != "node":
                raise ApiError(422, "Invalid", "only a node token can be bound to a node")
        single = body.get("singleUse", node is not None)
        description = body.get("description", "")
        if not isinstance(single, bool) or not isinstance(description, str):
            raise ApiError(422, "Invalid", "singleUse is a boolean and description a string")
        if len(description) > 200 or not description.isprintable():
            raise ApiError(422, "Invalid", "description: at most 200 printable characters")
        who = str(identity_of(request))

        def write() -> tuple[str, dict[str, Any]]:
            with store.writing() as tx:
                return credentials.create_token(
                    tx.conn,
                    role,
                    ttl=float(ttl),
                    node=node,
                    single_use=single,
                    created_by=who,
                    description=description,
                )

        secret, row = await run_in_threadpool(write)
        return JSONResponse({**row, "token": f"{join.authority.ca_hash}.{secret}"}, status_code=201)

    @app.delete("/api/v1/tokens/{token_id}", tags=["tokens"], summary="Revoke a token")
    async def delete_token(token_id: str) -> Any:
        def write() -> bool:
            with store.writing() as tx:
                return credentials.revoke_token(tx.conn, token_id)

        if not await run_in_threadpool(write):
            raise ApiError(404, "NotFound", f"no token {token_id}")
        if auth is not None:
            auth.forget(token_id)
        return {"kind": "Status", "status": "Success", "message": f"token {token_id} revoked"}
