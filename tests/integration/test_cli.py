"""The edgeward CLI run as a user runs it: a subprocess against a real cloudhub."""

from __future__ import annotations

import http.server
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.procs import Hub, wait_for

pytestmark = pytest.mark.integration

EDGEWARD = str(Path(sys.executable).parent / "edgeward")

MANIFEST = """\
# A KubeEdge v1beta1 manifest, as it would be applied to KubeEdge.
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: thermostat
  namespace: default
spec:
  properties:
    - name: temp
      description: temperature in degree celsius
      type: INT
      accessMode: ReadOnly
      maximum: "100"
      unit: degree celsius
    - name: target
      type: INT
      accessMode: ReadWrite
  protocol: modbus
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: thermo
  labels:
    site: plant-3
spec:
  deviceModelRef:
    name: thermostat
  nodeName: edge-1
  properties:
    - name: target
      collectCycle: 10000000000
      reportToCloud: true
      desired:
        value: "20"
      visitors:
        protocolName: modbus
        configData:
          register: HoldingRegister
          offset: 2
  protocol:
    protocolName: modbus
    configData:
      ip: 172.17.0.3
      port: 1502
"""


def run(
    *args: str, hub: Hub | str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``edgeward ARGS`` with EDGEWARD_HUB pointing at ``hub``."""
    env = {**os.environ, "EDGEWARD_HUB": hub.api if isinstance(hub, Hub) else (hub or "")}
    for name in ("EDGEWARD_DEBUG", "EDGEWARD_CONFIG", "EDGEWARD_TOKEN", "EDGEWARD_CA"):
        env.pop(name, None)
    return subprocess.run(
        [EDGEWARD, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )


def assert_one_error(result: subprocess.CompletedProcess[str], code: int, *parts: str) -> str:
    """The command failed with ``code`` and exactly one ``edgeward: ...`` line on stderr."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edgeward: ")
    for part in parts:
        assert part in lines[0]
    return lines[0]


def lines_of(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "thermo.yaml"
    path.write_text(MANIFEST)
    return path


@pytest.fixture
def applied(hub: Hub, manifest: Path) -> Hub:
    """A hub holding the thermostat model and the thermo device."""
    assert run("apply", "-f", str(manifest), hub=hub).returncode == 0
    return hub


# -- apply ---------------------------------------------------------------------------


def test_apply_creates_then_reports_unchanged_and_configured(hub: Hub, manifest: Path) -> None:
    """apply creates a KubeEdge manifest's objects, then says unchanged or configured after."""
    first = run("apply", "-f", str(manifest), hub=hub)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "devicemodel/thermostat created\ndevice/thermo created\n"

    again = run("apply", "-f", str(manifest), hub=hub)
    assert again.stdout == "devicemodel/thermostat unchanged\ndevice/thermo unchanged\n"

    manifest.write_text(MANIFEST.replace('value: "20"', 'value: "22"'))
    changed = run("apply", "-f", str(manifest), hub=hub)
    assert changed.stdout == "devicemodel/thermostat unchanged\ndevice/thermo configured\n"

    status, device = hub.request("GET", "/api/v1/namespaces/default/devices/thermo")
    assert status == 200
    prop = device["spec"]["properties"][0]
    assert prop["desired"] == {"value": "22"}
    assert prop["visitors"]["configData"]["register"] == "HoldingRegister"  # KubeEdge fields kept
    assert device["spec"]["protocol"]["configData"]["port"] == 1502


def test_apply_reports_each_bad_document_and_continues(hub: Hub, tmp_path: Path) -> None:
    """A bad document gets its own error line naming file and line; the good ones still apply."""
    path = tmp_path / "mixed.yaml"
    path.write_text(
        "kind: Node\nmetadata: {name: edge-1}\n"
        "---\nkind: Gadget\nmetadata: {name: g}\n"
        "---\n- not\n- a mapping\n"
        "---\nkind: Device\nmetadata: {name: Bad_Name}\n"
        "---\nkind: Device\nmetadata: {name: good}\nspec: {nodeName: edge-1}\n"
    )
    result = run("apply", "-f", str(path), hub=hub)
    assert result.returncode == 1
    assert result.stdout == "node/edge-1 created\ndevice/good created\n"
    errors = result.stderr.splitlines()
    assert len(errors) == 3, result.stderr
    assert errors[0].startswith(f"edgeward: {path}:4 (document 2): ")
    assert 'unknown kind "Gadget"' in errors[0]
    assert errors[1] == f"edgeward: {path}:7 (document 3): a manifest must be a mapping, not a list"
    assert errors[2].startswith(f"edgeward: {path}:10 (document 4): ")
    assert "metadata.name" in errors[2]
    assert "Traceback" not in result.stderr


def test_apply_bad_yaml_names_file_and_line(hub: Hub, tmp_path: Path) -> None:
    """A YAML syntax error is one line with the file and line, and nothing is applied."""
    path = tmp_path / "bad.yaml"
    path.write_text("kind: Device\nmetadata:\n  name: a\n   oops: [\n")
    result = run("apply", "-f", str(path), hub=hub)
    assert_one_error(result, 1, f"{path}:4:", "invalid YAML")
    assert hub.request("GET", "/api/v1/devices")[1]["items"] == []


def test_apply_missing_file(hub: Hub, tmp_path: Path) -> None:
    """A missing -f file is one line naming it."""
    result = run("apply", "-f", str(tmp_path / "nope.yaml"), hub=hub)
    assert_one_error(result, 1, "nope.yaml: no such file or directory")


def test_apply_from_stdin_into_a_namespace(hub: Hub) -> None:
    """`apply -f - -n NS` reads stdin and puts documents without a namespace in NS."""
    result = run("apply", "-f", "-", "-n", "plant-3", hub=hub, stdin=MANIFEST)
    assert result.returncode == 0, result.stderr
    status, _ = hub.request("GET", "/api/v1/namespaces/plant-3/devices/thermo")
    assert status == 200
    # the model names its own namespace, which -n does not override
    assert hub.request("GET", "/api/v1/namespaces/default/devicemodels/thermostat")[0] == 200


def test_get_yaml_output_applies_back_unchanged(applied: Hub) -> None:
    """What `get -o yaml` prints is a manifest: applying it back changes nothing."""
    listing = run("get", "devices", "-o", "yaml", hub=applied).stdout
    result = run("apply", "-f", "-", hub=applied, stdin=listing)
    assert result.stdout == "device/thermo unchanged\n", result.stderr


# -- get -----------------------------------------------------------------------------


def test_get_table_and_wide(applied: Hub) -> None:
    """get prints kubectl-style columns; -o wide adds property counts and desired values."""
    table = lines_of(run("get", "devices", hub=applied).stdout)
    assert table[0] == ["NAME", "NODE", "MODEL", "AGE"]
    assert table[1][:3] == ["thermo", "edge-1", "thermostat"]
    assert table[1][3].endswith("s")

    wide = lines_of(run("get", "dev", "-o", "wide", hub=applied).stdout)
    assert wide[0] == ["NAME", "NODE", "MODEL", "AGE", "PROPERTIES", "DESIRED", "STATE", "SYNCED"]
    assert wide[1][4:] == ["1", "target=20", "-", "pending"]

    models = lines_of(run("get", "dm", "-o", "wide", hub=applied).stdout)
    assert models[0] == ["NAME", "PROPERTIES", "AGE", "TYPES"]
    assert models[1][:2] == ["thermostat", "2"]
    assert models[1][-1] == "temp:INT,target:INT"


def test_get_json_yaml_and_name(applied: Hub) -> None:
    """-o json and -o yaml print exactly what the API returned; -o name prints kind/name."""
    api_list = applied.request("GET", "/api/v1/namespaces/default/devices")[1]
    as_json = run("get", "devices", "-o", "json", hub=applied)
    assert json.loads(as_json.stdout) == api_list
    assert yaml.safe_load(run("get", "devices", "-o", "yaml", hub=applied).stdout) == api_list

    api_obj = applied.request("GET", "/api/v1/namespaces/default/devices/thermo")[1]
    one = run("get", "device", "thermo", "-o", "json", hub=applied)
    assert json.loads(one.stdout) == api_obj
    assert run("get", "devices", "-o", "name", hub=applied).stdout == "device/thermo\n"
    assert run("get", "dm", "thermostat", "-o", "name", hub=applied).stdout == (
        "devicemodel/thermostat\n"
    )


def test_get_all_namespaces(applied: Hub) -> None:
    """-A lists every namespace with a NAMESPACE column; without it only one namespace shows."""
    run("apply", "-f", "-", "-n", "plant-3", hub=applied, stdin=MANIFEST)
    everywhere = lines_of(run("get", "devices", "-A", hub=applied).stdout)
    assert everywhere[0][:2] == ["NAMESPACE", "NAME"]
    assert sorted(row[:2] for row in everywhere[1:]) == [
        ["default", "thermo"],
        ["plant-3", "thermo"],
    ]
    only = lines_of(run("get", "devices", "-n", "plant-3", hub=applied).stdout)
    assert len(only) == 2
    empty = run("get", "devices", "-n", "nowhere", hub=applied)
    assert empty.returncode == 0
    assert empty.stdout == ""
    assert empty.stderr == "No resources found in nowhere namespace.\n"


def test_get_nodes_with_missing_status(hub: Hub) -> None:
    """A node that never reported shows Unknown and <none> columns, in table and wide form."""
    node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: edge-9\n"
    assert run("apply", "-f", "-", hub=hub, stdin=node).stdout == "node/edge-9 created\n"
    table = lines_of(run("get", "no", hub=hub).stdout)
    assert table[0] == ["NAME", "STATUS", "AGE", "VERSION"]
    assert [table[1][0], table[1][1], table[1][3]] == ["edge-9", "Unknown", "<none>"]
    wide = lines_of(run("get", "nodes", "-o", "wide", hub=hub).stdout)
    assert wide[0][-6:] == ["LAST-HEARTBEAT", "CPU", "MEMORY", "DISK", "CACHE", "LAST-OUTAGE"]
    assert wide[1][-6:] == ["<none>"] * 6


# -- describe ------------------------------------------------------------------------


def test_describe_device(applied: Hub) -> None:
    """describe shows a device's metadata, model, node and desired values in readable form."""
    result = run("describe", "device", "thermo", hub=applied)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for expected in (
        "Name:              thermo",
        "Namespace:         default",
        "Labels:            site=plant-3",
        "Model:             thermostat",
        "Node:              edge-1",
        "Protocol:          modbus",
    ):
        assert expected in text
    assert ["target", "20", "-", "-", "-"] in lines_of(text)


def test_describe_model_and_node(applied: Hub) -> None:
    """describe works for models (property details) and nodes (status, resources)."""
    model = run("describe", "dm", "thermostat", hub=applied).stdout
    temp = next(row for row in lines_of(model) if row and row[0] == "temp")
    assert temp[:7] == ["temp", "INT", "ReadOnly", "degree", "celsius", "-", "100"]
    run("apply", "-f", "-", hub=applied, stdin="kind: Node\nmetadata: {name: edge-1}\n")
    node = run("describe", "node", "edge-1", hub=applied)
    assert node.returncode == 0
    assert "Status:            Unknown" in node.stdout
    assert "Resources:" in node.stdout


# -- twins ---------------------------------------------------------------------------


def test_twin_set_then_get(applied: Hub) -> None:
    """twin set changes desired values (adding new properties) and twin get shows them."""
    result = run("twin", "set", "thermo", "target=21", "mode=eco", hub=applied)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "device/thermo twin updated (target=21, mode=eco)\n"

    table = lines_of(run("twin", "get", "thermo", hub=applied).stdout)
    assert table == [
        ["PROPERTY", "DESIRED", "REPORTED", "OBSERVED-DESIRED", "UPDATED"],
        ["target", "21", "-", "-", "-"],
        ["mode", "eco", "-", "-", "-"],
    ]
    as_json = json.loads(run("twin", "get", "thermo", "-o", "json", hub=applied).stdout)
    assert as_json == {
        "device": "default/thermo",
        "twins": {
            "target": {
                "desired": "21",
                "reported": None,
                "observedDesired": None,
                "reportedAt": None,
            },
            "mode": {
                "desired": "eco",
                "reported": None,
                "observedDesired": None,
                "reportedAt": None,
            },
        },
    }
    device = applied.request("GET", "/api/v1/namespaces/default/devices/thermo")[1]
    assert device["spec"]["properties"][0]["visitors"]["protocolName"] == "modbus"

    again = run("twin", "set", "thermo", "target=21", hub=applied)
    assert again.stdout == "device/thermo twin updated (target=21)\n", "a re-assert is a write"


def test_twin_set_usage_and_hub_errors(applied: Hub) -> None:
    """A malformed PROP=VALUE is a usage error; a value the hub refuses is its one-line reason."""
    assert_one_error(run("twin", "set", "thermo", "target", hub=applied), 2, '"target"')
    assert_one_error(run("twin", "set", "thermo", "=21", hub=applied), 2, "names no property")
    assert_one_error(run("twin", "set", "thermo", "target=a b", hub=applied), 1, "desired.value")
    assert_one_error(
        run("twin", "set", "nope", "target=1", hub=applied), 1, 'Device "nope" not found'
    )


# -- delete --------------------------------------------------------------------------


def test_delete_by_name_and_by_file(applied: Hub, manifest: Path) -> None:
    """delete removes objects and says so; a missing one is an error unless --ignore-not-found."""
    gone = run("delete", "device", "thermo", hub=applied)
    assert (gone.returncode, gone.stdout) == (0, "device/thermo deleted\n")
    assert applied.request("GET", "/api/v1/namespaces/default/devices/thermo")[0] == 404

    assert_one_error(run("delete", "device", "thermo", hub=applied), 1, "not found")
    quiet = run("delete", "device", "thermo", "--ignore-not-found", hub=applied)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")

    by_file = run("delete", "-f", str(manifest), hub=applied)
    assert by_file.returncode == 1  # the device is already gone
    assert by_file.stdout == "devicemodel/thermostat deleted\n"
    assert len(by_file.stderr.splitlines()) == 1


# -- errors --------------------------------------------------------------------------


def test_unknown_kind_and_missing_object(hub: Hub) -> None:
    """An unknown kind is a usage error listing the known ones; a missing object says not found."""
    assert_one_error(run("get", "pods", hub=hub), 2, 'unknown resource type "pods"', "devices")
    assert_one_error(
        run("get", "device", "nope", hub=hub),
        1,
        'Device "nope" not found in namespace "default"',
    )
    assert_one_error(run("describe", "node", "nope", hub=hub), 1, 'Node "nope" not found')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hub_down_is_one_line() -> None:
    """With no hub listening, every command says how to fix it in one line and exits 1."""
    url = f"http://127.0.0.1:{free_port()}"
    result = run("get", "devices", hub=url)
    line = assert_one_error(result, 1)
    assert line == (
        f"edgeward: cannot reach the hub at {url}: connection refused "
        "(is cloudhub running? set --hub or EDGEWARD_HUB)"
    )
    assert_one_error(run("apply", "-f", "-", hub=url, stdin=MANIFEST), 1, "connection refused")


def test_hub_flag_overrides_environment(hub: Hub) -> None:
    """--hub works before or after the command and wins over EDGEWARD_HUB."""
    dead = f"http://127.0.0.1:{free_port()}"
    assert run("--hub", hub.api, "get", "devices", hub=dead).returncode == 0
    assert run("get", "devices", "--hub", hub.api, hub=dead).returncode == 0
    assert_one_error(run("--hub", "hub:10002", "get", "devices"), 2, 'bad hub URL "hub:10002"')


def test_silent_server_times_out() -> None:
    """A hub that accepts but never answers gives a timeout line, not a hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = run("--timeout", "0.5", "get", "devices", hub=url)
    assert_one_error(result, 1, f"the hub at {url} did not answer within 0.5s")


@pytest.fixture
def not_a_hub() -> Iterator[str]:
    """A web server that answers every request with an HTML page."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>router login</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_non_json_answer_is_one_line(not_a_hub: str) -> None:
    """Pointing --hub at some other web server says so instead of failing to parse."""
    assert_one_error(run("get", "nodes", hub=not_a_hub), 1, "non-JSON response", "text/html")


def test_help_on_every_command() -> None:
    """Every command has --help with examples."""
    for command in (
        [],
        ["get"],
        ["describe"],
        ["apply"],
        ["delete"],
        ["twin"],
        ["twin", "set"],
        ["twin", "get"],
        ["token"],
        ["token", "create"],
        ["token", "list"],
        ["token", "delete"],
    ):
        result = run(*command, "--help")
        assert result.returncode == 0, command
        assert "examples:" in result.stdout, command
    version = run("--version")
    assert version.stdout.startswith("edgeward ")


# -- watch ---------------------------------------------------------------------------


class Watch:
    """``edgeward ARGS`` left running; its stdout lines are read with a deadline."""

    def __init__(self, hub: Hub, *args: str) -> None:
        env = {**os.environ, "EDGEWARD_HUB": hub.api, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [EDGEWARD, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float = 10.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s") from None

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: returns the exit status and stderr."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.stderr is not None
        return self.proc.returncode, self.proc.stderr.read()


def test_watch_prints_table_then_changes(applied: Hub) -> None:
    """get -w prints the table, then a row for a change made after it started; Ctrl-C exits 130."""
    watch = Watch(applied, "get", "devices", "-w", "-o", "wide")
    try:
        assert watch.next_line().split()[:2] == ["NAME", "NODE"]
        assert watch.next_line().split()[0] == "thermo"
        assert run("twin", "set", "thermo", "target=23", hub=applied).returncode == 0
        row = watch.next_line()
        assert row.split()[0] == "thermo"
        assert row.split()[5] == "target=23"
        run("apply", "-f", "-", hub=applied, stdin="kind: Device\nmetadata: {name: hygro}\n")
        assert watch.next_line().split()[0] == "hygro"  # no repeated header
    finally:
        code, stderr = watch.interrupt()
    assert code == 130
    assert stderr == ""


def test_watch_json_events(applied: Hub) -> None:
    """get -w -o json prints one JSON watch event per line, starting with the current objects."""
    watch = Watch(applied, "get", "device", "thermo", "-w", "-o", "json")
    try:
        first = json.loads(watch.next_line())
        assert first["type"] == "ADDED"
        assert first["object"]["metadata"]["name"] == "thermo"
        run("twin", "set", "thermo", "target=24", hub=applied)
        changed = json.loads(watch.next_line())
        assert changed["type"] == "MODIFIED"
        assert changed["object"]["spec"]["properties"][0]["desired"]["value"] == "24"
        run("delete", "device", "thermo", hub=applied)
        assert json.loads(watch.next_line())["type"] == "DELETED"
    finally:
        code, _ = watch.interrupt()
    assert code == 130


def test_watch_reports_a_lost_hub(applied: Hub) -> None:
    """A watch whose hub dies ends with one line naming the hub and exit 1, not a hang."""
    watch = Watch(applied, "get", "devices", "-w")
    watch.next_line()
    watch.next_line()
    applied.kill()
    wait_for(lambda: watch.proc.poll() is not None, 10, "the watch to end")
    assert watch.proc.returncode == 1
    assert watch.proc.stderr is not None
    stderr = watch.proc.stderr.read()
    # "lost the connection" once the watch is open; "cannot reach" if the kill came first
    assert stderr.startswith(
        ("edgeward: lost the connection to the hub at ", "edgeward: cannot reach the hub at ")
    ), stderr
    assert len(stderr.splitlines()) == 1
