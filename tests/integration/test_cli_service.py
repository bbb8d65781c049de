"""``edgeward join`` starting edgecore.service and ``edgeward reset`` undoing a join, with a
stand-in ``systemctl`` first on PATH.

The CLI runs in-process (``edgeward.cli.main.main``) against a real TLS hub, so
the host probes can be answered for the test: this machine is a systemd host
run as root, and the unit reads the config in the test's directory. The
stand-in records every call and answers ``show`` from a script of states the
test writes; ``stop``, ``disable`` and ``enable`` change the current state as
systemd would. The real unit under a real systemd is the packaging tests' part.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from edgeward.cli import service
from edgeward.cli.main import main
from tests.support.procs import Hub

pytestmark = pytest.mark.integration

FAKE_SYSTEMCTL = """\
#!{python}
import json, sys
from pathlib import Path

here = Path(__file__).parent
with open(here / "calls.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
script = json.loads((here / "systemd.json").read_text())
verb = sys.argv[1]
if verb in script["fail"]:
    sys.stderr.write(script["fail"][verb] + "\\n")
    sys.exit(1)
states = script["states"]
if verb == "show":
    wanted = sys.argv[sys.argv.index("-p") + 1].split(",")
    state = states.pop(0) if len(states) > 1 else states[0]
    # systemd's own order (the Service interface first), not the order asked for
    for key in ("StatusText", "SubState", "UnitFileState", "LoadState", "ActiveState"):
        if key in wanted:
            print(f"{{key}}={{state.get(key, '')}}")
elif verb == "stop":
    states[0].update(ActiveState="inactive", SubState="dead")
elif verb == "disable":
    states[0].update(UnitFileState="disabled")
elif verb == "enable":
    states[0].update(UnitFileState="enabled")
(here / "systemd.json").write_text(json.dumps(script))
"""

SHOW = "show -p LoadState,ActiveState,SubState,UnitFileState,StatusText edgecore.service"


def unit(
    active: str = "active",
    status: str = "",
    *,
    sub: str = "running",
    load: str = "loaded",
    enabled: bool = True,
) -> dict[str, str]:
    return {
        "LoadState": load,
        "ActiveState": active,
        "SubState": sub,
        "UnitFileState": "enabled" if enabled else "disabled",
        "StatusText": status,
    }


STOPPED = unit("inactive", sub="dead", enabled=False)
NOT_INSTALLED = unit("inactive", sub="dead", load="not-found", enabled=False)


@dataclass
class Systemd:
    """The stand-in's directory: ``script`` sets what ``show`` answers, ``calls`` what ran."""

    bin: Path

    def script(self, *states: dict[str, str], fail: dict[str, str] | None = None) -> None:
        text = json.dumps({"states": list(states), "fail": fail or {}})
        (self.bin / "systemd.json").write_text(text)

    def calls(self) -> list[str]:
        log = self.bin / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def changes(self) -> list[str]:
        """The calls that change something: everything but ``show``."""
        return [call for call in self.calls() if not call.startswith("show ")]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    h = Hub(tmp_path_factory.mktemp("secure") / "hub", secure=True)
    h.start()
    try:
        yield h
    finally:
        h.kill()


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Systemd:
    """A systemd host run as root whose edgecore.service reads ``tmp_path/edgecore.yaml``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(service, "is_systemd_host", lambda: True)
    monkeypatch.setattr(service, "is_root", lambda: True)
    monkeypatch.setattr(service, "UNIT_CONFIG", tmp_path / "edgecore.yaml")
    monkeypatch.setattr(service, "POLL_SECONDS", 0.02)
    fake_systemd = Systemd(bin_dir)
    fake_systemd.script(STOPPED)
    return fake_systemd


@dataclass
class Result:
    code: int
    out: str
    err: str


def edgeward(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def one_error(result: Result, code: int, *parts: str) -> str:
    """The command failed with ``code`` and exactly one ``edgeward: ...`` line on stderr."""
    assert result.code == code, (result.out, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("edgeward: ")
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def join(
    capsys: pytest.CaptureFixture[str], hub: Hub, node: str, base: Path, *extra: str
) -> Result:
    """``edgeward join`` with a fresh token, for ``base/edge`` and ``base/edgecore.yaml``."""
    status, body = hub.request("POST", "/api/v1/tokens", {"role": "node", "node": node})
    assert status == 201, body
    return edgeward(
        capsys,
        "join",
        "--hub",
        hub.api,
        "--token",
        str(body["token"]),
        "--node",
        node,
        "--data-dir",
        str(base / "edge"),
        "--config-out",
        str(base / "edgecore.yaml"),
        *extra,
    )


def edge_address(hub: Hub) -> str:
    return f"wss://127.0.0.1:{hub.edge_port}"


# -- join --------------------------------------------------------------------------------


def test_join_enables_restarts_and_waits_until_connected(
    hub: Hub, systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Enable, then restart (a re-join's new credentials take effect), then one progress
    line per phase until edgecore's status line says it is connected."""
    edge = edge_address(hub)
    systemd.script(
        STOPPED,
        unit("active", f"connecting to hub {edge}, 0 devices, outbox 0"),
        unit("active", f"connecting to hub {edge}, 0 devices, outbox 1"),
        unit("active", "hub unreachable (retrying), 0 devices, outbox 1"),
        unit("active", f"connected to hub {edge}, 0 devices, outbox 0"),
    )
    done = join(capsys, hub, "gw-start", tmp_path)
    assert done.code == 0, done.err
    assert systemd.calls() == [
        SHOW,
        "enable edgecore.service",
        "restart edgecore.service",
        SHOW,
        SHOW,
        SHOW,
        SHOW,
    ]
    lines = done.out.splitlines()
    assert f"wrote {tmp_path / 'edgecore.yaml'}" in lines
    assert not any(line.startswith("next:") for line in lines)
    assert lines[-4:] == [
        "enabled and restarted edgecore.service",
        f"waiting for edgecore to connect to the hub... (status: connecting to hub {edge}, "
        "0 devices, outbox 0)",
        "waiting for edgecore to connect to the hub... (status: hub unreachable (retrying), "
        "0 devices, outbox 1)",
        f"edgecore is connected to hub {edge}, 0 devices, outbox 0",
    ]
    assert (tmp_path / "edge" / "pki" / "node.key").exists()


def test_join_gives_up_after_wait_and_says_what_to_check(
    hub: Hub, systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    systemd.script(STOPPED, unit("active", "hub unreachable (retrying)"))
    started = time.monotonic()
    done = join(capsys, hub, "gw-late", tmp_path, "--wait", "0.5")
    assert time.monotonic() - started < 20
    one_error(
        done,
        1,
        "edgecore did not connect to the hub within 0.5 s",
        "(last status: hub unreachable (retrying))",
        "journalctl -u edgecore -n 50",
        edge_address(hub),
        "clock",
    )
    assert "joined node gw-late" in done.out  # the join itself stands
    assert systemd.changes() == ["enable edgecore.service", "restart edgecore.service"]


def test_join_stops_waiting_when_the_unit_fails(
    hub: Hub, systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A restart loop is shown as one; a unit that gave up ends the wait at once."""
    systemd.script(
        STOPPED,
        unit("activating", "connecting to hub", sub="auto-restart"),
        unit("failed", "connecting to hub", sub="failed"),
    )
    started = time.monotonic()
    done = join(capsys, hub, "gw-fail", tmp_path, "--wait", "600")
    assert time.monotonic() - started < 20
    one_error(
        done,
        1,
        "edgecore.service failed before edgecore connected to the hub",
        "see journalctl -u edgecore -n 50",
    )
    assert "(status: edgecore exited and systemd restarts it" in done.out


def test_a_restart_systemctl_refuses_is_its_own_message(
    hub: Hub, systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    systemd.script(
        STOPPED,
        fail={
            "restart": "Job for edgecore.service failed because the control process exited "
            'with error code.\nSee "systemctl status edgecore.service" for details.'
        },
    )
    done = join(capsys, hub, "gw-refused", tmp_path)
    line = one_error(done, 1)
    assert line == (
        "edgeward: systemctl restart edgecore.service failed: Job for edgecore.service failed "
        "because the control process exited with error code; see journalctl -u edgecore -n 50"
    )


def test_join_without_the_unit_installed_prints_the_command(
    hub: Hub, systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    systemd.script(NOT_INSTALLED)
    done = join(capsys, hub, "gw-nounit", tmp_path)
    assert done.code == 0, done.err
    assert done.out.splitlines()[-2:] == [
        "edgecore.service is not installed on this machine, so it was not started",
        f"next: edgecore --config {tmp_path / 'edgecore.yaml'}",
    ]
    assert systemd.calls() == [SHOW]


def test_join_no_start_prints_the_systemctl_commands(
    hub: Hub, systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = join(capsys, hub, "gw-nostart", tmp_path, "--no-start")
    assert done.code == 0, done.err
    assert done.out.splitlines()[-1] == (
        "next: systemctl enable edgecore.service && systemctl restart edgecore.service"
    )
    assert systemd.changes() == []


def test_a_config_left_alone_is_not_started(
    hub: Hub, systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the new config beside the old as FILE.new, the unit would run the old one:
    join says what to do instead of restarting it."""
    config = tmp_path / "edgecore.yaml"
    config.write_text("node_name: someone-else\n")
    done = join(capsys, hub, "gw-edited", tmp_path)
    assert done.code == 0, done.err
    assert config.read_text() == "node_name: someone-else\n"
    assert (tmp_path / "edgecore.yaml.new").exists()
    assert f"{config} exists and differs" in done.out
    assert done.out.splitlines()[-1] == (
        "then run: systemctl enable edgecore.service && systemctl restart edgecore.service"
    )
    assert systemd.changes() == []


@pytest.mark.parametrize("host", ["no systemd", "not root", "another config"])
def test_join_elsewhere_prints_the_edgecore_command(
    host: str,
    hub: Hub,
    systemd: Systemd,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without systemd, as another user, or for a config the unit does not read, join
    does not ask systemctl anything."""
    if host == "no systemd":
        monkeypatch.setattr(service, "is_systemd_host", lambda: False)
    elif host == "not root":
        monkeypatch.setattr(service, "is_root", lambda: False)
    else:
        monkeypatch.setattr(service, "UNIT_CONFIG", tmp_path / "elsewhere.yaml")
    done = join(capsys, hub, f"gw-{host.replace(' ', '-')}", tmp_path)
    assert done.code == 0, done.err
    assert done.out.splitlines()[-1] == f"next: edgecore --config {tmp_path / 'edgecore.yaml'}"
    assert systemd.calls() == []


# -- reset -------------------------------------------------------------------------------


def joined(
    capsys: pytest.CaptureFixture[str], hub: Hub, systemd: Systemd, node: str, base: Path
) -> Path:
    """A node joined and connected, with a cache and outbox: its data dir."""
    systemd.script(STOPPED, unit("active", "connected to hub"))
    assert join(capsys, hub, node, base).code == 0
    data = base / "edge"
    for name in ("edge.db", "edge.db-wal", "edge.db-shm"):
        (data / name).write_bytes(b"buffered")
    (data / "pki" / "node.key.next").write_bytes(b"a renewal in progress")
    return data


def reset(capsys: pytest.CaptureFixture[str], base: Path, *extra: str) -> Result:
    return edgeward(
        capsys,
        "reset",
        "--data-dir",
        str(base / "edge"),
        "--config",
        str(base / "edgecore.yaml"),
        *extra,
    )


def test_reset_stops_the_unit_removes_credentials_and_keeps_the_data(
    hub: Hub, systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stop, then disable, then the credentials go (key first); the cache, the outbox and
    the config stay; the hub still lists the node, named from its certificate. A second
    reset finds nothing to do."""
    data = joined(capsys, hub, systemd, "gw-reset", tmp_path)
    before = len(systemd.changes())
    done = reset(capsys, tmp_path, "--yes")
    assert done.code == 0, done.err
    assert systemd.changes()[before:] == ["stop edgecore.service", "disable edgecore.service"]
    pki = data / "pki"
    config = tmp_path / "edgecore.yaml"
    assert done.out.splitlines() == [
        "stopped edgecore.service",
        "disabled edgecore.service",
        f"removed {pki / 'node.key'}",
        f"removed {pki / 'node.key.next'}",
        f"removed {pki / 'ca.crt'}",
        f"removed {pki / 'node.crt'}",
        f"removed the empty directory {pki}",
        f"kept the cache and outbox in {data / 'edge.db'} (--delete-data removes them)",
        f"kept the config {config}: a later join with different settings writes "
        f"{config}.new beside it (--delete-config removes it)",
        "note: the hub still lists node gw-reset: an admin deletes it, which also revokes its "
        "certificate, with 'edgeward delete node gw-reset'",
    ]
    assert not pki.exists()
    assert sorted(p.name for p in data.iterdir()) == ["edge.db", "edge.db-shm", "edge.db-wal"]
    assert yaml.safe_load(config.read_text())["node_name"] == "gw-reset"

    again = reset(capsys, tmp_path)  # nothing to do: no --yes needed
    assert again.code == 0, again.err
    assert again.out == f"nothing to remove: no node credentials in {pki}\n"
    assert systemd.changes()[before:] == ["stop edgecore.service", "disable edgecore.service"]


def test_reset_delete_data_and_config_removes_them_too(
    hub: Hub, systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = joined(capsys, hub, systemd, "gw-wipe", tmp_path)
    (tmp_path / "edgecore.yaml.new").write_text("node_name: gw-wipe\n")
    done = reset(capsys, tmp_path, "-y", "--delete-data", "--delete-config")
    assert done.code == 0, done.err
    for name in ("edge.db", "edge.db-wal", "edge.db-shm"):
        assert f"removed {data / name}" in done.out.splitlines()
    assert list(data.iterdir()) == []  # the data dir itself stays, with its owner
    assert not (tmp_path / "edgecore.yaml").exists()
    assert not (tmp_path / "edgecore.yaml.new").exists()
    assert "kept" not in done.out


def test_reset_without_yes_and_without_a_terminal_refuses(
    systemd: Systemd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = credentials(tmp_path)
    systemd.script(unit("active", "connected to hub"))
    done = reset(capsys, tmp_path)
    one_error(done, 2, "pass --yes")
    assert key.exists()
    assert systemd.changes() == []


def test_reset_asks_on_a_terminal_and_does_nothing_without_a_yes(
    systemd: Systemd,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = credentials(tmp_path)
    systemd.script(unit("active", "connected to hub"))
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    done = reset(capsys, tmp_path)
    one_error(done, 1, "not confirmed: nothing was changed")
    assert done.out.splitlines()[:3] == [
        "edgeward reset will:",
        "  stop and disable edgecore.service",
        f"  remove {key}",
    ]
    assert key.exists() and systemd.changes() == []

    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    done = reset(capsys, tmp_path)
    assert done.code == 0, done.err
    assert not key.exists()
    assert systemd.changes() == ["stop edgecore.service", "disable edgecore.service"]
    assert "note: the hub still lists node gw-typed" in done.out  # from the config


def test_reset_as_another_user_refuses_before_changing_anything(
    systemd: Systemd,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = credentials(tmp_path)
    systemd.script(unit("active", "connected to hub"))
    monkeypatch.setattr(service, "is_root", lambda: False)
    done = reset(capsys, tmp_path, "--yes")
    assert one_error(done, 1) == "edgeward: run as root (sudo edgeward reset)"
    assert key.exists() and systemd.changes() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may remove any file")
def test_reset_of_files_this_user_cannot_remove_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "is_systemd_host", lambda: False)
    key = credentials(tmp_path)
    key.parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        done = reset(capsys, tmp_path, "--yes")
    finally:
        key.parent.chmod(0o700)
    assert one_error(done, 1) == "edgeward: run as root (sudo edgeward reset)"
    assert key.exists()


def test_reset_without_systemd_says_so_and_removes_the_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "is_systemd_host", lambda: False)
    key = credentials(tmp_path)
    done = reset(capsys, tmp_path, "--yes")
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert lines[0] == "systemd does not run this machine: stop edgecore yourself if it runs"
    assert f"removed {key}" in lines
    assert not key.exists()


def credentials(base: Path) -> Path:
    """Credentials as a join leaves them, and its config (node gw-typed): the key."""
    pki = base / "edge" / "pki"
    pki.mkdir(parents=True)
    for name in ("ca.crt", "node.crt", "node.key"):
        (pki / name).write_bytes(b"not really a " + name.encode())
    config = {"node_name": "gw-typed", "data_dir": str(base / "edge")}
    (base / "edgecore.yaml").write_text(yaml.safe_dump(config))
    return pki / "node.key"


class Terminal(io.StringIO):
    """A stdin that is a terminal someone types ``text`` on."""

    def isatty(self) -> bool:
        return True
