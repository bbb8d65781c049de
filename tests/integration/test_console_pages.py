"""What the hub serves for the web console and the API docs, and what it does not: frames and
files without a token, never fleet data; no path out of the package; no page from elsewhere.
The pages at work in a browser: tests/integration/test_console.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloudhub.api import create_app
from cloudhub.apiauth import Authenticator
from cloudhub.console import STATIC_DIR
from cloudhub.credentials import Identity, TokenRefused
from cloudhub.db import open_engine
from cloudhub.store import Store

PAGES = ["/", "/ui/login", "/ui/nodes/edge-1", "/ui/devices", "/ui/devices/default/thermo"]


def refuse_every_token(token: str) -> Identity:
    raise TokenRefused("unknown", "no such token")


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """A hub that accepts no token at all: what it serves here, it serves to anyone."""
    store = Store(open_engine(f"sqlite:///{tmp_path / 'hub.db'}"))
    store.migrate()
    app = create_app(store, auth=Authenticator(refuse_every_token))
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_frames_served_without_a_token(client: TestClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert '<script src="/ui/static/console.js"></script>' in resp.text
    assert "<script>" not in resp.text  # nothing inline: the policy would refuse it


def test_the_api_behind_the_pages_still_needs_a_token(client: TestClient) -> None:
    assert client.get("/api/v1/nodes").status_code == 401
    for sneaky in ("/ui/../api/v1/nodes", "/ui/%2e%2e/api/v1/nodes", "/ui/static/../../api.py"):
        resp = client.get(sneaky)
        assert resp.status_code in (401, 404), sneaky
        assert "application/json" not in resp.headers["content-type"] or resp.status_code == 401


def test_names_in_page_urls_must_be_dns_labels(client: TestClient) -> None:
    """A page names its node or device in data attributes: only a valid name gets there."""
    for path in (
        "/ui/nodes/Edge_1",
        '/ui/nodes/a"onmouseover="x',
        "/ui/devices/default/" + "a" * 64,
        "/ui/devices/%3Cscript%3E/thermo",
        "/ui/nowhere",
    ):
        resp = client.get(path)
        assert resp.status_code == 404, path
        assert "onmouseover" not in resp.text and "<script>" not in resp.text
    page = client.get("/ui/devices/plant-7/thermo-2").text
    assert 'data-namespace="plant-7" data-name="thermo-2"' in page


def test_every_static_file_is_served_with_its_type_and_revalidated(client: TestClient) -> None:
    files = [p for p in STATIC_DIR.rglob("*") if p.suffix in (".js", ".css", ".svg")]
    assert len(files) >= 5
    for path in files:
        url = "/ui/static/" + path.relative_to(STATIC_DIR).as_posix()
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert resp.content == path.read_bytes()
        assert resp.headers["cache-control"] == "no-cache"
        again = client.get(url, headers={"If-None-Match": resp.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    assert client.get("/ui/static/vendor/swagger-ui/LICENSE").status_code == 404  # not served
    assert client.get("/ui/static/" + "x/" * 2000).status_code == 404


def test_no_page_or_file_loads_anything_from_elsewhere(client: TestClient) -> None:
    """No CDN: every src and href a page or the docs names is the hub's own."""
    for path in [*PAGES, "/docs"]:
        html = client.get(path).text
        for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert ref.startswith("/"), f"{path} loads {ref}"
            if ref != "/" and not ref.startswith("/ui/devices") and ref != "/docs":
                assert client.get(ref).status_code == 200, ref
    script = (STATIC_DIR / "console.js").read_text() + (STATIC_DIR / "docs.js").read_text()
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", script)


def test_the_docs_are_public_and_say_how_to_authenticate(client: TestClient) -> None:
    redoc = client.get("/redoc")  # FastAPI's, which loads from a CDN: not served
    assert redoc.status_code == 401 and "redoc" not in redoc.text.lower()
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "a token from 'edgeward token create' (docs/security.md)",
    }
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert "security" not in doc["paths"]["/api/v1/nodes"]["get"]
    assert not any(p == "/" or p.startswith("/ui") for p in doc["paths"])
