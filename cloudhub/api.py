"""The hub's REST API: Kubernetes-style paths over the store.

Paths (``{plural}`` is devices or devicemodels; nodes are cluster-scoped)::

    /healthz
    /api/v1/nodes[/{name}]
    /api/v1/namespaces/{namespace}/{plural}[/{name}]
    /api/v1/{plural}                         every namespace

GET lists or reads (``?watch=1&resourceVersion=N`` streams newline-delimited
JSON events instead), POST creates, PUT replaces, PATCH applies a JSON merge
patch, DELETE deletes. A write carrying a stale ``metadata.resourceVersion``
gets 409. Every error is a Kubernetes ``Status`` object with the HTTP code.

Every write, a merge patch's read included, is one write transaction: the
revision lock serialises writers, so a patch cannot lose a concurrent update
and needs no retry. Given the hub's group writer, concurrent writes share its
commits (one disk sync for many requests, no queueing on the database's write
lock); either way a write is answered only once it is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import edgeward
from cloudhub.apiauth import PUBLIC_PATHS, Authenticator, AuthMiddleware
from cloudhub.audit import AuditLog
from cloudhub.authz import INSECURE, Forbidden, check_collection, check_object
from cloudhub.changefeed import ChangeFeed
from cloudhub.credentials import Identity
from cloudhub.groupwriter import GroupWriter
from cloudhub.mergepatch import merge_patch
from cloudhub.metrics import HubMetrics, MetricsMiddleware
from cloudhub.status import status_body
from cloudhub.store import CHANGED_BY, Store, Tx
from cloudhub.watch import WatchResponse, WatchSlots, watch_events
from edgeward import storable
from edgeward.errors import (
    AlreadyExists,
    Conflict,
    EdgewardError,
    FieldCause,
    InvalidObject,
    NotFound,
)
from edgeward.kinds import KINDS, NODE, Kind, normalize

if TYPE_CHECKING:
    from cloudhub.joining import JoinService

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_WATCHES = 1000

T = TypeVar("T")


class ApiError(EdgewardError):
    """An HTTP error with a Kubernetes reason (BadRequest, Gone, …)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(message)


def _error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, InvalidObject):
        code, reason, causes = 422, "Invalid", exc.causes
    elif isinstance(exc, NotFound):
        code, reason, causes = 404, "NotFound", None
    elif isinstance(exc, AlreadyExists):
        code, reason, causes = 409, "AlreadyExists", None
    elif isinstance(exc, Conflict):
        code, reason, causes = 409, "Conflict", None
    elif isinstance(exc, ApiError):
        code, reason, causes = exc.code, exc.reason, None
    elif isinstance(exc, Forbidden):
        code, reason, causes = 403, "Forbidden", None
    else:
        code, reason, causes = 500, "InternalError", None
    return JSONResponse(status_body(code, reason, str(exc), causes), status_code=code)


async def read_json(request: Request) -> Any:
    """The request body as JSON, refusing oversized, non-JSON and hostile bodies."""
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(
                413, "RequestEntityTooLarge", f"request body exceeds {MAX_BODY_BYTES} bytes"
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "BadRequest", "request body is empty; send a JSON object")
    try:
        return storable.loads(raw)
    except storable.Unstorable as exc:
        raise ApiError(400, "BadRequest", f"request body: {exc}") from None


def _rv_from_body(obj: Any) -> int | None:
    """The resourceVersion precondition a written object carries, if any."""
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        return None
    rv = obj["metadata"].get("resourceVersion")
    if rv in (None, ""):
        return None
    return _parse_rv(rv, "metadata.resourceVersion", body=True)


def _parse_rv(rv: Any, where: str, body: bool = False) -> int:
    """A resourceVersion: a revision, so a non-negative int64 (as a string or a number)."""
    value = None
    if isinstance(rv, int) and not isinstance(rv, bool):
        value = rv
    elif isinstance(rv, str) and rv.isascii() and rv.isdigit():
        digits = rv.lstrip("0") or "0"
        value = int(digits) if len(digits) <= 19 else storable.INT64_MAX + 1  # no huge int()
    if value is not None and 0 <= value <= storable.INT64_MAX:
        return value
    message = "must be a non-negative integer (as a string)"
    if value is not None and value > 0:
        message = f"is out of range: a resourceVersion is at most {storable.INT64_MAX}"
    if body:
        raise InvalidObject("object", "", [FieldCause(where, message)])
    raise ApiError(400, "BadRequest", f"{where} {message}")


def identity_of(request: Request) -> Identity:
    return getattr(request.state, "identity", INSECURE)


def _changed_by(identity: Identity) -> str | None:
    """Who is writing, and when, for the CHANGED_BY annotation (nobody is known --insecure)."""
    return None if identity is INSECURE else f"{identity} at {_now_rfc3339()}"


def _stamp(obj: dict[str, Any], identity: Identity) -> dict[str, Any]:
    """A created object records who created it."""
    changed_by = _changed_by(identity)
    if changed_by is not None:
        meta = obj["metadata"]
        meta["annotations"] = {**(meta.get("annotations") or {}), CHANGED_BY: changed_by}
    return obj


def _now_rfc3339() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _is_watch(request: Request) -> bool:
    return request.query_params.get("watch", "").lower() in ("1", "true", "yes")


class Api:
    """Endpoint implementations, one instance per app."""

    def __init__(
        self,
        store: Store,
        feed: ChangeFeed | None,
        writer: GroupWriter | None = None,
        max_watches: int = DEFAULT_MAX_WATCHES,
        on_node_deleted: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.feed = feed
        self.writer = writer
        self.watches = WatchSlots(max_watches)
        self.on_node_deleted = on_node_deleted

    async def _write(self, job: Callable[[Tx], T]) -> T:
        """``job(tx)`` in one write transaction; its result once committed."""
        if self.writer is not None:
            return await self.writer.submit(job)
        return await run_in_threadpool(self._write_alone, job)

    def _write_alone(self, job: Callable[[Tx], T]) -> T:
        with self.store.writing() as tx:
            return job(tx)

    # -- reads ----------------------------------------------------------------
    # Objects are served as the JSON text they are stored as (cloudhub/store.py says why).

    async def list(self, kind: Kind, namespace: str | None, request: Request) -> Any:
        check_collection(identity_of(request), "GET", kind)
        if _is_watch(request):
            return await self.watch(kind, namespace, None, request)
        texts, head = await run_in_threadpool(self.store.list_texts, kind, namespace)
        head_part = storable.dumps(
            {
                "apiVersion": kind.api_version,
                "kind": f"{kind.name}List",
                "metadata": {"resourceVersion": str(head)},
            }
        )
        body = f'{head_part[:-1]},"items":[{",".join(texts)}]}}'.encode()
        del texts
        return Response(body, media_type="application/json")

    async def get(self, kind: Kind, namespace: str | None, name: str, request: Request) -> Any:
        identity = identity_of(request)
        if identity.role == "node":
            if _is_watch(request):
                check_collection(identity, "GET", kind)
            current = await run_in_threadpool(self.store.get, kind, namespace, name)
            check_object(identity, "GET", kind, current, name)
        if _is_watch(request):
            return await self.watch(kind, namespace, name, request)
        text = await run_in_threadpool(self.store.get_text, kind, namespace, name)
        return Response(text.encode(), media_type="application/json")

    async def watch(
        self, kind: Kind, namespace: str | None, name: str | None, request: Request
    ) -> Response:
        if self.feed is None:
            raise ApiError(501, "NotImplemented", "this hub serves no watches")
        raw_rv = request.query_params.get("resourceVersion")
        since = None if raw_rv in (None, "", "0") else _parse_rv(raw_rv, "resourceVersion")
        if since is not None:
            compacted, head = await run_in_threadpool(self.store.log_bounds)
            if since < compacted:
                raise ApiError(
                    410,
                    "Gone",
                    f"resourceVersion {since} is older than the change log "
                    f"(which starts after {compacted}); list again and watch from its revision",
                )
            if since > head:
                # Kubernetes answers 504 with cause ResourceVersionTooLarge: its watch cache
                # may lag etcd, so waiting helps there. Our watches read the database every
                # write commits to before it is answered, so no revision a client got from
                # this hub is ever ahead: the database was restored from a backup, or the
                # number came from another hub. Waiting never helps; 410 makes every client
                # (client-go, `edgeward get -w`) list again, as an edge ahead of the hub
                # gets a snapshot.
                raise ApiError(
                    410,
                    "Gone",
                    f"resourceVersion {since} is ahead of this hub's newest revision {head} "
                    "(was the database restored, or is it from another hub?); "
                    "list again and watch from its revision",
                )
        if (refused := self.take_watch_slot()) is not None:
            return refused
        events = watch_events(self.store, self.feed, kind, namespace, name, since)
        return WatchResponse(events, on_close=self.watches.release)

    def take_watch_slot(self) -> JSONResponse | None:
        """Take one of the max_watches slots (release it when the watch ends); the 429
        answer when every slot is taken."""
        if self.watches.acquire():
            return None
        message = (
            f"too many watches: this hub serves at most {self.watches.limit} at once "
            "(cloudhub setting max_watches); try again later"
        )
        return JSONResponse(
            status_body(429, "TooManyRequests", message),
            status_code=429,
            headers={"Retry-After": "1"},
        )

    # -- writes ---------------------------------------------------------------

    async def create(self, kind: Kind, namespace: str | None, request: Request) -> JSONResponse:
        identity = identity_of(request)
        check_collection(identity, "POST", kind)
        body = await read_json(request)
        obj = _stamp(normalize(kind, body, namespace), identity)
        created = await self._write(lambda tx: tx.create(kind, obj))
        return JSONResponse(created, status_code=201)

    async def replace(self, kind: Kind, namespace: str | None, name: str, request: Request) -> Any:
        identity = identity_of(request)
        body = await read_json(request)
        expected = _rv_from_body(body)
        obj = normalize(kind, body, namespace)
        _same_name(kind, obj, name)

        def replace(tx: Tx) -> dict[str, Any]:
            if identity.role == "node":
                check_object(identity, "PUT", kind, tx.get(kind, namespace, name), name, obj)
            return tx.replace(kind, obj, expected, _changed_by(identity))

        return JSONResponse(await self._write(replace))

    async def patch(self, kind: Kind, namespace: str | None, name: str, request: Request) -> Any:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("", "application/json", "application/merge-patch+json"):
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"PATCH takes application/merge-patch+json, not {ctype}",
            )
        patch = await read_json(request)
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        expected = _rv_from_body(patch)
        identity = identity_of(request)

        def apply(tx: Tx) -> dict[str, Any]:
            # read and write in one transaction: nothing can be written in between
            current = tx.get(kind, namespace, name)
            if current is None:
                raise NotFound(kind.name, (namespace or "") if kind.namespaced else "", name)
            merged = merge_patch({k: v for k, v in current.items() if k != "status"}, patch)
            obj = normalize(kind, merged, namespace)
            _same_name(kind, obj, name)
            check_object(identity, "PATCH", kind, current, name, obj)
            return tx.replace(kind, obj, expected, _changed_by(identity))

        return JSONResponse(await self._write(apply))

    async def delete(self, kind: Kind, namespace: str | None, name: str, request: Request) -> Any:
        check_object(identity_of(request), "DELETE", kind, None, name)
        raw_rv = request.query_params.get("resourceVersion")
        expected = None if raw_rv in (None, "") else _parse_rv(raw_rv, "resourceVersion")
        deleted = await self._write(lambda tx: tx.delete(kind, namespace, name, expected))
        if kind is NODE and self.on_node_deleted is not None:
            self.on_node_deleted(name)  # committed: its positions are gone, end its session
        return JSONResponse(deleted)


def _same_name(kind: Kind, obj: dict[str, Any], name: str) -> None:
    if obj["metadata"]["name"] != name:
        raise InvalidObject(
            kind.name,
            obj["metadata"]["name"],
            [FieldCause("metadata.name", f'must match the name in the URL ("{name}")')],
        )


def create_app(
    store: Store,
    feed: ChangeFeed | None = None,
    writer: GroupWriter | None = None,
    max_watches: int = DEFAULT_MAX_WATCHES,
    on_node_deleted: Callable[[str], None] | None = None,
    auth: Authenticator | None = None,
    join: JoinService | None = None,
    audit: AuditLog | None = None,
    edge_stats: Callable[[], dict[str, int]] | None = None,
    replica_stats: Callable[[], dict[str, Any]] | None = None,
    on_resync: Callable[[str], tuple[bool, bool]] | None = None,
    metrics: HubMetrics | None = None,
) -> FastAPI:
    """The REST API app over ``store``; ``feed`` serves watches, at most ``max_watches``
    at once. Writes go through ``writer`` (group commit) when given, else each in a
    transaction of its own. ``on_node_deleted(name)`` is called once a Node's deletion
    has committed. Without ``auth`` every caller is an admin (a hub run --insecure);
    ``join`` serves node joins and the token API. ``replica_stats()`` says which hub
    replica answers and whether it leads (/healthz ``replica``). ``edge_stats()`` gives the edge
    port's counters, shown by /healthz under ``edge``. ``on_resync(name)`` records an
    operator's resync of a node: (whether the hub knows the node, whether it is connected
    here). ``metrics`` are served at /metrics (to admins and viewers) and count requests."""
    app = FastAPI(
        title="Edgeward cloudhub",
        version=edgeward.__version__,
        description="The fleet's desired state: nodes, devices and device models.",
        docs_url=None,  # served from the package's own files (cloudhub/console), not a CDN
        redoc_url=None,
    )
    api = Api(store, feed, writer, max_watches, on_node_deleted)

    @app.exception_handler(EdgewardError)
    async def _on_error(_request: Request, exc: EdgewardError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(Forbidden)
    async def _on_forbidden(request: Request, exc: Forbidden) -> JSONResponse:
        request.state.refused = str(exc)  # the audit log says why
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "BadRequest")
        message = "no such path" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(
            status_body(exc.status_code, reason, message), status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def _on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        causes = [
            FieldCause(".".join(str(p) for p in e.get("loc", ())), e.get("msg", "invalid"))
            for e in exc.errors()
        ]
        return JSONResponse(status_body(422, "Invalid", "invalid request", causes), status_code=422)

    @app.exception_handler(Exception)
    async def _on_crash(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error serving a request")
        return JSONResponse(
            status_body(500, "InternalError", "internal error; see the hub log"), 500
        )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        head = await run_in_threadpool(store.head)
        watches = api.watches
        health: dict[str, Any] = {
            "status": "ok",
            "revision": head,
            "version": edgeward.__version__,
            "watches": {"open": watches.open, "max": watches.limit, "refused": watches.refused},
        }
        if replica_stats is not None:
            health["replica"] = replica_stats()
        if edge_stats is not None:
            # sessions open now; connections refused (certificate or hello), and cut off
            # for not finishing the TLS handshake or websocket upgrade, or not saying
            # hello, within 10 s: counted since the hub started
            health["edge"] = edge_stats()
        return health

    for kind in KINDS:
        _add_kind_routes(app, api, kind)
    from cloudhub.apievents import add_event_routes

    add_event_routes(app, api)
    from cloudhub.apihistory import add_history_route

    add_history_route(app, api)
    if on_resync is not None:
        _add_resync_route(app, store, on_resync)
    if join is not None:
        from cloudhub.apisecurity import add_security_routes

        add_security_routes(app, store, join, auth)
    if metrics is not None:
        _add_metrics_route(app, metrics)
    from cloudhub.console import add_console_routes

    add_console_routes(app)
    _declare_bearer_tokens(app)
    app.add_middleware(AuthMiddleware, auth=auth, audit=audit or AuditLog(None))
    if metrics is not None:  # outside authentication, so its refusals are counted too
        app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _declare_bearer_tokens(app: FastAPI) -> None:
    """Say in the OpenAPI document that calls take a bearer token (the middleware checks
    it), so /docs has an Authorize button and generated clients send the header."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        doc = make()  # built once and cached by FastAPI: the keys below are set once
        doc.setdefault("components", {}).setdefault(
            "securitySchemes",
            {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from 'edgeward token create' (docs/security.md)",
                }
            },
        )
        doc.setdefault("security", [{"bearer": []}])
        for path in PUBLIC_PATHS:  # answered without a token
            for operation in doc.get("paths", {}).get(path, {}).values():
                operation["security"] = []
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _add_metrics_route(app: FastAPI, metrics: HubMetrics) -> None:
    @app.get("/metrics", tags=["health"], response_class=Response)
    async def prometheus_metrics(request: Request) -> Response:
        """The hub's metrics in Prometheus' text format (docs/metrics.md)."""
        identity = identity_of(request)
        if identity.role == "node":
            raise Forbidden(f"{identity} may not read the fleet's metrics: they need a viewer")
        body, content_type = await run_in_threadpool(
            metrics.render, request.headers.get("accept", "")
        )
        return Response(body, headers={"Content-Type": content_type})


def _add_resync_route(
    app: FastAPI, store: Store, on_resync: Callable[[str], tuple[bool, bool]]
) -> None:
    @app.post(
        "/api/v1/nodes/{name}/resync",
        tags=["nodes"],
        status_code=202,
        summary="Make a node take a full snapshot of its desired state",
        operation_id="resync_node",
    )
    async def resync(name: str, request: Request) -> Any:
        identity = identity_of(request)
        if identity.role == "node" and identity.node != name:
            raise Forbidden(f"{identity} may resync its own node only")
        await run_in_threadpool(store.get, NODE, None, name)  # NotFound: 404
        known, connected = await run_in_threadpool(on_resync, name)
        if connected:
            message = f"node {name} is reconnecting and takes a snapshot now"
        elif known:
            message = f"node {name} is not connected here: it takes a snapshot when it connects"
        else:
            message = f"node {name} has never connected: it takes a snapshot when it does"
        return status_body(202, "Accepted", message) | {"status": "Success"}


def _add_kind_routes(app: FastAPI, api: Api, kind: Kind) -> None:
    p = kind.plural
    tags = [p]
    if kind.namespaced:
        coll = f"/api/v1/namespaces/{{namespace}}/{p}"

        async def list_ns(namespace: str, request: Request) -> Any:
            return await api.list(kind, namespace, request)

        async def list_all(request: Request) -> Any:
            return await api.list(kind, None, request)

        async def create(namespace: str, request: Request) -> Any:
            return await api.create(kind, namespace, request)

        async def get(namespace: str, name: str, request: Request) -> Any:
            return await api.get(kind, namespace, name, request)

        async def replace(namespace: str, name: str, request: Request) -> Any:
            return await api.replace(kind, namespace, name, request)

        async def patch(namespace: str, name: str, request: Request) -> Any:
            return await api.patch(kind, namespace, name, request)

        async def delete(namespace: str, name: str, request: Request) -> Any:
            return await api.delete(kind, namespace, name, request)

        app.add_api_route(
            f"/api/v1/{p}",
            list_all,
            methods=["GET"],
            tags=tags,
            summary=f"List or watch {p} in every namespace",
            operation_id=f"list_{p}_all_namespaces",
        )
    else:
        coll = f"/api/v1/{p}"

        async def list_ns(request: Request) -> Any:  # type: ignore[misc]
            return await api.list(kind, None, request)

        async def create(request: Request) -> Any:  # type: ignore[misc]
            return await api.create(kind, None, request)

        async def get(name: str, request: Request) -> Any:  # type: ignore[misc]
            return await api.get(kind, None, name, request)

        async def replace(name: str, request: Request) -> Any:  # type: ignore[misc]
            return await api.replace(kind, None, name, request)

        async def patch(name: str, request: Request) -> Any:  # type: ignore[misc]
            return await api.patch(kind, None, name, request)

        async def delete(name: str, request: Request) -> Any:  # type: ignore[misc]
            return await api.delete(kind, None, name, request)

    item = f"{coll}/{{name}}"
    app.add_api_route(
        coll,
        list_ns,
        methods=["GET"],
        tags=tags,
        summary=f"List or watch {p}",
        operation_id=f"list_{p}",
    )
    app.add_api_route(
        coll,
        create,
        methods=["POST"],
        tags=tags,
        status_code=201,
        summary=f"Create a {kind.name}",
        operation_id=f"create_{p}",
    )
    app.add_api_route(
        item,
        get,
        methods=["GET"],
        tags=tags,
        summary=f"Read or watch a {kind.name}",
        operation_id=f"read_{p}",
    )
    app.add_api_route(
        item,
        replace,
        methods=["PUT"],
        tags=tags,
        summary=f"Replace a {kind.name}",
        operation_id=f"replace_{p}",
    )
    app.add_api_route(
        item,
        patch,
        methods=["PATCH"],
        tags=tags,
        summary=f"Merge-patch a {kind.name}",
        operation_id=f"patch_{p}",
    )
    app.add_api_route(
        item,
        delete,
        methods=["DELETE"],
        tags=tags,
        summary=f"Delete a {kind.name}",
        operation_id=f"delete_{p}",
    )
