"""The units in packaging/systemd as systemd judges them: ``systemd-analyze verify`` and
``systemd-analyze security`` (offline, on the unit files as shipped)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.units import UNITS, seconds, settings

ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package: systemd)"
)

DAEMONS = {"edgecore": "/usr/bin/edgecore", "cloudhub": "/usr/bin/cloudhub"}
#: Exposure levels (0 safe … 10 unsafe) the units must stay at or below.
MAX_EXPOSURE = {"edgecore": 2.0, "cloudhub": 2.0}
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file system root as a package would leave it: the units in /etc/systemd/system, the
    daemons in /usr/bin (stand-ins: verify checks that ExecStart= is executable), and the
    system's own units, which ours depend on (multi-user.target, network.target …)."""
    root = tmp_path_factory.mktemp("root")
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for daemon, path in DAEMONS.items():
        stand_in = root / path.lstrip("/")
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
        shutil.copy(UNITS / f"{daemon}.service", root / "etc/systemd/system")
    return root


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, f"--root={root}", *args], capture_output=True, text=True, timeout=60
    )


def test_units_verify_clean(root: Path) -> None:
    """No error and no warning: an unknown or misspelt setting is only a warning to systemd,
    which then ignores it, so it must fail here."""
    result = analyze(root, "verify", *(f"{d}.service" for d in DAEMONS))
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_exposure_stays_low(root: Path, daemon: str) -> None:
    """The overall exposure docs/packaging.md records, at most ``MAX_EXPOSURE``."""
    result = analyze(root, "security", "--offline=true", f"{daemon}.service")
    assert result.returncode == 0, result.stderr
    found = re.search(rf"Overall exposure level for {daemon}\.service: ([\d.]+)", result.stdout)
    assert found, result.stdout
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE[daemon], result.stdout
    documented = (UNITS.parents[1] / "docs" / "packaging.md").read_text()
    assert f"`{daemon}.service` | {exposure}" in documented, "update docs/packaging.md"


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_units_run_the_daemon_as_issue_10_asks(daemon: str) -> None:
    """What systemd-analyze does not judge: how the daemon is started and supervised."""
    unit = settings(f"{daemon}.service")
    one = {key: values[-1] for key, values in unit.items()}
    assert one["Service.Type"] == "notify"
    assert one["Service.NotifyAccess"] == "main"
    assert one["Service.ExecStart"] == f"{DAEMONS[daemon]} --config /etc/edgeward/{daemon}.yaml"
    assert one["Service.User"] == one["Service.Group"] == "edgeward"
    assert one["Service.Restart"] == "always"
    assert int(one["Unit.StartLimitBurst"]) > 1
    assert seconds(one["Unit.StartLimitIntervalSec"]) > 0
    assert 0 < seconds(one["Service.WatchdogSec"]) <= 120
    assert 0 < seconds(one["Service.TimeoutStopSec"]) <= 30
    assert one["Service.CapabilityBoundingSet"] == one["Service.AmbientCapabilities"] == ""
    assert one["Service.ReadWritePaths"] == "/var/lib/edgeward"
    assert one["Service.StateDirectory"] == "edgeward"
    assert one["Service.ProtectSystem"] == "strict"
