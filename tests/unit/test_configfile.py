"""Typed config trees: every problem listed at once, defaults rendered as a loadable YAML file."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudhub.config import HubConfig
from edgecore.config import EdgeConfig, HubLinkConfig
from edgeward.configfile import (
    add_flags,
    build,
    flag_values,
    merged,
    one_of,
    port_number,
    positive,
    read_yaml,
    render_defaults,
    setting,
)
from edgeward.errors import ConfigError


@dataclass(frozen=True)
class LinkSection:
    ping_interval: float = setting(20.0, "Seconds between pings.", positive)
    endpoints: tuple[str, ...] = setting(("ws://127.0.0.1:10000",), "Hub endpoints, in turn.")
    verify_tls: bool = setting(True, "Check the hub's certificate.")


@dataclass(frozen=True)
class SampleConfig:
    name: str = setting("edge-1", "This node's name.")
    workers: int = setting(4, "Worker threads.", positive)
    ratio: float = setting(0.5, "Share of memory for the cache.")
    debug: bool = setting(False, "Log everything.")
    tags: tuple[str, ...] = setting((), "Free-form tags.")
    port: int = setting(10000, "Listening port.", port_number)
    mode: str = setting("fast", "One of fast, slow.", one_of("fast", "slow"))
    hub: LinkSection = setting(LinkSection(), "The link to the hub.")


def problems(cls: type, data: dict[str, Any]) -> list[str]:
    """The problems ConfigError lists for ``data`` (fails the test when it is accepted)."""
    with pytest.raises(ConfigError) as info:
        build(cls, data)
    return info.value.problems


# -- setting ---------------------------------------------------------------------


def test_setting_documents_its_field() -> None:
    """A setting carries its documentation sentence and its check in the field metadata."""
    fields = {f.name: f for f in dataclasses.fields(SampleConfig)}
    assert fields["workers"].metadata["doc"] == "Worker threads."
    assert fields["workers"].metadata["check"] is positive
    assert fields["name"].metadata["check"] is None


def test_setting_refuses_mutable_defaults() -> None:
    """A list or dict default is refused: configs are frozen, use a tuple."""
    with pytest.raises(TypeError):
        setting([], "A list.")
    with pytest.raises(TypeError):
        setting({}, "A dict.")


def test_config_is_frozen() -> None:
    """A built config cannot be changed afterwards."""
    config = build(SampleConfig, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("check", "value", "ok"),
    [
        (positive, 1, True),
        (positive, 0.001, True),
        (positive, 0, False),
        (positive, -1, False),
        (port_number, 0, True),
        (port_number, 65535, True),
        (port_number, 65536, False),
        (port_number, -1, False),
        (one_of("a", "b"), "a", True),
        (one_of("a", "b"), "c", False),
    ],
)
def test_checks(check: Any, value: Any, ok: bool) -> None:
    """The stock checks accept good values and describe bad ones."""
    result = check(value)
    assert (result is None) == ok
    if not ok:
        assert isinstance(result, str) and result


# -- build -----------------------------------------------------------------------


def test_empty_mapping_gives_the_defaults() -> None:
    """An empty file means every setting keeps its default."""
    assert build(SampleConfig, {}) == SampleConfig()


def test_good_data_is_built() -> None:
    """Values of the right types, nested sections included, become the config."""
    config = build(
        SampleConfig,
        {
            "name": "edge-7",
            "workers": 8,
            "ratio": 0.25,
            "debug": True,
            "tags": ["plant-3", "line-1"],
            "port": 0,
            "mode": "slow",
            "hub": {"ping_interval": 5.5, "endpoints": ["wss://hub:10000"], "verify_tls": False},
        },
    )
    assert config == SampleConfig(
        name="edge-7",
        workers=8,
        ratio=0.25,
        debug=True,
        tags=("plant-3", "line-1"),
        port=0,
        mode="slow",
        hub=LinkSection(ping_interval=5.5, endpoints=("wss://hub:10000",), verify_tls=False),
    )


def test_partial_nested_section_keeps_other_defaults() -> None:
    """Setting one field of a section keeps the section's other defaults."""
    config = build(SampleConfig, {"hub": {"ping_interval": 3}})
    assert config.hub == LinkSection(ping_interval=3.0)


def test_int_is_accepted_for_float() -> None:
    """A whole number is a fine value for a float setting, and is stored as a float."""
    config = build(SampleConfig, {"ratio": 1, "hub": {"ping_interval": 7}})
    assert config.ratio == 1.0
    assert isinstance(config.ratio, float)
    assert isinstance(config.hub.ping_interval, float)


def test_a_single_string_is_a_one_item_list() -> None:
    """A list setting given one string holds that string."""
    assert build(SampleConfig, {"tags": "plant-3"}).tags == ("plant-3",)


def test_bool_is_refused_for_numbers() -> None:
    """true/false is not a number, even though Python's bool is an int."""
    found = problems(SampleConfig, {"workers": True, "ratio": False})
    assert found == ["workers: must be a whole number", "ratio: must be a number"]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"workers": 2.5}, "workers: must be a whole number"),
        ({"workers": "4"}, "workers: must be a whole number"),
        ({"workers": None}, "workers: must be a whole number"),
        ({"ratio": "0.5"}, "ratio: must be a number"),
        ({"debug": "yes"}, "debug: must be true or false"),
        ({"debug": 1}, "debug: must be true or false"),
        ({"name": 7}, "name: must be a string"),
        ({"tags": {"a": 1}}, "tags: must be a list"),
        ({"tags": ["ok", 3]}, "tags[1]: must be a string"),
        ({"hub": "ws://hub"}, "hub: must be a mapping"),
        ({"hub": {"verify_tls": "no"}}, "hub.verify_tls: must be true or false"),
        ({"hub": {"endpoints": [None]}}, "hub.endpoints[0]: must be a string"),
    ],
)
def test_wrong_types_are_named_with_their_path(data: dict[str, Any], problem: str) -> None:
    """A wrong-typed value is reported with its dotted path and the type it must have."""
    assert problems(SampleConfig, data) == [problem]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"workers": 0}, "workers: must be greater than 0"),
        ({"port": 70000}, "port: must be a port number (0 to 65535; 0 picks a free one)"),
        ({"mode": "medium"}, "mode: must be one of fast, slow"),
        ({"hub": {"ping_interval": -1}}, "hub.ping_interval: must be greater than 0"),
    ],
)
def test_failing_checks_are_reported(data: dict[str, Any], problem: str) -> None:
    """A value of the right type that fails its check is reported with the check's reason."""
    assert problems(SampleConfig, data) == [problem]


def test_unknown_keys_get_a_did_you_mean_hint() -> None:
    """A setting spelt in camelCase or another case gets a hint naming the real one."""
    found = problems(SampleConfig, {"Workers": 2, "hub": {"pingInterval": 2}})
    assert found == [
        'Workers: unknown setting (did you mean "workers"?)',
        'hub.pingInterval: unknown setting (did you mean "ping_interval"?)',
    ]


def test_unknown_keys_without_a_near_name_get_no_hint() -> None:
    """A setting that resembles nothing is reported as unknown, without a guess."""
    assert problems(SampleConfig, {"colour": "blue"}) == ["colour: unknown setting"]


def test_every_problem_is_listed_at_once() -> None:
    """Wrong types, unknown keys, failed checks and nested problems are all reported together."""
    found = problems(
        SampleConfig,
        {
            "name": ["edge"],
            "workers": -3,
            "ratio": "half",
            "debug": "on",
            "tags": [1, "ok", 2],
            "mode": "turbo",
            "extra": 1,
            "hub": {"ping_interval": 0, "verify_tls": 1, "endpoint": "ws://x", "Endpoints": []},
        },
    )
    assert sorted(found) == sorted(
        [
            "extra: unknown setting",
            "name: must be a string",
            "workers: must be greater than 0",
            "ratio: must be a number",
            "debug: must be true or false",
            "tags[0]: must be a string",
            "tags[2]: must be a string",
            "mode: must be one of fast, slow",
            "hub.endpoint: unknown setting",
            'hub.Endpoints: unknown setting (did you mean "endpoints"?)',
            "hub.ping_interval: must be greater than 0",
            "hub.verify_tls: must be true or false",
        ]
    )


def test_config_error_message_joins_the_problems() -> None:
    """The exception's message lists every problem on one line."""
    with pytest.raises(ConfigError) as info:
        build(SampleConfig, {"workers": 0, "debug": 1})
    assert str(info.value) == "workers: must be greater than 0; debug: must be true or false"


def test_a_non_mapping_document_is_refused() -> None:
    """A config that is not a mapping at all is one problem."""
    assert problems(SampleConfig, ["workers", 4]) == ["config: must be a mapping"]  # type: ignore[arg-type]


def test_non_string_keys_are_reported() -> None:
    """A key YAML read as a number is reported as an unknown setting, not a crash."""
    assert problems(SampleConfig, {1: "x"}) == ["1: unknown setting"]


# -- read_yaml -------------------------------------------------------------------


def test_read_yaml_returns_the_mapping(tmp_path: Path) -> None:
    """A YAML file holding a mapping is read as that mapping."""
    path = tmp_path / "edgecore.yaml"
    path.write_text("node_name: edge-1\nhub:\n  endpoints: [ws://hub:10000]\n")
    assert read_yaml(path) == {"node_name": "edge-1", "hub": {"endpoints": ["ws://hub:10000"]}}


def test_read_yaml_of_a_missing_file(tmp_path: Path) -> None:
    """A missing file is one problem naming the path and the reason."""
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    (problem,) = info.value.problems
    assert str(path) in problem
    assert "No such file" in problem


def test_read_yaml_of_a_directory(tmp_path: Path) -> None:
    """A directory given as the config file is refused with a reason."""
    with pytest.raises(ConfigError) as info:
        read_yaml(tmp_path)
    assert str(tmp_path) in info.value.problems[0]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("node_name: edge-1\nhub:\n  endpoints: [ws://a\nstatus_interval: 3\n", 4),
        ("a: 1\nb: 2\n  c: 3\n", 3),
        ("a: 1\n\tb: 2\n", 2),
    ],
)
def test_read_yaml_of_invalid_yaml_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    """Invalid YAML is one problem naming the file and the line of the error."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert info.value.problems == [f"config {path} line {line} is not valid YAML"]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_read_yaml_of_a_non_mapping(tmp_path: Path, text: str) -> None:
    """A YAML document that is not a mapping is refused."""
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert info.value.problems == [f"config {path} must be a mapping of settings"]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_read_yaml_of_an_empty_file_is_empty(tmp_path: Path, text: str) -> None:
    """An empty file (or only comments) means no settings."""
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    assert read_yaml(path) == {}


# -- render_defaults -------------------------------------------------------------


@pytest.mark.parametrize("cls", [SampleConfig, HubConfig, EdgeConfig])
def test_rendered_defaults_load_back_to_the_defaults(cls: type) -> None:
    """--print-default-config output is YAML that builds exactly the default config."""
    text = render_defaults(cls, "Defaults")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    assert build(cls, data) == cls()


@pytest.mark.parametrize("cls", [SampleConfig, HubConfig, EdgeConfig])
def test_rendered_defaults_show_every_setting_with_its_doc(cls: type) -> None:
    """Every setting appears in the rendered file, preceded by its documentation."""
    text = render_defaults(cls, "Title of the file")
    assert text.startswith("# Title of the file\n")
    lines = text.splitlines()

    def walk(tree: Any, indent: str, start: int) -> None:
        """``start``: the line of the section ``tree`` is (two sections may share names)."""
        for f in dataclasses.fields(tree):
            heads = [
                i
                for i, line in enumerate(lines)
                if i > start and line.startswith(f"{indent}{f.name}:")
            ]
            assert heads, f"{f.name} is not rendered"
            assert lines[heads[0] - 1] == f"{indent}# {f.metadata['doc']}"
            value = getattr(tree, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, indent + "  ", heads[0])

    walk(cls(), "", -1)


def test_rendered_sample_values() -> None:
    """Rendered values are plain YAML: tuples as lists, strings that look like numbers quoted."""

    @dataclass(frozen=True)
    class Tricky:
        count: str = setting("10", "A string that looks like a number.")
        flag: str = setting("yes", "A string YAML 1.1 would read as a bool.")
        empty: str = setting("", "An empty string.")
        hosts: tuple[str, ...] = setting(("a:1", "b:2"), "A list.")
        none: tuple[str, ...] = setting((), "An empty list.")

    data = yaml.safe_load(render_defaults(Tricky, "t"))
    assert data == {"count": "10", "flag": "yes", "empty": "", "hosts": ["a:1", "b:2"], "none": []}


# -- merged and flags ------------------------------------------------------------


def test_merged_lays_overrides_over_sections() -> None:
    """Flags replace single settings and merge into sections without dropping their siblings."""
    base = {"workers": 4, "hub": {"ping_interval": 5, "verify_tls": False}, "tags": ["a"]}
    over = {"workers": 8, "hub": {"ping_interval": 1}, "tags": ["b"], "debug": True}
    assert merged(base, over) == {
        "workers": 8,
        "hub": {"ping_interval": 1, "verify_tls": False},
        "tags": ["b"],
        "debug": True,
    }
    assert base == {"workers": 4, "hub": {"ping_interval": 5, "verify_tls": False}, "tags": ["a"]}


def test_merged_replaces_a_non_mapping_with_a_section() -> None:
    """An override section replaces a base value that is not a mapping."""
    assert merged({"hub": "x"}, {"hub": {"a": 1}}) == {"hub": {"a": 1}}
    assert merged({"hub": {"a": 1}}, {"hub": None}) == {"hub": None}


def test_flags_override_only_what_was_given() -> None:
    """Only the flags a user passed override the file; the rest keep the file's values."""
    names = ("workers", "ratio", "name")
    parser = argparse.ArgumentParser()
    add_flags(parser, SampleConfig, names)
    args = parser.parse_args(["--workers", "9", "--ratio", "0.75"])
    flags = flag_values(args, names)
    assert flags == {"workers": 9, "ratio": 0.75}
    config = build(SampleConfig, merged({"workers": 2, "name": "from-file"}, flags))
    assert (config.workers, config.ratio, config.name) == (9, 0.75, "from-file")


def test_flag_help_shows_doc_and_default() -> None:
    """A flag's help is the setting's documentation and its default."""
    parser = argparse.ArgumentParser()
    add_flags(parser, SampleConfig, ("workers",))
    assert "Worker threads. (default: 4)" in parser.format_help()


# -- the real trees --------------------------------------------------------------


def test_hub_config_defaults() -> None:
    """The hub's defaults are KubeEdge's ports and a SQLite database in its data dir."""
    config = build(HubConfig, {})
    assert (config.api_port, config.edge_port) == (10002, 10000)
    assert config.database_url().startswith("sqlite:///")
    assert config.database_url().endswith("/hub.db")
    url = "postgresql://hub@db/edgeward"
    assert build(HubConfig, {"database": url}).database_url() == url


def test_hub_config_lists_every_problem() -> None:
    """A bad hub config reports each bad setting."""
    found = problems(
        HubConfig,
        {"api_port": 70000, "node_grace_period": 0, "log_level": "loud", "edgePort": 1},
    )
    assert len(found) == 4
    assert any(p.startswith("api_port:") for p in found)
    assert any(p.startswith("node_grace_period:") for p in found)
    assert any(p.startswith("log_level:") for p in found)
    assert 'edgePort: unknown setting (did you mean "edge_port"?)' in found


def test_edge_config_accepts_ws_and_wss_endpoints() -> None:
    """Hub endpoints may be wss:// URLs, several of them; ws:// only when insecure is set."""
    endpoints = ["ws://hub-a:10000", "wss://hub-b.example:10000"]
    config = build(EdgeConfig, {"hub": {"endpoints": endpoints, "insecure": True}})
    assert config.hub.endpoints == ("ws://hub-a:10000", "wss://hub-b.example:10000")
    assert build(EdgeConfig, {}).hub == HubLinkConfig()
    with pytest.raises(ConfigError) as refused:
        build(EdgeConfig, {"hub": {"endpoints": endpoints}})
    assert refused.value.problems == [
        'hub.endpoints: "ws://hub-a:10000" is plain ws://, with no TLS: use the wss:// '
        "endpoint 'edgeward join' wrote, or set hub.insecure (--insecure) for a hub run "
        "--insecure"
    ]


@pytest.mark.parametrize(
    "endpoints",
    [
        ["http://hub:10000"],
        ["https://hub:10000"],
        ["hub:10000"],
        ["ws://"],
        ["ws://hub:10000", "tcp://hub:10000"],
        [],
    ],
)
def test_edge_config_refuses_endpoints_that_are_not_websocket_urls(endpoints: list[str]) -> None:
    """A hub endpoint that is not a ws:// or wss:// URL (or none at all) is refused."""
    (problem,) = problems(EdgeConfig, {"hub": {"endpoints": endpoints}})
    assert problem.startswith("hub.endpoints: ")


def test_edge_config_node_name() -> None:
    """The node name may be empty (the hostname) or a DNS subdomain, nothing else."""
    assert build(EdgeConfig, {"node_name": ""}).node_name == ""
    assert build(EdgeConfig, {"node_name": "edge-1.plant-3"}).node_name == "edge-1.plant-3"
    (problem,) = problems(EdgeConfig, {"node_name": "Edge_1"})
    assert problem.startswith("node_name: ")


def test_edge_config_refuses_a_reconnect_cap_below_the_first_delay() -> None:
    """A reconnect cap below the first delay is refused at start-up, not at the first reconnect."""
    found = problems(EdgeConfig, {"hub": {"reconnect_initial_delay": 60, "reconnect_max_delay": 5}})
    assert any("reconnect" in p for p in found)


@pytest.mark.parametrize("module", ["cloudhub.main", "edgecore.main"])
def test_help_lists_every_flag_even_with_a_percent_sign_in_its_text(
    module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse formats help text with %: "5%" in a setting's doc once made
    ``cloudhub --help`` crash with a TypeError."""
    main = __import__(module, fromlist=["main"])
    with pytest.raises(SystemExit) as stopped:
        main.main(["--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "(default: " in out
