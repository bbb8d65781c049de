"""Where the CLI finds its hub, token and CA, and the file that holds them.

Each setting is taken from the first place that has it:

1. ``--hub URL`` (the hub only);
2. ``EDGEWARD_HUB``, ``EDGEWARD_TOKEN``, ``EDGEWARD_CA`` (a PEM file's path);
3. the config file: ``--config FILE``, else ``$EDGEWARD_CONFIG``, else
   ``~/.config/edgeward/config.yaml`` when it exists;
4. the defaults: ``http://127.0.0.1:10002``, no token, the system's CAs.

The config file is what ``cloudhub init`` writes as ``<data-dir>/admin.yaml``::

    hub: https://hub.example:10002
    ca: |                  # the hub's CA certificate, inline PEM...
      -----BEGIN CERTIFICATE-----
      ...
    token: <ca sha256>.<id>.<secret>

or ``ca_file: PATH`` (relative to the file's directory) instead of ``ca``.
An empty environment variable counts as unset. PyYAML is imported only when a
file is read, so commands that need no hub (``--help``) stay fast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeward.cli.client import DEFAULT_HUB, Credentials
from edgeward.cli.errors import UsageError

HUB_ENV = "EDGEWARD_HUB"
TOKEN_ENV = "EDGEWARD_TOKEN"
CA_ENV = "EDGEWARD_CA"
CONFIG_ENV = "EDGEWARD_CONFIG"
DEFAULT_CONFIG = Path(".config") / "edgeward" / "config.yaml"  # under the home directory
KEYS = ("hub", "token", "ca", "ca_file")
#: A config file or CA file is a few kilobytes; anything this big is the wrong file.
MAX_FILE_BYTES = 1024 * 1024
# RFC 6750's b64token: what may follow "Bearer " in a header, and nothing that could end it.
_BEARER = re.compile(r"[A-Za-z0-9._~+/=-]+")


@dataclass(frozen=True)
class CliConfig:
    """The settings a command talks to the hub with, and where each came from."""

    hub: str
    hub_from: str  # "--hub", EDGEWARD_HUB, the config file's path or "default"
    credentials: Credentials
    file: Path | None  # the config file read, if any


@dataclass(frozen=True)
class _FileSettings:
    hub: str | None = None
    token: str | None = None
    ca_pem: str | None = None


def load(
    flag_hub: str | None,
    flag_config: str | None,
    env: Mapping[str, str],
    home: Path | None,
) -> CliConfig:
    """The CLI's settings from the flags, ``env`` and the config file; UsageError (one line)
    for a config file or variable that cannot be used."""
    path = _config_path(flag_config, env, home)
    settings = _read_config(path) if path is not None else _FileSettings()
    where = str(path)

    if flag_hub:
        hub, hub_from = flag_hub, "--hub"
    elif env.get(HUB_ENV):
        hub, hub_from = env[HUB_ENV], HUB_ENV
    elif settings.hub:
        hub, hub_from = settings.hub, where
    else:
        hub, hub_from = DEFAULT_HUB, "default"

    token, token_from = settings.token, where if settings.token else None
    if env.get(TOKEN_ENV):
        token, token_from = _token(env[TOKEN_ENV], TOKEN_ENV), TOKEN_ENV

    ca_pem, ca_from = settings.ca_pem, where if settings.ca_pem else None
    if env.get(CA_ENV):
        ca_path = Path(env[CA_ENV]).expanduser()
        ca_pem, ca_from = _pem(_read_text(ca_path, f"the CA file {ca_path} ({CA_ENV})")), CA_ENV
        if ca_pem is None:
            raise UsageError(f"{CA_ENV} names {ca_path}, which holds no PEM certificate")

    credentials = Credentials(token=token, ca_pem=ca_pem, token_from=token_from, ca_from=ca_from)
    return CliConfig(hub, hub_from, credentials, path)


def _config_path(flag: str | None, env: Mapping[str, str], home: Path | None) -> Path | None:
    """The config file to read: a file named by --config or EDGEWARD_CONFIG must exist; the
    default one is read only when it does."""
    for named, by in ((flag, "--config"), (env.get(CONFIG_ENV), CONFIG_ENV)):
        if named:
            path = Path(named).expanduser()
            if not path.exists():
                raise UsageError(f"config file {path} (from {by}) does not exist")
            return path
    if home is not None and (home / DEFAULT_CONFIG).exists():
        return home / DEFAULT_CONFIG
    return None


def _read_config(path: Path) -> _FileSettings:
    import yaml

    text = _read_text(path, f"config {path}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"config {path} is not valid YAML{where}") from None
    except RecursionError:
        raise UsageError(f"config {path} is nested too deeply to be a config") from None
    if data is None:
        return _FileSettings()
    if not isinstance(data, dict):
        raise UsageError(
            f"config {path} must be a mapping of settings ({', '.join(KEYS)}), "
            f"not a {_yaml_type(data)}"
        )
    unknown = [str(key) for key in data if key not in KEYS]
    if unknown:
        raise UsageError(
            f"config {path}: unknown setting{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)} (known: {', '.join(KEYS)})"
        )
    for key, value in data.items():
        if value is not None and not isinstance(value, str):
            raise UsageError(f"config {path}: {key} must be a string, not a {_yaml_type(value)}")
    values = {key: value.strip() for key, value in data.items() if value and value.strip()}
    if "ca" in values and "ca_file" in values:
        raise UsageError(f"config {path}: give ca (inline PEM) or ca_file (a path), not both")
    ca_pem = None
    if "ca" in values:
        ca_pem = _pem(values["ca"])
        if ca_pem is None:
            raise UsageError(f"config {path}: ca is not a PEM certificate")
    elif "ca_file" in values:
        ca_path = path.parent / Path(values["ca_file"]).expanduser()
        ca_pem = _pem(_read_text(ca_path, f"ca_file {ca_path} (from {path})"))
        if ca_pem is None:
            raise UsageError(f"config {path}: ca_file {ca_path} holds no PEM certificate")
    token = _token(values["token"], f"config {path}") if "token" in values else None
    return _FileSettings(values.get("hub"), token, ca_pem)


def _read_text(path: Path, what: str) -> str:
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise UsageError(f"cannot read {what}: {reason}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UsageError(f"{what} is over {MAX_FILE_BYTES // 1024} KiB: is it the right file?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} is not UTF-8 text") from None


def _token(text: str, where: str) -> str:
    token = text.strip()
    if not _BEARER.fullmatch(token):
        raise UsageError(
            f"the token in {where} cannot be a bearer token: it may hold only letters, "
            "digits and . _ ~ + / = -"
        )
    return token


def _pem(text: str) -> str | None:
    """``text`` when it holds at least one PEM certificate OpenSSL can load, else None."""
    import ssl

    if not text.isascii() or "-----BEGIN CERTIFICATE-----" not in text:
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError):
        return None
    return text


def _yaml_type(value: Any) -> str:
    return {
        dict: "mapping",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
    }.get(type(value), type(value).__name__)
