"""``GET /api/v1/namespaces/{ns}/devices/{name}/history?property=P[&since=T][&limit=N]``:
a property's reported values over time (cloudhub/history.py), oldest first.

``since`` is an RFC 3339 time (``2026-11-30T08:00:00Z``) or seconds since the epoch;
``limit`` (1 to 10,000, default 1,000) keeps the newest values. Who may read the device
may read its history: a viewer or an admin, or the node it is bound to.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from cloudhub import history
from cloudhub.apievents import _bad, _integer
from cloudhub.authz import check_object
from edgeward.kinds import DEVICE, TWIN_KEY, dns_label_problem

if TYPE_CHECKING:
    from cloudhub.api import Api

DEFAULT_LIMIT = 1000


def add_history_route(app: FastAPI, api: Api) -> None:
    @app.get(
        "/api/v1/namespaces/{namespace}/devices/{name}/history",
        tags=["devices"],
        summary="A device property's reported values over time",
        operation_id="read_twin_history",
    )
    async def twin_history(namespace: str, name: str, request: Request) -> Any:
        from cloudhub.api import identity_of

        for what, value in (("namespace", namespace), ("name", name)):
            if (problem := dns_label_problem(value)) is not None:
                raise _bad(f"{what} {problem}")
        query = request.query_params
        prop = query.get("property")
        if prop is None or not TWIN_KEY.fullmatch(prop):
            raise _bad("property must name a twin: 1 to 128 letters, digits and -_.,:/@#")
        since = _since(query.get("since"))
        limit = _integer(query.get("limit"), "limit", 1, history.MAX_PAGE) or DEFAULT_LIMIT
        device = await run_in_threadpool(api.store.get, DEVICE, namespace, name)  # or 404
        check_object(identity_of(request), "GET", DEVICE, device, name)
        where = history.Query(namespace, name, prop, since, limit)
        items = await run_in_threadpool(history.read, api.store.engine, where)
        return {
            "apiVersion": "v1",
            "kind": "TwinHistory",
            "device": f"{namespace}/{name}",
            "property": prop,
            "items": items,
        }


def _since(value: str | None) -> float:
    """``since`` as epoch seconds: RFC 3339 or a number; 0 when absent."""
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        return _rfc3339(value)
    if not 0 <= seconds < 1e11:  # NaN fails both
        raise _bad("since must be from 0 to 1e11 seconds since the epoch")
    return seconds


def _rfc3339(value: str) -> float:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(
            f"since must be an RFC 3339 time or seconds since the epoch, not {value[:40]!r}"
        ) from None
    if parsed.tzinfo is None:
        raise _bad("since must name its time zone (e.g. 2026-11-30T08:00:00Z)")
    return parsed.timestamp()
