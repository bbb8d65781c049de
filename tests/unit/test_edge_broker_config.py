"""The MQTT broker as KubeEdge writes it, in edgecore's config file and on its command line:
what each form sets, and the one-line refusal of anything else."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgecore.main import load_settings, parse_args
from edgeward.errors import ConfigError

BASE = ["--node", "n1", "--hub", "ws://127.0.0.1:1", "--insecure"]


def settings(tmp_path: Path, mqtt: dict[str, object] | None, *flags: str) -> tuple[str, int, bool]:
    args = [*BASE, "--data-dir", str(tmp_path / "data"), *flags]
    if mqtt is not None:
        config = tmp_path / "edgecore.yaml"
        config.write_text(yaml.safe_dump({"mqtt": mqtt}))
        args += ["--config", str(config)]
    cfg = load_settings(parse_args(args)).mqtt
    return cfg.host, cfg.port, cfg.uses_tls


@pytest.mark.parametrize(
    ("broker", "expected"),
    [
        ("tcp://10.0.0.5:1884", ("10.0.0.5", 1884, False)),
        ("mqtt://127.0.0.1:1883", ("127.0.0.1", 1883, False)),
        ("ssl://broker.example", ("broker.example", 8883, True)),
        ("mqtts://broker.example:443", ("broker.example", 443, True)),
        ("broker.example:1885", ("broker.example", 1885, False)),
    ],
)
def test_a_broker_url_in_the_file_or_on_the_command_line(
    tmp_path: Path, broker: str, expected: tuple[str, int, bool]
) -> None:
    assert settings(tmp_path, {"broker": broker}) == expected
    assert settings(tmp_path, None, "--mqtt", broker) == expected


def test_the_command_line_wins_over_the_file(tmp_path: Path) -> None:
    file = {"broker": "ssl://from-file:8883"}
    assert settings(tmp_path, file, "--mqtt", "tcp://from-flag") == ("from-flag", 1883, False)
    assert settings(tmp_path, {"host": "h", "port": 1999}) == ("h", 1999, False)
    assert settings(tmp_path, {"tls_ca_file": "/ca.pem"}) == ("127.0.0.1", 1883, True)


@pytest.mark.parametrize(
    ("mqtt", "flags", "problem"),
    [
        (None, ["--mqtt", "ws://b:9001"], "--mqtt: unsupported broker scheme 'ws'"),
        (None, ["--mqtt", "mqtt://127.0.0.1:1883:1883"], "(an IPv6 address in brackets)"),
        ({"broker": "http://b"}, [], "mqtt.broker: unsupported broker scheme 'http'"),
        ({"broker": "tcp://u:p@b"}, [], "a user name or password does not go in the URL"),
        ({"broker": "tcp://b", "host": "c"}, [], "mqtt.broker: set it or mqtt.host, not both"),
        (
            {"broker": "tcp://b", "tls_ca_file": "/ca.pem"},
            [],
            "mqtt.broker: tcp://b is a broker without TLS, but TLS is set",
        ),
        ({"broker": 5}, [], "mqtt.broker"),
    ],
)
def test_a_bad_broker_is_one_line_at_start(
    tmp_path: Path, mqtt: dict[str, object] | None, flags: list[str], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, mqtt, *flags)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)
