"""The web console and the browsable API docs: pages the hub serves beside its API.

The hub renders each page's frame (title, navigation, which node or device it is
about); the page's script fills it from the REST API with the token the browser
holds in its session storage, and keeps it live from the watch API. So a page
carries no fleet data of its own and needs no token to be served, the token is
sent only as an ``Authorization`` header (never a cookie: no cross-site request
can use it), and the console sees exactly what its token may see.

Every asset is a file of this package: no CDN, no build step (docs/console.md).
"""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

import edgeward

STATIC_DIR = Path(__file__).parent / "static"
#: URL prefix of the console's pages and files; with ``/`` and the docs, what is served
#: without a token (cloudhub/apiauth.py).
PREFIX = "/ui/"
DOCS_PATHS = frozenset({"/docs", "/openapi.json"})

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
#: Swagger UI sets inline styles on its elements.
_DOCS_CSP = _CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def is_public(path: str) -> bool:
    """Console pages and files, and the API docs: frames and code, never fleet data."""
    return path == "/" or path.startswith(PREFIX) or path in DOCS_PATHS


class StaticFiles:
    """The package's static files, read once: a fixed set, so no path from a URL reaches
    the file system."""

    def __init__(self, root: Path) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted(root.rglob("*")):
            kind = _TYPES.get(path.suffix)
            if path.is_file() and kind is not None:
                body = path.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                self.files[path.relative_to(root).as_posix()] = (body, kind, etag)

    def response(self, name: str, request: Request) -> Response:
        found = self.files.get(name)
        if found is None:
            return _not_found()
        body, kind, etag = found
        headers = {
            "ETag": etag,
            "Cache-Control": "no-cache",  # revalidate: an upgraded hub serves new code at once
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=kind, headers=headers)


def _not_found() -> HTMLResponse:
    return page("Not found", "missing", {}, status_code=404)


def page(title: str, name: str, data: dict[str, str], status_code: int = 200) -> HTMLResponse:
    """A console page's frame: ``data`` becomes ``data-*`` attributes the script reads."""
    attrs = "".join(f' data-{k}="{html.escape(v, quote=True)}"' for k, v in data.items())
    body = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · Edgeward</title>
<link rel="icon" href="{PREFIX}static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{PREFIX}static/console.css">
</head>
<body>
<header class="bar">
  <a class="brand" href="/">Edgeward</a>
  <nav>
    <a href="/" data-nav="fleet">Fleet</a>
    <a href="{PREFIX}devices" data-nav="devices">Devices</a>
    <a href="/docs">API</a>
    <button type="button" id="logout" hidden>Log out</button>
  </nav>
</header>
<main id="page" data-page="{name}"{attrs}>
  <h1>{html.escape(title)}</h1>
  <p class="notice" id="notice" role="status" hidden></p>
  <div id="content"><p class="muted">Loading…</p></div>
</main>
<footer class="foot">cloudhub {html.escape(edgeward.__version__)}</footer>
<script src="{PREFIX}static/console.js"></script>
</body>
</html>
"""
    return HTMLResponse(body, status_code=status_code, headers=_page_headers(_CSP))


def _page_headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


_DOCS_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Edgeward cloudhub API</title>
<link rel="icon" href="{PREFIX}static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{PREFIX}static/vendor/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{PREFIX}static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{PREFIX}static/docs.js"></script>
</body>
</html>
"""


def add_console_routes(app: FastAPI) -> None:
    """``/`` (the fleet), ``/ui/...`` (the other pages and the files) and ``/docs``."""
    static = StaticFiles(STATIC_DIR)

    @app.get("/", include_in_schema=False)
    async def fleet() -> Response:
        return page("Fleet", "fleet", {})

    @app.get(f"{PREFIX}login", include_in_schema=False)
    async def login() -> Response:
        return page("Log in", "login", {})

    @app.get(PREFIX.rstrip("/"), include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/", status_code=307)

    @app.get(f"{PREFIX}nodes/{{name}}", include_in_schema=False)
    async def node(name: str) -> Response:
        if not _DNS_LABEL.match(name):
            return _not_found()
        return page(f"Node {name}", "node", {"name": name})

    @app.get(f"{PREFIX}devices", include_in_schema=False)
    async def devices() -> Response:
        return page("Devices", "devices", {})

    @app.get(f"{PREFIX}devices/{{namespace}}/{{name}}", include_in_schema=False)
    async def device(namespace: str, name: str) -> Response:
        if not (_DNS_LABEL.match(namespace) and _DNS_LABEL.match(name)):
            return _not_found()
        return page(f"Device {name}", "device", {"namespace": namespace, "name": name})

    @app.get(f"{PREFIX}static/{{name:path}}", include_in_schema=False)
    async def static_file(name: str, request: Request) -> Response:
        return static.response(name, request)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return HTMLResponse(_DOCS_PAGE, headers=_page_headers(_DOCS_CSP))

    @app.get(f"{PREFIX}{{rest:path}}", include_in_schema=False)
    async def unknown_page(rest: str) -> Response:
        return _not_found()
