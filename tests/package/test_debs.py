"""The Debian packages as a gateway and a hub machine see them: built, linted, installed
into clean Debian 12 and 13 roots, and run under their own systemd (make package-test)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.package.conftest import OLD_VERSION, deb
from tests.package.roots import NAMESPACE_FREE, Machine, Overlay, wait
from tests.support.procs import Hub

#: A hung daemon is restarted after this long in the tests (the unit says 60 s).
TEST_WATCHDOG = 6


def lintian(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["lintian", "--no-cfg", "--fail-on", "warning", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def contents(path: Path) -> list[str]:
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[5].removeprefix(".") for line in listing.splitlines()]


def field(path: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(path), name], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
@pytest.mark.parametrize("package", ["edgeward-edge", "edgeward-hub"])
def test_lintian_reports_no_errors_or_warnings(debs: Path, package: str, arch: str) -> None:
    """Its man pages included: lintian renders them and reports what groff warns of."""
    result = lintian(deb(debs, package, arch))
    found = [line for line in result.stdout.splitlines() if line.startswith(("E:", "W:"))]
    assert result.returncode == 0 and not found, result.stdout + result.stderr


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_each_package_holds_its_daemon_and_libraries_for_every_python(
    debs: Path, arch: str, tmp_path: Path
) -> None:
    machine = {"amd64": "x86-64", "arm64": "aarch64"}[arch]
    edge, hub = deb(debs, "edgeward-edge", arch), deb(debs, "edgeward-hub", arch)
    edge_files, hub_files = contents(edge), contents(hub)
    assert "/usr/bin/edgecore" in edge_files and "/usr/bin/cloudhub" not in edge_files
    assert "/usr/bin/cloudhub" in hub_files and "/usr/bin/edgecore" not in hub_files
    assert "/lib/systemd/system/edgecore.service" in edge_files
    assert "/usr/share/man/man8/edgecore.8.gz" in edge_files
    assert "/usr/share/man/man8/cloudhub.8.gz" in hub_files
    assert "/etc/mosquitto/conf.d/edgeward.conf" in edge_files
    assert not any("/app/cloudhub/" in name for name in edge_files)
    # the web console and the API docs are served from the package's own files (no CDN)
    for asset in ("console/static/console.js", "vendor/swagger-ui/swagger-ui-bundle.js"):
        assert any(name.endswith(asset) for name in hub_files), asset
    # the hub's libraries stay out of the gateway's package
    assert not any(re.search(r"/(sqlalchemy|fastapi|uvicorn)/", name) for name in edge_files)
    for python in ("3.11", "3.12", "3.13"):
        tag = python.replace(".", "")
        assert any(re.search(rf"python{python}/.*cpython-{tag}-", n) for n in hub_files)
    assert not any(name.endswith(".pyc") for name in edge_files + hub_files)
    depends = field(edge, "Depends")
    assert "python3 (>= 3.11)" in depends and "python3 (<< 3.14)" in depends
    assert "python3-yaml" in depends and "mosquitto" in field(edge, "Recommends")
    assert field(edge, "Architecture") == arch
    extracted = tmp_path / "edge"
    subprocess.run(["dpkg-deb", "-x", str(edge), str(extracted)], check=True)
    rust = next(extracted.rglob("_rust.abi3.so"))
    kind = subprocess.run(["file", "-b", str(rust)], capture_output=True, text=True).stdout
    assert machine in kind.replace("_", "-") and ", stripped" in kind


def install(machine: Overlay, path: Path, *extra: str) -> str:
    # not /tmp: Debian 13's systemd mounts a tmpfs there
    shutil.copy(path, machine.root / "root" / path.name)
    return machine.run("dpkg", "-i", *extra, f"/root/{path.name}")


def lift_namespaces(machine: Machine, unit: str) -> None:
    dropin = machine.root / "etc" / "systemd" / "system" / f"{unit}.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "test.conf").write_text(f"{NAMESPACE_FREE}WatchdogSec={TEST_WATCHDOG}s\n")
    machine.systemctl("daemon-reload")


def new_token(hub: Hub, node: str) -> str:
    status, body = hub.request("POST", "/api/v1/tokens", {"role": "node", "node": node})
    assert status == 201, body
    return str(body["token"])


def node_ready(hub: Hub, node: str) -> bool:
    status, body = hub.request("GET", f"/api/v1/nodes/{node}")
    conditions = body.get("status", {}).get("conditions", []) if status == 200 else []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def secure_hub(machine: Machine, tmp_path: Path) -> Hub:
    hub = Hub(tmp_path / "hub", secure=True, address=machine.host_address)
    hub.start()
    return hub


def join(machine: Machine, hub: Hub, node: str) -> str:
    return machine.run(
        "edgeward",
        "join",
        "--hub",
        hub.api,
        "--token",
        new_token(hub, node),
        "--node",
        node,
        "--wait",
        "90",
    )


def status_line(machine: Machine) -> str:
    return machine.show("edgecore.service", "StatusText")["StatusText"]


def outbox(machine: Machine) -> int:
    """The reports waiting in edgecore's outbox, as its status line says."""
    found = re.search(r"outbox ([0-9,]+)", status_line(machine))
    assert found, status_line(machine)
    return int(found.group(1).replace(",", ""))


HOLD_WRITE_LOCK = (
    "import sqlite3, time; "
    'db = sqlite3.connect("/var/lib/edgeward/edge/edge.db", isolation_level=None); '
    'db.execute("BEGIN IMMEDIATE"); print("locked", flush=True); time.sleep(6)'
)


def test_joined_edge_runs_under_systemd_and_a_hung_one_is_restarted(
    machine: Machine, debs: Path, tmp_path: Path
) -> None:
    """dpkg -i, then sudo edgeward join: the unit is enabled, becomes active once edgecore is
    ready, shows its status line, and the node is Ready in the hub. A daemon that stops
    answering is killed by the watchdog and comes back on its own; reset undoes the join."""
    install(machine, deb(debs, "edgeward-edge"))
    assert machine.systemctl("is-enabled", "edgecore.service", check=False).strip() == "disabled"
    assert "127.0.0.1:1883" in machine.run("ss", "-ltn"), "the Mosquitto drop-in is not in use"
    lift_namespaces(machine, "edgecore.service")
    hub = secure_hub(machine, tmp_path)
    try:
        joined = join(machine, hub, "gw-1")
        assert "enabled and restarted edgecore.service" in joined
        assert f"edgecore is connected to hub wss://{machine.host_address}:" in joined
        assert machine.systemctl("is-enabled", "edgecore.service").strip() == "enabled"
        status = machine.systemctl("status", "edgecore.service")
        assert re.search(r'Status: "connected to hub wss://[0-9.:]+, 0 devices, outbox 0"', status)
        wait(lambda: node_ready(hub, "gw-1"), 30, "gw-1 to be Ready in the hub")
        owners = machine.run(
            "stat",
            "-c",
            "%U %a %n",
            "/var/lib/edgeward/edge/edge.db",
            "/var/lib/edgeward/edge/pki/node.key",
        )
        assert owners.split("\n")[:2] == [
            "edgeward 600 /var/lib/edgeward/edge/edge.db",
            "edgeward 600 /var/lib/edgeward/edge/pki/node.key",
        ]

        first = machine.show("edgecore.service", "MainPID", "NRestarts")
        machine.run("kill", "-STOP", first["MainPID"])
        wait(
            lambda: (
                machine.show("edgecore.service", "NRestarts")["NRestarts"] != first["NRestarts"]
            ),
            TEST_WATCHDOG * 4,
            "the watchdog to restart the stopped edgecore",
        )
        wait(lambda: status_line(machine).startswith("connected to hub"), 60, "a reconnect")
        after = machine.show("edgecore.service", "MainPID", "ActiveState")
        assert after["ActiveState"] == "active" and after["MainPID"] != first["MainPID"]
        journal = machine.run("journalctl", "-u", "edgecore.service", "--no-pager", check=False)
        assert "Watchdog timeout" in journal or "watchdog" in journal.lower()

        # active means ready: while another process holds edge.db's write lock, edgecore
        # cannot finish starting and the unit stays "activating"
        machine.systemctl("stop", "edgecore.service")
        held = machine.run(
            "sh",
            "-c",
            f"runuser -u edgeward -- python3 -c '{HOLD_WRITE_LOCK}' & sleep 1; "
            "systemctl start --no-block edgecore.service; sleep 3; "
            "systemctl show -p ActiveState --value edgecore.service; wait",
        )
        assert held.split()[-1] == "activating", held
        wait(
            lambda: machine.show("edgecore.service", "ActiveState")["ActiveState"] == "active",
            60,
            "edgecore to become ready once the lock is released",
        )

        reset = machine.run("edgeward", "reset", "--yes")
        assert "edgeward delete node gw-1" in reset
        state = machine.show("edgecore.service", "ActiveState", "UnitFileState")
        assert state == {"ActiveState": "inactive", "UnitFileState": "disabled"}
        assert not (machine.root / "var/lib/edgeward/edge/pki/node.key").exists()
        assert (machine.root / "var/lib/edgeward/edge/edge.db").exists()
    finally:
        hub.stop()


def test_hub_package_initialises_and_serves_under_systemd(
    machine: Machine, debs: Path, tmp_path: Path
) -> None:
    """dpkg -i, cloudhub init as root, systemctl enable --now: the hub is active once it
    serves and the CLI reaches it with the admin config init wrote; reinstalling (an
    upgrade) migrates the schema and restarts it."""
    install(machine, deb(debs, "edgeward-hub"))
    lift_namespaces(machine, "cloudhub.service")
    conffile = (machine.root / "etc/edgeward/cloudhub.yaml").read_text()
    assert "# data_dir: /var/lib/edgeward/hub" in conffile
    init = machine.run(
        "cloudhub", "init", "--data-dir", "/var/lib/edgeward/hub", "--ip", machine.address
    )
    assert "ownership of what is in /var/lib/edgeward/hub: edgeward" in init
    machine.systemctl("enable", "--now", "cloudhub.service")
    shown = machine.show("cloudhub.service", "ActiveState", "StatusText")
    assert shown["ActiveState"] == "active"
    assert shown["StatusText"].startswith("0 nodes connected")
    version = machine.run(
        "edgeward", "--config", "/var/lib/edgeward/hub/admin.yaml", "version", "-o", "json"
    )
    assert json.loads(version)["hub"]["version"] == json.loads(version)["client"]
    before = machine.show("cloudhub.service", "MainPID")["MainPID"]
    upgraded = install(machine, deb(debs, "edgeward-hub"))
    assert "is at schema" in upgraded
    after = machine.show("cloudhub.service", "MainPID", "ActiveState")
    assert after["ActiveState"] == "active" and after["MainPID"] != before


WEEK_OF_UPLOADS = 7 * 24 * 60  # one a minute

GENERATE = """
import sys, time
sys.path[:0] = ["/usr/lib/edgeward-edge/app", "/usr/lib/edgeward-edge/common"]
from pathlib import Path
from edgecore.store import EdgeStore
start = time.time() - 7 * 24 * 3600 + 3600  # a week back, inside the 7-day event TTL
clock = iter(start + 60 * i for i in range({n}))
store = EdgeStore(Path("/var/lib/edgeward/edge/edge.db"), clock=lambda: next(clock))
with store.transaction():
    for i in range({n}):
        body = {{"topic": "$hw/events/upload/meter", "payload": f"reading {{i}}"}}
        store.report_event("upload", body)
print(store.outbox_size())
"""


def test_upgrade_over_a_running_node_keeps_a_week_of_buffered_reports(
    machine: Machine, debs: Path, old_edge_deb: Path, tmp_path: Path
) -> None:
    """A node that buffered a week of reports while its hub was away is upgraded while
    running: the new version starts on the same cache and the hub gets every report."""
    install(machine, old_edge_deb)
    lift_namespaces(machine, "edgecore.service")
    hub = secure_hub(machine, tmp_path)
    try:
        join(machine, hub, "gw-week")
        hub.stop()  # the outage
        wait(lambda: status_line(machine).startswith("hub unreachable"), 60, "the outage")
        machine.systemctl("stop", "edgecore.service")
        generated = machine.run(
            "runuser",
            "-u",
            "edgeward",
            "--",
            "python3",
            "-c",
            GENERATE.format(n=WEEK_OF_UPLOADS),
        )
        buffered = int(generated.strip())
        assert buffered >= WEEK_OF_UPLOADS
        machine.systemctl("start", "edgecore.service")
        # and the node's own status, a row of its own
        assert outbox(machine) >= buffered
        assert machine.run("edgecore", "--version").strip() == f"edgecore {OLD_VERSION[:-2]}"

        upgraded = install(machine, deb(debs, "edgeward-edge"))
        assert "is at schema" in upgraded
        assert machine.run("edgecore", "--version").strip() == "edgecore 0.1.0"
        assert machine.show("edgecore.service", "ActiveState")["ActiveState"] == "active"
        assert outbox(machine) >= buffered

        hub.start()  # the link returns
        wait(lambda: outbox(machine) == 0, 120, "the outbox to drain")
        readings: list[str] = []
        after = 0
        while True:  # every upload the hub keeps, 1,000 at a time
            status, page = hub.request(
                "GET", f"/api/v1/events?node=gw-week&device=meter&after={after}&limit=1000"
            )
            assert status == 200, page
            if not page["items"]:
                break
            readings += [e["payload"] for e in page["items"]]
            after = page["metadata"]["last"]
        assert readings == [f"reading {i}" for i in range(WEEK_OF_UPLOADS)]
    finally:
        hub.stop()


def test_arm64_package_installs_and_runs_under_qemu(
    arm64_root: Overlay, debs: Path, tmp_path: Path
) -> None:
    """The arm64 build in a Debian 12 arm64 root run by qemu-user: it installs, and the
    installed edgecore joins a hub and reaches Ready."""
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=False)
    install(arm64_root, deb(debs, "edgeward-edge", "arm64"))
    assert arm64_root.run("edgecore", "--version").strip() == "edgecore 0.1.0"
    assert "aarch64" in arm64_root.run("uname", "-m")
    hub = Hub(tmp_path / "hub", secure=True)
    hub.start()
    edge = None
    try:
        joined = arm64_root.run(
            "edgeward",
            "join",
            "--hub",
            hub.api,
            "--token",
            new_token(hub, "gw-arm"),
            "--node",
            "gw-arm",
        )
        assert "next: edgecore" in joined  # no systemd in this root: it says what to run
        edge = subprocess.Popen(
            [
                "chroot",
                str(arm64_root.root),
                "runuser",
                "-u",
                "edgeward",
                "--",
                "edgecore",
                "--no-mqtt",
            ],
            stdout=(tmp_path / "edge.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait(lambda: node_ready(hub, "gw-arm"), 120, "the arm64 node to be Ready")
    finally:
        if edge is not None:
            edge.terminate()
            edge.wait(timeout=30)
        hub.stop()


def test_upgrades_keep_a_changed_config_and_purge_keeps_data_unless_asked(
    bookworm_root: Overlay, debs: Path
) -> None:
    root = bookworm_root
    install(root, deb(debs, "edgeward-hub"))
    install(root, deb(debs, "edgeward-edge"))
    hub_config = root.root / "etc/edgeward/cloudhub.yaml"
    hub_config.write_text(hub_config.read_text() + "api_port: 10443\n")
    drop_in = root.root / "etc/mosquitto/conf.d/edgeward.conf"
    drop_in.write_text(drop_in.read_text().replace("listener 1883 127.0.0.1", "listener 1884"))
    (root.root / "etc/edgeward/edgecore.yaml").write_text("node_name: gw-9\n")
    cache = root.root / "var/lib/edgeward/edge/edge.db"
    root.run("runuser", "-u", "edgeward", "--", "touch", "/var/lib/edgeward/edge/edge.db")
    root.run("edgeward", "--help")
    assert root.run("readlink", "-f", "/usr/bin/edgeward").strip() == (
        "/usr/lib/edgeward-edge/bin/edgeward"
    )

    install(root, deb(debs, "edgeward-hub"))  # reinstalled: an upgrade to the same files
    install(root, deb(debs, "edgeward-edge"))
    assert hub_config.read_text().endswith("api_port: 10443\n")
    assert "listener 1884" in drop_in.read_text()

    purged = root.run("dpkg", "--purge", "edgeward-edge")
    assert "kept /var/lib/edgeward/edge" in purged
    assert cache.exists() and not drop_in.exists()
    assert not (root.root / "etc/edgeward/edgecore.yaml").exists()
    # the hub's CLI takes over the alternative
    assert root.run("readlink", "-f", "/usr/bin/edgeward").strip() == (
        "/usr/lib/edgeward-hub/bin/edgeward"
    )
    install(root, deb(debs, "edgeward-edge"))
    assert cache.exists()
    root.run("env", "EDGEWARD_PURGE_DATA=yes", "dpkg", "--purge", "edgeward-edge")
    assert not cache.parent.exists()
    assert (root.root / "var/lib/edgeward").exists()  # the hub's data dir is still there
