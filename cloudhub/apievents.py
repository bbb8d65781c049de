"""``/api/v1/events``: apps' uploads the hub keeps (cloudhub/events.py), listed or watched.

    GET /api/v1/events?node=N&device=D&limit=100          the newest, oldest first
    GET /api/v1/events?after=ID&limit=100                 those after an id, oldest first
    GET /api/v1/events?watch=1[&after=ID]                 each new one as it is stored

A watch streams ``{"type": "ADDED", "object": <event>}`` lines (as the object watches do),
from ``after`` or from the newest event when none is given; it reads the table every half
second, so an upload appears within about that once it is stored. A node token reads its
own node's events only; a viewer reads all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from cloudhub import events
from cloudhub.authz import Forbidden
from cloudhub.watch import WatchResponse

if TYPE_CHECKING:
    from cloudhub.api import Api


def _bad(message: str) -> Exception:
    from cloudhub.api import ApiError

    return ApiError(400, "BadRequest", message)


POLL_SECONDS = 0.5
DEFAULT_LIMIT = 100


def add_event_routes(app: FastAPI, api: Api) -> None:
    @app.get(
        "/api/v1/events",
        tags=["events"],
        summary="List or watch apps' uploads",
        operation_id="list_events",
    )
    async def list_events(request: Request) -> Any:
        from cloudhub.api import identity_of

        query = request.query_params
        where = events.EventFilter(
            node=_name(query.get("node"), "node", 253),
            device=_name(query.get("device"), "device", 512),
        )
        identity = identity_of(request)
        if identity.role == "node" and where.node != identity.node:
            raise Forbidden(
                f"{identity} may read its own node's events only: add ?node={identity.node}"
            )
        after = _integer(query.get("after"), "after", 0, 2**63 - 1)
        limit = _integer(query.get("limit"), "limit", 1, events.MAX_PAGE) or DEFAULT_LIMIT
        engine = api.store.engine
        if query.get("watch") in ("1", "true"):
            start = after if after is not None else await run_in_threadpool(events.head, engine)
            if (refused := api.take_watch_slot()) is not None:
                return refused
            return WatchResponse(_watch(engine, where, start), on_close=api.watches.release)
        if after is None:
            items = await run_in_threadpool(events.newest, engine, where, limit)
        else:
            items = await run_in_threadpool(events.read, engine, where, after, limit)
        last = items[-1]["id"] if items else (after or 0)
        return {
            "apiVersion": "v1",
            "kind": "EventList",
            "metadata": {"last": last},
            "items": items,
        }


async def _watch(engine: Any, where: events.EventFilter, after: int) -> AsyncIterator[bytes]:
    while True:
        batch = await run_in_threadpool(events.read, engine, where, after, events.MAX_PAGE)
        for item in batch:
            after = item["id"]
            yield (json.dumps({"type": "ADDED", "object": item}) + "\n").encode()
        if len(batch) < events.MAX_PAGE:
            await asyncio.sleep(POLL_SECONDS)


def _name(value: str | None, what: str, max_chars: int) -> str | None:
    if value is None:
        return None
    if not value or len(value) > max_chars or any(ord(c) < 32 for c in value):
        raise _bad(f"{what} must be 1 to {max_chars} printable characters")
    return value


def _integer(value: str | None, what: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise _bad(f"{what} must be an integer, not {value[:40]!r}") from None
    if not low <= number <= high:
        raise _bad(f"{what} must be from {low} to {high}")
    return number
