"""The Kubernetes ``Status`` body every refusal of the hub's REST API is answered with."""

from __future__ import annotations

from typing import Any

from edgeward.errors import FieldCause


def status_body(
    code: int,
    reason: str,
    message: str,
    causes: list[FieldCause] | None = None,
    cause_reason: str = "",
) -> dict[str, Any]:
    """A failure Status; ``causes`` name fields, ``cause_reason`` says which check refused
    (a token's "expired", a join's "node-live"), for clients that branch on it."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if causes:
        body["details"] = {"causes": [{"field": c.field, "message": c.message} for c in causes]}
    elif cause_reason:
        body["details"] = {"causes": [{"reason": cause_reason}]}
    return body
