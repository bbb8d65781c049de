"""A real browser for the console's tests: Debian's headless Chromium, driven by Selenium
through Debian's chromedriver (never a browser or driver downloaded by Selenium).

The browser trusts exactly the hub's server key (by its SPKI hash, as Chromium allows for
tests) and cannot resolve any host name: a page that needs a CDN fails here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Where ``make screenshots`` has the console tests put their screenshots (docs/console/).
SCREENSHOTS_ENV = "EDGEWARD_SCREENSHOTS"


def require_browser() -> None:
    """Skip without Chromium, except in CI, where a missing browser is a failure."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    why = (
        "Debian's chromium and chromium-driver are not installed (make test installs them as root)"
    )
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def spki_hash(cert_pem: bytes) -> str:
    """The base64 SHA-256 of a certificate's public key, as --ignore-certificate-errors-spki-list
    takes it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@contextmanager
def chromium(profile: Path, trust: list[Path] = [], width: int = 1280) -> Iterator[Any]:  # noqa: B006
    """A headless Chromium with a profile of its own in ``profile``, trusting the keys of the
    certificates in ``trust``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    require_browser()
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},900",
        # no name resolves: an asset from a CDN cannot load
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    if trust:
        hashes = ",".join(spki_hash(p.read_bytes()) for p in trust)
        options.add_argument(f"--ignore-certificate-errors-spki-list={hashes}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(profile.parent / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def page_errors(driver: Any) -> list[str]:
    """What the page logged as errors (a script error, a refused asset, a CSP violation)
    since the last call. A 409 is not one: the console reads the object again and retries,
    as the CLI does, when a write meets a newer revision (a device reporting every second
    makes them common)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "status of 409 (Conflict)" not in entry["message"]
    ]


def screenshot(driver: Any, name: str, tmp_path: Path) -> Path:
    """Save the whole page as ``name``.png: into docs/console/ under ``make screenshots``,
    else beside the test's files. Checked to be a real PNG of the page."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], max(size["height"], min(int(height) + 120, 4000)))
    try:
        assert driver.save_screenshot(str(path)), f"no screenshot of {name}"
    finally:
        driver.set_window_size(size["width"], size["height"])
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, f"{path} is no page"
    return path
