"""Where the CLI takes its hub, token and CA from, and the one line each config mistake gets."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from cloudhub.pki import init_pki, pki_paths
from edgeward.cli import config
from edgeward.cli.common import hub_client
from edgeward.cli.config import CliConfig, load
from edgeward.cli.errors import EXIT_USAGE, UsageError

TOKEN = "ab" * 32 + ".k3x9a2.0123456789abcdefghijklmnop"


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real CA certificate, as ``cloudhub init`` makes it."""
    paths = pki_paths(tmp_path_factory.mktemp("hub"))
    init_pki(paths, ["localhost"], ["127.0.0.1"])
    return paths.ca_cert.read_text()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def admin_yaml(path: Path, ca_pem: str, hub: str = "https://hub.example:10002") -> Path:
    """A config the way ``cloudhub init`` writes it (PyYAML, inline CA)."""
    return write(path, yaml.safe_dump({"hub": hub, "ca": ca_pem, "token": TOKEN}, sort_keys=False))


def default_config(home: Path) -> Path:
    return home / ".config" / "edgeward" / "config.yaml"


# -- precedence ------------------------------------------------------------------------


def test_defaults_without_a_file_or_variables(home: Path) -> None:
    """Nothing configured: the local hub over http, no token, the system's CAs."""
    settings = load(None, None, {}, home)
    assert settings == CliConfig(
        "http://127.0.0.1:10002", "default", settings.credentials, file=None
    )
    assert settings.credentials.token is None
    assert settings.credentials.ca_pem is None
    assert load(None, None, {}, None).hub == "http://127.0.0.1:10002"


def test_cloudhub_init_admin_yaml_is_a_config(tmp_path: Path, home: Path, ca_pem: str) -> None:
    """The admin.yaml ``cloudhub init`` writes gives the hub, its CA and the token."""
    path = admin_yaml(tmp_path / "admin.yaml", ca_pem)
    settings = load(None, str(path), {}, home)
    assert (settings.hub, settings.hub_from, settings.file) == (
        "https://hub.example:10002",
        str(path),
        path,
    )
    creds = settings.credentials
    assert (creds.token, creds.token_from) == (TOKEN, str(path))
    assert (creds.ca_pem, creds.ca_from) == (ca_pem.strip(), str(path))


def test_default_file_is_read_when_it_exists(home: Path, ca_pem: str) -> None:
    """~/.config/edgeward/config.yaml is the config when nothing names another."""
    path = admin_yaml(default_config(home), ca_pem)
    assert load(None, None, {}, home).file == path


def test_config_flag_beats_the_variable_which_beats_the_default(
    tmp_path: Path, home: Path, ca_pem: str
) -> None:
    """--config, else EDGEWARD_CONFIG, else the default file."""
    admin_yaml(default_config(home), ca_pem, hub="https://default:1")
    from_env = admin_yaml(tmp_path / "env.yaml", ca_pem, hub="https://env:1")
    from_flag = admin_yaml(tmp_path / "flag.yaml", ca_pem, hub="https://flag:1")
    env = {"EDGEWARD_CONFIG": str(from_env)}
    assert load(None, str(from_flag), env, home).hub == "https://flag:1"
    assert load(None, None, env, home).hub == "https://env:1"
    assert load(None, None, {"EDGEWARD_CONFIG": ""}, home).hub == "https://default:1"


def test_variables_beat_the_file_and_the_hub_flag_beats_all(
    tmp_path: Path, home: Path, ca_pem: str
) -> None:
    """EDGEWARD_HUB, EDGEWARD_TOKEN and EDGEWARD_CA override the file; --hub overrides them."""
    path = write(
        tmp_path / "cfg" / "config.yaml", f"hub: https://file:1\ntoken: {TOKEN}\nca_file: a.pem\n"
    )
    write(tmp_path / "cfg" / "a.pem", ca_pem)
    other_ca = write(tmp_path / "other.pem", ca_pem + "\n")
    env = {
        "EDGEWARD_HUB": "https://env:1",
        "EDGEWARD_TOKEN": " abc123.secret \n",
        "EDGEWARD_CA": str(other_ca),
    }
    settings = load(None, str(path), env, home)
    assert (settings.hub, settings.hub_from) == ("https://env:1", "EDGEWARD_HUB")
    assert (settings.credentials.token, settings.credentials.token_from) == (
        "abc123.secret",
        "EDGEWARD_TOKEN",
    )
    assert (settings.credentials.ca_pem, settings.credentials.ca_from) == (
        ca_pem + "\n",
        "EDGEWARD_CA",
    )
    flagged = load("https://flag:1", str(path), env, home)
    assert (flagged.hub, flagged.hub_from) == ("https://flag:1", "--hub")


def test_empty_variables_count_as_unset(tmp_path: Path, home: Path) -> None:
    """``EDGEWARD_TOKEN=`` does not wipe the file's token (nor the others their settings)."""
    path = write(tmp_path / "c.yaml", f"hub: https://file:1\ntoken: {TOKEN}\n")
    env = {"EDGEWARD_HUB": "", "EDGEWARD_TOKEN": "", "EDGEWARD_CA": ""}
    settings = load(None, str(path), env, home)
    assert (settings.hub, settings.credentials.token) == ("https://file:1", TOKEN)


def test_ca_file_is_relative_to_the_config_and_blank_keys_are_unset(
    tmp_path: Path, home: Path, ca_pem: str
) -> None:
    """ca_file is found beside the config, wherever the CLI runs; an empty key means unset."""
    write(tmp_path / "cfg" / "pki" / "ca.crt", ca_pem)
    path = write(tmp_path / "cfg" / "c.yaml", "ca_file: pki/ca.crt\nca:\ntoken: ''\nhub: ' '\n")
    settings = load(None, str(path), {}, home)
    assert settings.credentials.ca_pem == ca_pem
    assert settings.credentials.token is None
    assert settings.hub_from == "default"
    assert load(None, str(write(tmp_path / "empty.yaml", "")), {}, home).hub_from == "default"


def test_reading_no_file_does_not_import_yaml(tmp_path: Path) -> None:
    """Commands that read no config (and ``--help``) do not pay for PyYAML."""
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from edgeward.cli import config

        config.load(None, None, {{"EDGEWARD_TOKEN": "a.b"}}, Path({str(tmp_path)!r}))
        assert "yaml" not in sys.modules, "yaml was imported"
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# -- mistakes: one line each, exit status 2 ----------------------------------------------


def error_of(action: Callable[[], object]) -> str:
    with pytest.raises(UsageError) as info:
        action()
    assert info.value.code == EXIT_USAGE
    assert "\n" not in info.value.message
    return info.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- hub\n- token\n", "must be a mapping of settings (hub, token, ca, ca_file), not a list"),
        ("just words\n", "must be a mapping of settings (hub, token, ca, ca_file), not a string"),
        ("hub: x\nserver: y\nuser: z\n", "unknown settings server, user (known: hub, token, ca"),
        ("hubb: https://h:1\n", "unknown setting hubb (known:"),
        ("hub: [1, 2]\n", "hub must be a string, not a list"),
        ("token: 12345\n", "token must be a string, not a number"),
        ("ca: {a: 1}\n", "ca must be a string, not a mapping"),
        ("hub: 'unclosed\n", "is not valid YAML (line 2)"),
        ("a: b\n  c: d\n", "is not valid YAML (line 2)"),
        ("ca: not a certificate\n", "ca is not a PEM certificate"),
        (
            "ca: |\n  -----BEGIN CERTIFICATE-----\n  AAAA\n  -----END CERTIFICATE-----\n",
            "ca is not a PEM certificate",
        ),
        ("ca: caf\u00e9\n", "ca is not a PEM certificate"),
        ("ca_file: nowhere.pem\n", "cannot read ca_file "),
        ("ca_file: .\n", "is a directory"),
        ("token: has space\n", "the token in config "),
        ("token: 'abc.def\nx: 1'\n", "cannot be a bearer token"),
        ("hub: " + "[" * 5000 + "\n", "is nested too deeply to be a config"),
    ],
)
def test_config_file_mistakes(tmp_path: Path, home: Path, text: str, expected: str) -> None:
    """Each mistake in a config file is one line naming the file and what is wrong."""
    path = write(tmp_path / "c.yaml", text)
    message = error_of(lambda: load(None, str(path), {}, home))
    assert expected in message
    assert str(path) in message


def test_ca_and_ca_file_together(tmp_path: Path, home: Path, ca_pem: str) -> None:
    write(tmp_path / "ca.pem", ca_pem)
    path = write(tmp_path / "c.yaml", yaml.safe_dump({"ca": ca_pem, "ca_file": "ca.pem"}))
    assert "give ca (inline PEM) or ca_file (a path), not both" in error_of(
        lambda: load(None, str(path), {}, home)
    )


def test_ca_file_that_is_not_pem(tmp_path: Path, home: Path) -> None:
    write(tmp_path / "ca.pem", "hello\n")
    path = write(tmp_path / "c.yaml", "ca_file: ca.pem\n")
    message = error_of(lambda: load(None, str(path), {}, home))
    assert f"ca_file {tmp_path / 'ca.pem'} holds no PEM certificate" in message


def test_unreadable_files(tmp_path: Path, home: Path) -> None:
    """A directory, non-UTF-8 bytes and a huge file are refused with what they are."""
    (tmp_path / "dir.yaml").mkdir()
    assert "is a directory" in error_of(lambda: load(None, str(tmp_path / "dir.yaml"), {}, home))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"hub: caf\xe9\n")
    assert "is not UTF-8 text" in error_of(lambda: load(None, str(latin), {}, home))
    huge = write(tmp_path / "huge.yaml", "# " + "x" * config.MAX_FILE_BYTES + "\n")
    assert "is over 1024 KiB" in error_of(lambda: load(None, str(huge), {}, home))


def test_a_named_file_must_exist_but_the_default_need_not(tmp_path: Path, home: Path) -> None:
    """--config and EDGEWARD_CONFIG name a file that must be there; a missing default is fine."""
    missing = tmp_path / "nope.yaml"
    assert error_of(lambda: load(None, str(missing), {}, home)) == (
        f"config file {missing} (from --config) does not exist"
    )
    env = {"EDGEWARD_CONFIG": str(missing)}
    assert error_of(lambda: load(None, None, env, home)) == (
        f"config file {missing} (from EDGEWARD_CONFIG) does not exist"
    )
    assert load(None, None, {}, home).file is None


def test_a_broken_default_file_is_an_error(home: Path) -> None:
    """The default file is optional, but once there it must be right."""
    write(default_config(home), "hub: [\n")
    assert "is not valid YAML" in error_of(lambda: load(None, None, {}, home))


def test_variable_mistakes(tmp_path: Path, home: Path) -> None:
    """EDGEWARD_CA must name a readable PEM file; EDGEWARD_TOKEN must fit in a header."""
    missing = tmp_path / "nope.pem"
    assert error_of(lambda: load(None, None, {"EDGEWARD_CA": str(missing)}, home)) == (
        f"cannot read the CA file {missing} (EDGEWARD_CA): no such file or directory"
    )
    junk = write(tmp_path / "junk.pem", "junk\n")
    assert error_of(lambda: load(None, None, {"EDGEWARD_CA": str(junk)}, home)) == (
        f"EDGEWARD_CA names {junk}, which holds no PEM certificate"
    )
    message = error_of(lambda: load(None, None, {"EDGEWARD_TOKEN": "a.b\r\nX-Evil: 1"}, home))
    assert message.startswith("the token in EDGEWARD_TOKEN cannot be a bearer token")


def test_bad_hub_url_names_where_it_came_from(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad hub URL from a file or variable says which; a bad --hub needs no such note."""
    path = write(tmp_path / "c.yaml", "hub: hub.example:10002\n")
    for name in ("EDGEWARD_CONFIG", "EDGEWARD_HUB", "EDGEWARD_TOKEN", "EDGEWARD_CA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    args = argparse.Namespace(config=str(path))
    assert error_of(lambda: hub_client(args)) == (
        f'bad hub URL "hub.example:10002": it must start with http:// or https:// (from {path})'
    )
    monkeypatch.setenv("EDGEWARD_HUB", "ftp://x")
    assert error_of(lambda: hub_client(args)).endswith("(from EDGEWARD_HUB)")
    args.hub = "ftp://y"
    assert error_of(lambda: hub_client(args)).endswith("https://")
    client = hub_client(argparse.Namespace(hub="https://h:1", timeout=3.0))
    assert (client.url, client.timeout, client.credentials.token) == ("https://h:1", 3.0, None)
