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
