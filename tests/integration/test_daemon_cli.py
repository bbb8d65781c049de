"""The daemons' command lines: config files, flags, defaults and one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.procs import BIN, Edge, Hub, wait_for


def run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / name), *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("daemon", ["cloudhub", "edgecore"])
def test_print_default_config_is_a_valid_commented_config(daemon: str, tmp_path: Path) -> None:
    """--print-default-config prints every setting with a comment, and the output is itself a
    config file the daemon accepts."""
    result = run(daemon, "--print-default-config")
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert "data_dir" in data and "log_level" in data
    assert result.stdout.count("\n# ") >= len(data)
    config = tmp_path / "c.yaml"
    data["data_dir"] = str(tmp_path / "data")
    config.write_text(yaml.safe_dump(data))
    # parsing succeeds: the error, if any, is not about the config
    bad = run(daemon, "--config", str(config), "--log-level", "nonsense")
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"{daemon}: log_level: must be one of debug, info, warning, error"


@pytest.mark.parametrize(
    ("daemon", "content", "message"),
    [
        ("edgecore", "hub:\n  endpoints: [http://x]\n", 'hub.endpoints: "http://x" is not a ws://'),
        ("edgecore", "status_interval: -1\n", "status_interval: must be greater than 0"),
        ("edgecore", "node_name: Not_Valid\n", "node_name: must consist of lower case"),
        ("edgecore", "nodename: x\n", 'nodename: unknown setting (did you mean "node_name"?)'),
        ("edgecore", "hub: [1, 2]\n", "hub: must be a mapping"),
        ("cloudhub", "api_port: 70000\n", "api_port: must be a port number"),
        ("cloudhub", "node_grace_period: soon\n", "node_grace_period: must be a number"),
        ("cloudhub", "- a list\n", "must be a mapping of settings"),
        ("cloudhub", "key: [unclosed\n", "is not valid YAML"),
    ],
)
def test_bad_config_files_get_one_line_per_problem(
    daemon: str, content: str, message: str, tmp_path: Path
) -> None:
    """A wrong config file is refused at start-up with exit 2 and the problem named."""
    config = tmp_path / "c.yaml"
    config.write_text(content)
    result = run(daemon, "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert all(line.startswith(f"{daemon}: ") for line in result.stderr.splitlines())


def test_every_config_problem_is_listed_at_once(tmp_path: Path) -> None:
    """All problems of a config file are reported together, not one per attempt."""
    config = tmp_path / "c.yaml"
    config.write_text("status_interval: 0\nlog_level: loud\nhub:\n  ping_interval: x\n")
    result = run("edgecore", "--config", str(config))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 3


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    """Pointing --config at a missing file says so in one line."""
    result = run("cloudhub", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"cloudhub: cannot read config {tmp_path / 'nope.yaml'}: "
        "No such file or directory"
    )


def test_edge_runs_from_a_config_file_and_flags_override_it(hub: Hub, tmp_path: Path) -> None:
    """edgecore --config edge.yaml works; a flag given beside it wins over the file."""
    config = tmp_path / "edge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "node_name": "from-file",
                "data_dir": str(tmp_path / "edge"),
                "status_interval": 0.5,
                "hub": {
                    "endpoints": ["ws://127.0.0.1:1", hub.edge],
                    "reconnect_max_delay": 1,
                    "insecure": True,
                },
                "mqtt": {"enabled": False},
            }
        )
    )
    edge = Edge(tmp_path / "edge", "from-flag", hub.edge)
    edge.args = ["--config", str(config), "--node", "from-flag"]
    edge.start()
    try:
        wait_for(
            lambda: hub.request("GET", "/api/v1/nodes/from-flag")[0] == 200,
            20,
            "the node to register through the second endpoint",
        )
        assert hub.request("GET", "/api/v1/nodes/from-file")[0] == 404
        assert edge.stop() == 0
    finally:
        edge.kill()


def test_hub_stops_cleanly_on_sigterm(hub: Hub) -> None:
    """SIGTERM (systemd stop) shuts the hub down with exit status 0."""
    assert hub.stop() == 0
    assert "shutting down" in hub.log()


def test_edge_refuses_a_cache_of_another_node(hub: Hub, tmp_path: Path) -> None:
    """Reusing one data dir for a different node name is refused before anything is synced."""
    first = Edge(tmp_path / "shared", "node-a", hub.edge, "--no-mqtt")
    first.start()
    wait_for(lambda: hub.request("GET", "/api/v1/nodes/node-a")[0] == 200, 10, "node-a to join")
    first.stop()
    result = run(
        "edgecore",
        "--node",
        "node-b",
        "--hub",
        hub.edge,
        "--data-dir",
        str(tmp_path / "shared"),
        "--no-mqtt",
        "--insecure",
    )
    assert result.returncode == 2
    assert "holds the cache of node 'node-a'" in result.stderr


def test_hub_port_in_use_is_one_line(hub: Hub, tmp_path: Path) -> None:
    """A second hub on a taken port says which address is taken."""
    result = run(
        "cloudhub",
        "--data-dir",
        str(tmp_path / "h2"),
        "--api-port",
        str(hub.api_port),
        "--edge-port",
        "0",
        "--insecure",
    )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{hub.api_port}" in result.stderr


def _old_edge_cache(path: Path, steps: int, rows: int) -> None:
    """edge.db as an edgecore with the first ``steps`` schema steps left it, with ``rows``
    outbox rows waiting."""
    import sqlite3

    from edgecore.store import MIGRATIONS

    db = sqlite3.connect(path, isolation_level=None)
    for number, step in enumerate(MIGRATIONS[:steps], start=1):
        step(db)
        db.execute(f"PRAGMA user_version = {number}")
    db.executemany(
        "INSERT INTO outbox (topic, key, body, created) VALUES (?, NULL, ?, ?)",
        [("twin/report", f'{{"n":{n}}}', 1.0 + n) for n in range(rows)],
    )
    db.close()


def test_edgecore_migrate_brings_an_old_cache_up_to_date_and_keeps_its_outbox(
    tmp_path: Path,
) -> None:
    """What the package's postinst runs on upgrade: an older cache's schema steps, once, with
    every buffered row kept; no node credentials are needed for it."""
    import sqlite3

    from edgecore.store import MIGRATIONS

    data = tmp_path / "edge"
    args = ("--data-dir", str(data), "--node", "n1", "--hub", "wss://hub.invalid:10000")
    empty = run("edgecore", *args, "--migrate")
    assert empty.returncode == 0
    assert (
        empty.stdout.strip() == f"edgecore: no cache at {data / 'edge.db'} yet: nothing to migrate"
    )
    data.mkdir()
    _old_edge_cache(data / "edge.db", len(MIGRATIONS) - 1, rows=500)
    first = run("edgecore", *args, "--migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        f"edgecore: {data / 'edge.db'} migrated from schema {len(MIGRATIONS) - 1} "
        f"to {len(MIGRATIONS)}"
    )
    again = run("edgecore", *args, "--migrate")
    assert "is at schema" in again.stdout
    db = sqlite3.connect(data / "edge.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("SELECT count(*), min(body), max(created) FROM outbox").fetchone() == (
        500,
        '{"n":0}',
        500.0,
    )


def test_edgecore_migrate_refuses_a_file_that_is_not_a_cache(tmp_path: Path) -> None:
    (tmp_path / "edge.db").write_bytes(b"not sqlite" * 100)
    result = run("edgecore", "--data-dir", str(tmp_path), "--node", "n1", "--migrate")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"edgecore: cannot open the edge cache {tmp_path / 'edge.db'}: file is not a database"
    )
    assert (tmp_path / "edge.db").read_bytes() == b"not sqlite" * 100


def test_cloudhub_migrate_creates_or_updates_the_schema_and_says_where(tmp_path: Path) -> None:
    result = run("cloudhub", "--data-dir", str(tmp_path), "--insecure", "--migrate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(
        f"cloudhub: sqlite:///{tmp_path / 'hub.db'} is at schema"
    )
    missing = run("cloudhub", "--data-dir", str(tmp_path / "absent"), "--insecure", "--migrate")
    assert missing.returncode == 2
    assert missing.stderr.startswith("cloudhub: cannot migrate the database sqlite:///")
