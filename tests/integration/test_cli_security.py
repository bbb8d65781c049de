"""The edgeward CLI against a hub that serves TLS and wants tokens: the real console script,
configured the way an admin is, with the admin.yaml ``cloudhub init`` wrote."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cloudhub.pki import init_pki, pki_paths
from tests.support.procs import Hub

pytestmark = pytest.mark.integration

EDGEWARD = str(Path(sys.executable).parent / "edgeward")
TOKEN = re.compile(r"[0-9a-f]{64}\.[a-z0-9]{6}\.[a-z0-9]{26}")
OWN_VARIABLES = ("EDGEWARD_CONFIG", "EDGEWARD_HUB", "EDGEWARD_TOKEN", "EDGEWARD_CA")

MANIFEST = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: thermostat
spec:
  properties:
    - name: target
      type: INT
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: thermo
spec:
  deviceModelRef:
    name: thermostat
  nodeName: edge-1
  properties:
    - name: target
      desired:
        value: "20"
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One TLS hub for the module, made by ``cloudhub init``; tests keep to their own names."""
    h = Hub(tmp_path_factory.mktemp("secure") / "hub", secure=True)
    h.start()
    try:
        yield h
    finally:
        h.kill()


@pytest.fixture(scope="module")
def admin(hub: Hub) -> dict[str, str]:
    """An admin's environment: admin.yaml as the config; its hub URL names the default port,
    this hub listens on a free one, so EDGEWARD_HUB points there."""
    return {"EDGEWARD_CONFIG": str(hub.data_dir / "admin.yaml"), "EDGEWARD_HUB": hub.api}


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Some other hub's CA."""
    paths = pki_paths(tmp_path_factory.mktemp("other"))
    init_pki(paths, ["localhost"], ["127.0.0.1"])
    return paths.ca_cert


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("manifests") / "thermo.yaml"
    path.write_text(MANIFEST)
    return path


def run(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``edgeward ARGS`` with only the EDGEWARD_* variables in ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in (*OWN_VARIABLES, "EDGEWARD_DEBUG")}
    return subprocess.run(
        [EDGEWARD, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, "HOME": "/nonexistent", **env},
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def one_error(result: subprocess.CompletedProcess[str], code: int, *parts: str) -> str:
    """The command failed with ``code`` and exactly one ``edgeward: ...`` line on stderr."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edgeward: ")
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def create(env: dict[str, str], *args: str) -> str:
    """A new token, as ``token create`` printed it."""
    return ok(run("token", "create", *args, env=env)).strip()


def id_of(token: str) -> str:
    return token.split(".")[-2]


def listing(env: dict[str, str]) -> dict[str, dict[str, object]]:
    items = json.loads(ok(run("token", "list", "-o", "json", env=env)))["items"]
    return {item["id"]: item for item in items}


# -- tokens ----------------------------------------------------------------------------


def test_token_create_list_delete_round_trip(admin: dict[str, str]) -> None:
    """An admin creates a join token, sees it listed (never its secret), revokes it, and
    sees it revoked; an unknown id is one error line and a failing exit status."""
    made = run(
        "token", "create", "--node", "gw-1", "--ttl", "2h", "--description", "press 7", env=admin
    )
    token = ok(made).strip()
    assert TOKEN.fullmatch(token)
    tid = id_of(token)
    expires = listing(admin)[tid]["expires"]
    assert made.stderr == f"created node token {tid} for node gw-1: expires {expires}, single use\n"

    table = ok(run("token", "list", env=admin))
    assert table.splitlines()[0].split() == [
        "ID", "ROLE", "NODE", "STATE", "EXPIRES", "USES", "CREATED-BY", "DESCRIPTION"
    ]  # fmt: skip
    row = next(line.split() for line in table.splitlines() if line.startswith(tid))
    assert row[:4] == [tid, "node", "gw-1", "valid"]
    assert row[4:] == [expires, "single-use", f"token:{id_of(admin_token(admin))}", "press", "7"]
    secret = token.rsplit(".", 1)[1]
    for output in ("json", "yaml"):
        assert secret not in ok(run("token", "list", "-o", output, env=admin))
    assert secret not in table

    assert ok(run("token", "delete", tid, env=admin)) == f"token {tid} revoked\n"
    assert listing(admin)[tid]["state"] == "revoked"

    mixed = run("token", "delete", "nope00", token, env=admin)
    assert mixed.stdout == f"token {tid} revoked\n"  # a revoked token revokes again, quietly
    one_error(mixed, 1, "no token nope00")


def admin_token(admin: dict[str, str]) -> str:
    return yaml.safe_load(Path(admin["EDGEWARD_CONFIG"]).read_text())["token"]


def test_a_captured_token_is_exactly_one_line(admin: dict[str, str]) -> None:
    """``T=$(edgeward token create --node gw-1)`` holds the token and nothing else."""
    env = {**os.environ, **admin}
    for name in ("EDGEWARD_TOKEN", "EDGEWARD_CA", "EDGEWARD_DEBUG"):
        env.pop(name, None)
    shell = subprocess.run(
        ["bash", "-c", f'T=$({EDGEWARD} token create --node gw-1) && printf "%s" "$T"'],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert shell.returncode == 0, shell.stderr
    assert TOKEN.fullmatch(shell.stdout)
    assert "single use" in shell.stderr
    plain = run("token", "create", "--node", "gw-1", env=admin)
    assert TOKEN.fullmatch(plain.stdout.removesuffix("\n"))
    assert plain.stdout.count("\n") == 1


def test_bad_token_options_are_usage_errors(admin: dict[str, str]) -> None:
    """A TTL or a combination the hub would refuse stops before any request (exit 2)."""
    one_error(
        run("token", "create", "--ttl", "1y", env=admin), 2, "--ttl", '"1y" is not a duration'
    )
    one_error(run("token", "create", "--role", "viewer", "--node", "gw-1", env=admin), 2)
    one_error(run("token", "create", "--single-use", "--reusable", env=admin), 2, "not allowed")
    one_error(run("token", env=admin), 2, "token create, list or delete")


# -- roles -----------------------------------------------------------------------------


def test_a_viewer_reads_but_cannot_write(admin: dict[str, str], manifest: Path) -> None:
    """A viewer token gets and describes; apply, delete and token commands are refused with
    the hub's reason, one line, exit 1."""
    ok(run("apply", "-f", str(manifest), env=admin))
    viewer = create(admin, "--role", "viewer", "--description", "dashboard")
    env = {**admin, "EDGEWARD_TOKEN": viewer}
    assert "thermo" in ok(run("get", "devices", env=env))
    assert "Name:              thermo" in ok(run("describe", "device", "thermo", env=env))
    who = f"token:{id_of(viewer)}"
    applied = run("apply", "-f", str(manifest), env=env)
    assert applied.returncode == 1
    assert [line.split(": ", 2)[2] for line in applied.stderr.splitlines()] == [
        f"{who} is a viewer: it may read, not write"
    ] * 2  # one line per document, each naming it
    one_error(run("delete", "device", "thermo", env=env), 1, f"{who} is a viewer")
    one_error(run("twin", "set", "thermo", "target=1", env=env), 1, "is a viewer")
    one_error(run("token", "list", env=env), 1, f"{who} may not manage credentials")
    assert "thermo" in ok(run("get", "devices", env=admin))


def test_a_node_token_reaches_only_its_node(admin: dict[str, str], manifest: Path) -> None:
    """A node token may not read another node's device, nor list."""
    ok(run("apply", "-f", str(manifest), env=admin))
    node = create(admin, "--node", "gw-9", "--reusable")
    env = {**admin, "EDGEWARD_TOKEN": node}
    one_error(run("get", "device", "thermo", env=env), 1, "(node gw-9) may not touch")
    one_error(run("get", "devices", env=env), 1, "may not list or watch devices")


def test_describe_says_who_applied(admin: dict[str, str], manifest: Path) -> None:
    """After an apply by the admin, describe names the admin's token and when."""
    ok(run("apply", "-f", str(manifest), env=admin))
    ok(run("twin", "set", "thermo", "target=23", env=admin))
    text = ok(run("describe", "device", "thermo", env=admin))
    line = next(line for line in text.splitlines() if line.startswith("Last changed by:"))
    assert re.fullmatch(
        rf"Last changed by: +token:{id_of(admin_token(admin))} at \S+Z \(\d+s ago\)", line
    ), line


# -- what goes wrong -------------------------------------------------------------------


def test_no_token_says_how_to_get_one(hub: Hub, tmp_path: Path) -> None:
    """With the CA but no token, the hub's 401 becomes the 'needs a token' line."""
    config = tmp_path / "config.yaml"
    config.write_text(f"hub: {hub.api}\nca_file: {hub.ca}\n")
    line = one_error(run("get", "nodes", "--config", str(config), env={}), 1)
    assert line == (
        f"edgeward: the hub at {hub.api} needs a token: "
        "use --config <admin.yaml> or set EDGEWARD_TOKEN"
    )
    with_ca = {"EDGEWARD_HUB": hub.api, "EDGEWARD_CA": str(hub.ca)}
    assert one_error(run("token", "list", env=with_ca), 1) == line


def test_a_revoked_token_is_refused(admin: dict[str, str], manifest: Path) -> None:
    """A token works until it is revoked, then every command is refused with the reason,
    once: the next document or name would be refused the same way."""
    token = create(admin, "--role", "admin", "--ttl", "10m")
    env = {**admin, "EDGEWARD_TOKEN": token}
    ok(run("get", "nodes", env=env))
    ok(run("token", "delete", id_of(token), env=admin))
    one_error(
        run("get", "nodes", env=env),
        1,
        f"the hub refused the token: token {id_of(token)} was revoked",
        "(it came from EDGEWARD_TOKEN",
    )
    one_error(run("apply", "-f", str(manifest), env=env), 1, "was revoked")
    one_error(run("delete", "device", "a", "b", env=env), 1, "was revoked")
    one_error(run("token", "delete", "a", "b", env=env), 1, "was revoked")


def test_a_bad_token_in_the_config_names_the_file(
    admin: dict[str, str], hub: Hub, tmp_path: Path
) -> None:
    """A refused token from a config file says which file holds it."""
    config = tmp_path / "config.yaml"
    config.write_text(f"hub: {hub.api}\nca_file: {hub.ca}\ntoken: abc123.{'x' * 26}\n")
    one_error(
        run("get", "nodes", env={"EDGEWARD_CONFIG": str(config)}),
        1,
        "the hub refused the token: token abc123 is not known to this hub",
        f"(set EDGEWARD_TOKEN or the token in {config})",
    )


def test_another_hubs_ca_fails_verification(
    admin: dict[str, str], hub: Hub, other_ca: Path, tmp_path: Path
) -> None:
    """A CA that did not sign the hub's certificate: one line naming where the CA came from."""
    from_env = run("get", "nodes", env={**admin, "EDGEWARD_CA": str(other_ca)})
    one_error(
        from_env,
        1,
        f"cannot verify the hub at {hub.api}: ",
        "is the CA file EDGEWARD_CA names the hub's?",
    )
    config = tmp_path / "config.yaml"
    config.write_text(f"hub: {hub.api}\nca_file: {other_ca}\ntoken: {admin_token(admin)}\n")
    one_error(
        run("get", "nodes", "--config", str(config), env={}),
        1,
        f"cannot verify the hub at {hub.api}: ",
        f"is the CA in your config ({config}) the hub's?",
    )
    no_ca = {"EDGEWARD_HUB": hub.api, "EDGEWARD_TOKEN": admin_token(admin)}
    one_error(run("get", "nodes", env=no_ca), 1, "no CA is configured", "set EDGEWARD_CA")


def test_a_name_the_certificate_lacks(tmp_path: Path) -> None:
    """Reaching the hub by a name its certificate does not hold says how to add it."""
    hub = Hub(tmp_path / "hub", "--api-bind", "127.0.0.2", secure=True)  # init named .0.1
    hub.start()
    try:
        assert hub.api.startswith("https://127.0.0.2:")
        env = {"EDGEWARD_CONFIG": str(hub.data_dir / "admin.yaml"), "EDGEWARD_HUB": hub.api}
        one_error(
            run("get", "nodes", env=env),
            1,
            "IP address mismatch",
            "run 'cloudhub init --ip 127.0.0.2' and restart it",
        )
    finally:
        hub.kill()


def test_config_flag_after_the_command_and_config_mistakes(
    admin: dict[str, str], tmp_path: Path
) -> None:
    """--config works after the command like --hub; a missing or broken file is exit 2."""
    config = admin["EDGEWARD_CONFIG"]
    env = {"EDGEWARD_HUB": admin["EDGEWARD_HUB"]}
    ok(run("get", "nodes", "--config", config, env=env))
    ok(run("--config", config, "token", "list", env=env))
    missing = tmp_path / "missing.yaml"
    one_error(run("get", "nodes", "--config", str(missing), env=env), 2, "does not exist")
    broken = tmp_path / "broken.yaml"
    broken.write_text("hub: https://h:1\nsecret: x\n")
    one_error(run("get", "nodes", env={"EDGEWARD_CONFIG": str(broken)}), 2, "unknown setting")


def test_the_default_config_file_is_used(hub: Hub, admin: dict[str, str], tmp_path: Path) -> None:
    """~/.config/edgeward/config.yaml, with nothing else set, is the whole configuration."""
    home = tmp_path / "home"
    path = home / ".config" / "edgeward" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(f"hub: {hub.api}\nca_file: {hub.ca}\ntoken: {admin_token(admin)}\n")
    ok(run("token", "list", env={"HOME": str(home)}))


@pytest.fixture
def header_catcher() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A plain-http server answering an empty NodeList; it keeps each request's headers."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            body = b'{"kind":"NodeList","items":[]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_no_token_is_sent_over_plain_http(
    admin: dict[str, str], header_catcher: tuple[str, list[dict[str, str]]]
) -> None:
    """Only an --insecure hub speaks http, and it reads no token: the token stays home."""
    url, seen = header_catcher
    ok(run("get", "nodes", "--hub", url, env=admin))
    assert seen and all("Authorization" not in headers for headers in seen)


def test_http_to_a_tls_hub_says_try_https(admin: dict[str, str], hub: Hub) -> None:
    url = hub.api.replace("https://", "http://")
    one_error(run("get", "nodes", "--hub", url, env=admin), 1, "try https://")


def test_version_shows_the_client_and_the_hub_it_is_configured_for(
    admin: dict[str, str], hub: Hub
) -> None:
    import edgeward

    text = ok(run("version", env=admin))
    assert text == f"client  {edgeward.__version__}\nhub     {edgeward.__version__} ({hub.api})\n"
    body = json.loads(ok(run("version", "-o", "json", env=admin)))
    assert body == {"client": edgeward.__version__, "hub": {"version": edgeward.__version__,
                                                           "url": hub.api}}  # fmt: skip
    offline = run("version", "--hub", "https://127.0.0.1:1", env=admin)
    assert offline.stdout == f"client  {edgeward.__version__}\n"
    one_error(offline, 1, "cannot reach the hub at https://127.0.0.1:1")
    assert ok(run("version", "--client", "--hub", "https://127.0.0.1:1", env=admin)) == (
        f"client  {edgeward.__version__}\n"
    )
