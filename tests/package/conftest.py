"""Fixtures of the package tests (make package-test): the .debs, built once per run, and
Debian roots to install them in (tests/package/roots.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.package.roots import Machine, Overlay, cached_root, make_roots_meanwhile

ROOT = Path(__file__).resolve().parents[2]
#: The version the upgrade test starts from (the same source, an older version number).
OLD_VERSION = "0.0.9-1"


#: The roots the tests install into: (release, architecture, with systemd).
ROOTS = (("bookworm", "amd64", True), ("trixie", "amd64", True), ("bookworm", "arm64", False))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if shutil.which("debootstrap") is None or shutil.which("unshare") is None:
        skip = pytest.mark.skip(reason="needs debootstrap and unshare: run make package-test")
        for item in items:
            item.add_marker(skip)


#: The fixtures below that need a Debian root.
ROOT_FIXTURES = {"machine", "arm64_root", "bookworm_root"}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Once the tests to run are known (after -k and skips), their roots start being made."""
    if session.config.option.collectonly:
        return
    runnable = [item for item in session.items if not item.get_closest_marker("skip")]
    if any(ROOT_FIXTURES & set(getattr(item, "fixturenames", ())) for item in runnable):
        make_roots_meanwhile(*ROOTS)


def build(out: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "deb" / "build.py"), "--out", str(out), *args],
        check=True,
    )


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/ as `make deb` makes it: both packages for amd64 and arm64. EDGEWARD_TEST_DEBS
    names a directory of them already built, to iterate on the tests without a rebuild."""
    if given := os.environ.get("EDGEWARD_TEST_DEBS"):
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    build(out)
    return out


@pytest.fixture(scope="session")
def old_edge_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist-old")
    build(out, "--arch", "amd64", "--package", "edgeward-edge", "--version", OLD_VERSION)
    return out / f"edgeward-edge_{OLD_VERSION}_amd64.deb"


def deb(debs: Path, package: str, arch: str = "amd64") -> Path:
    (found,) = debs.glob(f"{package}_*_{arch}.deb")
    return found


@pytest.fixture(params=["bookworm", "trixie"])
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Machine]:
    """A clean Debian 12 or 13 with systemd running, on a network of its own."""
    lower = cached_root(request.param, "amd64", with_systemd=True)
    machine = Machine(lower, tmp_path / "machine")
    try:
        yield machine
    finally:
        machine.close()


@pytest.fixture
def arm64_root(tmp_path: Path) -> Iterator[Overlay]:
    lower = cached_root("bookworm", "arm64", with_systemd=False)
    overlay = Overlay(lower, tmp_path / "arm64")
    try:
        yield overlay
    finally:
        overlay.close()


@pytest.fixture
def bookworm_root(tmp_path: Path) -> Iterator[Overlay]:
    """A clean Debian 12 root, no systemd running: for what dpkg alone does."""
    overlay = Overlay(cached_root("bookworm", "amd64", with_systemd=True), tmp_path / "root")
    try:
        yield overlay
    finally:
        overlay.close()
