"""What the CLI prints: ages, sizes, tables per kind, describe and twin views."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.cli import columns
from edgeward.cli.client import HubClient, status_message
from edgeward.cli.describe import describe
from edgeward.cli.errors import UsageError
from edgeward.cli.output import (
    age,
    dig,
    human_bytes,
    parse_millis,
    render_table,
    short_duration,
    truncate,
)
from edgeward.cli.twin import parse_assignments, twin_rows, twin_summary, with_desired
from edgeward.kinds import DEVICE, DEVICE_MODEL, KINDS, NODE

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
CREATED = "2027-01-15T07:57:00Z"  # three minutes before NOW


def device(**spec: object) -> dict:
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "thermo", "namespace": "plant-3", "creationTimestamp": CREATED},
        "spec": spec,
    }


def node(status: dict) -> dict:
    return {
        "kind": "Node",
        "metadata": {"name": "edge-1", "creationTimestamp": CREATED},
        "status": status,
    }


# -- ages and sizes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (45, "45s"),
        (59.9, "59s"),
        (60, "1m"),
        (3599, "59m"),
        (3600, "1h"),
        (86399, "23h"),
        (86400, "1d"),
        (5 * 86400 + 7, "5d"),
        (400 * 86400, "1y"),
        (-0.5, "0s"),
        (-30, "<invalid>"),
    ],
)
def test_short_duration(seconds: float, shown: str) -> None:
    """Ages read like kubectl's: one unit, rounded down; a timestamp from the future is flagged."""
    assert short_duration(seconds) == shown


def test_age_of_timestamps() -> None:
    """AGE comes from an RFC 3339 timestamp; missing or unreadable ones show <none>."""
    assert age(CREATED, NOW) == "3m"
    assert age("2027-01-15T07:59:15+00:00", NOW) == "45s"
    assert age(None, NOW) == "<none>"
    assert age("yesterday", NOW) == "<none>"
    assert age(12, NOW) == "<none>"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1Ki"),
        (512 * 1024**2, "512Mi"),
        (int(1.2 * 1024**3), "1.2Gi"),
        (int(7.6 * 1024**3), "7.6Gi"),
        (int(15.56 * 1024**3), "15.6Gi"),
        (250 * 1024**3, "250Gi"),
        (3 * 1024**6, "3072Pi"),
        (-1, None),
        ("1Gi", None),
        (None, None),
        (True, None),
    ],
)
def test_human_bytes(value: object, shown: str | None) -> None:
    """Byte counts show in binary units with at most one decimal; non-numbers are not guessed."""
    assert human_bytes(value) == shown


def test_parse_millis_accepts_ints_and_digit_strings() -> None:
    """Twin timestamps arrive as milliseconds, as a number or a string."""
    assert parse_millis(1_800_000_000_000) == NOW
    assert parse_millis("1800000000000") == NOW
    assert parse_millis("soon") is None
    assert parse_millis(None) is None
    assert parse_millis(False) is None


def test_truncate() -> None:
    """Long list cells are cut with "..." and never exceed their limit."""
    assert truncate("short", 10) == "short"
    assert truncate("a" * 20, 10) == "aaaaaaa..."
    assert len(truncate("a" * 200, 48)) == 48


def test_render_table_aligns_columns() -> None:
    """Columns line up under their headers, separated by three spaces, no trailing blanks."""
    text = render_table(["NAME", "AGE"], [["a", "3m"], ["longer-name", "45s"]])
    assert text == "NAME          AGE\na             3m\nlonger-name   45s\n"


# -- table columns -------------------------------------------------------------------


def test_device_columns_with_everything() -> None:
    """A device row shows node, model and age; wide adds the property count and desired values."""
    dev = device(
        nodeName="edge-1",
        deviceModelRef={"name": "thermostat"},
        properties=[
            {"name": "target", "desired": {"value": "21"}},
            {"name": "mode", "desired": {"value": "eco"}},
            {"name": "temp"},
        ],
    )
    assert columns.headers(DEVICE) == ["NAME", "NODE", "MODEL", "AGE"]
    assert columns.row(DEVICE, dev, NOW) == ["thermo", "edge-1", "thermostat", "3m"]
    assert columns.headers(DEVICE, wide=True)[-4:] == ["PROPERTIES", "DESIRED", "STATE", "SYNCED"]
    assert columns.row(DEVICE, dev, NOW, wide=True)[-4:] == [
        "3",
        "target=21,mode=eco",
        "-",
        "pending",
    ]


@pytest.mark.parametrize(
    ("twins", "synced"),
    [
        ([], "pending"),
        ([{"propertyName": "target", "observedDesired": {"value": "21"}}], "no"),
        (
            [
                {
                    "propertyName": "target",
                    "observedDesired": {"value": "21"},
                    "reported": {"value": "19"},
                }
            ],
            "no",
        ),
        (
            [
                {
                    "propertyName": "target",
                    "observedDesired": {"value": "21"},
                    "reported": {"value": "21"},
                }
            ],
            "yes",
        ),
        (
            [
                {
                    "propertyName": "target",
                    "observedDesired": {"value": "20"},
                    "reported": {"value": "21"},
                }
            ],
            "pending",
        ),
    ],
)
def test_synced_column_tells_whether_the_device_reached_its_desired_values(
    twins: list[dict[str, Any]], synced: str
) -> None:
    """SYNCED is pending until the edge holds the desired value, no until the device reports
    it, and yes once every desired value is reported."""
    dev = device(properties=[{"name": "target", "desired": {"value": "21"}}])
    dev["status"] = {"twins": twins, "state": "online"}
    assert columns.row(DEVICE, dev, NOW, wide=True)[-2:] == ["online", synced]


def test_device_columns_with_nothing() -> None:
    """A device with no spec shows <none> in each missing column, not an error."""
    dev = {"metadata": {"name": "bare"}}
    assert columns.row(DEVICE, dev, NOW, wide=True) == [
        "bare",
        "<none>",
        "<none>",
        "<none>",
        "0",
        "<none>",
        "-",
        "-",
    ]


def test_desired_column_is_truncated() -> None:
    """Many desired values are cut to a readable width ending in "..."."""
    props = [{"name": f"prop{i}", "desired": {"value": "x" * 10}} for i in range(10)]
    cell = columns.row(DEVICE, device(properties=props), NOW, wide=True)[5]
    assert cell.endswith("...")
    assert len(cell) == columns.LIST_LIMIT


def test_all_namespaces_adds_a_namespace_column() -> None:
    """-A puts NAMESPACE first for namespaced kinds and leaves nodes alone."""
    assert columns.headers(DEVICE, all_namespaces=True)[0] == "NAMESPACE"
    assert columns.row(DEVICE, device(), NOW, all_namespaces=True)[:2] == ["plant-3", "thermo"]
    assert "NAMESPACE" not in columns.headers(NODE, all_namespaces=True)


def test_device_model_columns() -> None:
    """A model shows its property count; wide lists each property's type."""
    model = {
        "metadata": {"name": "thermostat", "creationTimestamp": CREATED},
        "spec": {"properties": [{"name": "temp", "type": "INT"}, {"name": "label"}]},
    }
    assert columns.row(DEVICE_MODEL, model, NOW) == ["thermostat", "2", "3m"]
    assert columns.row(DEVICE_MODEL, model, NOW, wide=True)[-1] == "temp:INT,label:-"


FULL_NODE_STATUS = {
    "conditions": [{"type": "Ready", "status": "True"}],
    "nodeInfo": {"agentVersion": "0.1.0"},
    "lastHeartbeatTime": "2027-01-15T07:59:57Z",
    "capacity": {"cpu": 4, "memoryBytes": int(7.6 * 1024**3), "diskBytes": 64 * 1024**3},
    "usage": {
        "cpuPercent": 12.4,
        "memoryBytes": int(1.2 * 1024**3),
        "diskBytes": int(20.5 * 1024**3),
    },
    "cache": {"state": "Synced", "revision": 12},
    "outages": [
        {"start": "2027-01-14T04:00:00Z", "end": "2027-01-15T07:12:00Z", "durationSeconds": 11520}
    ],
}


def test_node_columns_with_everything() -> None:
    """A node row shows readiness and agent version; wide adds heartbeat age and resource use."""
    n = node(FULL_NODE_STATUS)
    assert columns.headers(NODE, wide=True) == [
        "NAME",
        "STATUS",
        "AGE",
        "VERSION",
        "LAST-HEARTBEAT",
        "CPU",
        "MEMORY",
        "DISK",
        "CACHE",
        "LAST-OUTAGE",
    ]
    assert columns.row(NODE, n, NOW, wide=True) == [
        "edge-1",
        "Ready",
        "3m",
        "0.1.0",
        "3s",
        "12%/4",
        "1.2Gi/7.6Gi",
        "20.5Gi/64Gi",
        "Synced",
        "3h12m, 48m ago",
    ]


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        ({"conditions": [{"type": "Ready", "status": "True"}]}, "Ready"),
        ({"conditions": [{"type": "Ready", "status": "False"}]}, "NotReady"),
        ({"conditions": [{"type": "Ready", "status": "Unknown"}]}, "NotReady"),
        ({"conditions": [{"type": "DiskPressure", "status": "True"}]}, "NotReady"),
        ({"conditions": []}, "Unknown"),
        ({}, "Unknown"),
    ],
)
def test_node_status(status: dict, shown: str) -> None:
    """STATUS is Ready only when the Ready condition is "True"; no conditions at all is Unknown."""
    assert columns.node_status(node(status)) == shown


def test_node_columns_with_partial_status() -> None:
    """A node that reported only some figures shows what it has and - or <none> for the rest."""
    n = node({"capacity": {"cpu": "2", "memoryBytes": 1024**3}, "usage": {"memoryBytes": "lots"}})
    assert columns.row(NODE, n, NOW, wide=True)[1:] == [
        "Unknown",
        "3m",
        "<none>",
        "<none>",
        "-/2",
        "-/1Gi",
        "<none>",
        "<none>",
        "<none>",
    ]


def test_label_is_kind_slash_name() -> None:
    """-o name and every message name objects as kind/name."""
    assert columns.label(DEVICE, device()) == "device/thermo"
    assert columns.label(DEVICE_MODEL, {"metadata": {"name": "m"}}) == "devicemodel/m"
    assert columns.label(NODE, {}) == "node/<none>"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "metadata",
                    "spec",
                    "status",
                    "name",
                    "properties",
                    "desired",
                    "value",
                    "conditions",
                    "type",
                    "capacity",
                    "usage",
                    "twins",
                    "reported",
                    "cpu",
                    "creationTimestamp",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(obj=JSON, kind=st.sampled_from(KINDS))
def test_any_object_formats_without_error(obj: object, kind: object) -> None:
    """Whatever shape a hub sends, rows, describe and twin views print instead of crashing."""
    cells = columns.row(kind, obj, NOW, wide=True, all_namespaces=True)
    assert len(cells) == len(columns.headers(kind, wide=True, all_namespaces=True))
    assert all(isinstance(c, str) and "\n" not in c for c in cells)
    assert isinstance(describe(kind, obj, NOW), str)
    twin_rows(obj, NOW)
    json.dumps(twin_summary(obj))


# -- describe ------------------------------------------------------------------------


def test_describe_device_shows_desired_and_reported() -> None:
    """describe device lists metadata, model, node and per-property desired/reported values."""
    dev = device(
        nodeName="edge-1",
        deviceModelRef={"name": "thermostat"},
        properties=[{"name": "target", "desired": {"value": "21"}}],
    )
    dev["metadata"].update(labels={"site": "plant-3", "floor": "2"}, resourceVersion="17")
    dev["status"] = {
        "twins": [
            {
                "propertyName": "target",
                "reported": {"value": "20", "metadata": {"timestamp": "1799999990000"}},
                "observedDesired": {"value": "21"},
            }
        ]
    }
    text = describe(DEVICE, dev, NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["Name:", "thermo"]
    assert "Namespace:         plant-3" in lines
    assert "Labels:            floor=2" in lines
    assert "                   site=plant-3" in lines
    assert "Created:           2027-01-15T07:57:00Z (3m ago)" in lines
    assert "Resource Version:  17" in lines
    assert "Model:             thermostat" in lines
    assert "Node:              edge-1" in lines
    row = next(line for line in lines if line.strip().startswith("target"))
    assert row.split() == ["target", "21", "20", "21", "10s"]


def test_describe_node_shows_conditions_resources_and_info() -> None:
    """describe node lists conditions with times, capacity against usage, and node info."""
    status = {
        **FULL_NODE_STATUS,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "EdgecoreReady",
                "message": "edgecore is posting status",
                "lastTransitionTime": CREATED,
                "lastHeartbeatTime": "2027-01-15T07:59:57Z",
            }
        ],
    }
    text = describe(NODE, node(status), NOW)
    assert "Namespace:" not in text
    assert "Status:            Ready" in text
    assert "Last Heartbeat:    2027-01-15T07:59:57Z (3s ago)" in text
    assert "EdgecoreReady" in text and "edgecore is posting status" in text
    memory = next(line for line in text.splitlines() if line.strip().startswith("memory"))
    assert memory.split() == ["memory", "7.6Gi", "1.2Gi"]
    assert "Node Info:         agentVersion=0.1.0" in text


def test_describe_shows_who_last_changed_the_object() -> None:
    """The hub's last-changed-by annotation gets its own line, with the age of the change;
    a value not ending in a time is shown as it is, and none means no line."""
    dev = device(nodeName="edge-1")
    assert "Last changed by" not in describe(DEVICE, dev, NOW)
    annotation = "edgeward.io/last-changed-by"
    dev["metadata"]["annotations"] = {annotation: "token:abc123 at 2027-01-15T07:59:00Z"}
    assert (
        "Last changed by:   token:abc123 at 2027-01-15T07:59:00Z (1m ago)"
        in describe(DEVICE, dev, NOW).splitlines()
    )
    dev["metadata"]["annotations"] = {annotation: "token:abc123 (node gw-1) at yesterday"}
    assert (
        "Last changed by:   token:abc123 (node gw-1) at yesterday"
        in describe(DEVICE, dev, NOW).splitlines()
    )


def test_describe_bare_objects() -> None:
    """An object with nothing but a name still describes, with <none> where fields are missing."""
    for kind in KINDS:
        text = describe(kind, {"metadata": {"name": "x"}}, NOW)
        assert text.startswith("Name:")
        assert "<none>" in text


# -- twins ---------------------------------------------------------------------------


def test_twin_rows_merge_desired_and_reported() -> None:
    """twin get shows spec properties first, then properties only the edge reported."""
    dev = device(properties=[{"name": "target", "desired": {"value": "21"}}, {"name": "temp"}])
    dev["status"] = {
        "twins": [
            {
                "propertyName": "temp",
                "reported": {"value": "19.5", "metadata": {"timestamp": 1799999940000}},
            },
            {"propertyName": "humidity", "reported": {"value": "40"}},
        ]
    }
    assert twin_rows(dev, NOW) == [
        ["target", "21", "-", "-", "-"],
        ["temp", "-", "19.5", "-", "1m"],
        ["humidity", "-", "40", "-", "-"],
    ]


def test_twin_summary_is_stable_json() -> None:
    """twin get -o json gives scripts {"device": "ns/name", "twins": {prop: {...}}}."""
    dev = device(properties=[{"name": "target", "desired": {"value": "21"}}])
    dev["status"] = {
        "twins": [
            {
                "propertyName": "target",
                "reported": {"value": "20", "metadata": {"timestamp": "1800000000123"}},
                "observedDesired": {"value": "21"},
            }
        ]
    }
    assert twin_summary(dev) == {
        "device": "plant-3/thermo",
        "twins": {
            "target": {
                "desired": "21",
                "reported": "20",
                "observedDesired": "21",
                "reportedAt": "2027-01-15T08:00:00.123Z",
            }
        },
    }


def test_parse_assignments() -> None:
    """PROP=VALUE splits at the first "="; a value may be empty or contain "="."""
    assert parse_assignments(["a=1", "b=", "c=x=y"]) == [("a", "1"), ("b", ""), ("c", "x=y")]


@pytest.mark.parametrize("word", ["target", "=21", ""])
def test_parse_assignments_refuses_bad_words(word: str) -> None:
    """A word without "=" or without a property name is a usage error (exit 2)."""
    with pytest.raises(UsageError) as info:
        parse_assignments(["ok=1", word])
    assert info.value.code == 2


def test_with_desired_sets_adds_and_keeps_the_rest() -> None:
    """twin set changes only desired values (stamped with the time of the write), adds missing
    properties and leaves the input alone."""
    dev = device(
        properties=[
            {
                "name": "target",
                "desired": {"value": "20", "metadata": {"type": "int"}},
                "visitors": {"protocolName": "modbus"},
            }
        ],
        protocol={"protocolName": "modbus"},
    )
    dev["status"] = {"twins": []}
    original = json.loads(json.dumps(dev))
    body = with_desired(dev, [("target", "21"), ("mode", "eco")], stamp_ms=1700000000123)
    assert dev == original
    assert "status" not in body
    assert body["spec"]["protocol"] == {"protocolName": "modbus"}
    assert body["spec"]["properties"] == [
        {
            "name": "target",
            "desired": {"value": "21", "metadata": {"type": "int", "timestamp": "1700000000123"}},
            "visitors": {"protocolName": "modbus"},
        },
        {"name": "mode", "desired": {"value": "eco", "metadata": {"timestamp": "1700000000123"}}},
    ]


# -- messages from the client ----------------------------------------------------------


def test_status_message_adds_causes_the_message_lacks() -> None:
    """A hub Status shows its message; field causes are added only when it does not name them."""
    assert status_message({"message": 'Device "x" not found'}) == 'Device "x" not found'
    invalid = {
        "message": "invalid request",
        "details": {"causes": [{"field": "body", "message": "bad"}, {"message": "worse"}]},
    }
    assert status_message(invalid) == "invalid request: body: bad; worse"
    named = {
        "message": "x is invalid: spec: must be an object",
        "details": {"causes": [{"field": "spec", "message": "must be an object"}]},
    }
    assert status_message(named) == "x is invalid: spec: must be an object"


@pytest.mark.parametrize(
    "url", ["127.0.0.1:10002", "ftp://hub", "http://", "http://hub:port", "http://hub/?x=1"]
)
def test_bad_hub_urls_are_usage_errors(url: str) -> None:
    """A --hub that is not an http(s) URL with a host is refused before any request."""
    with pytest.raises(UsageError) as info:
        HubClient(url)
    assert url in info.value.message


def test_paths_quote_names() -> None:
    """Names and namespaces are quoted into paths, so odd input cannot reach another path."""
    assert HubClient.object_path(DEVICE, "default", "a/../b") == (
        "/api/v1/namespaces/default/devices/a%2F..%2Fb"
    )
    assert HubClient.collection_path(DEVICE, None) == "/api/v1/devices"
    assert HubClient.object_path(NODE, "ignored", "edge-1") == "/api/v1/nodes/edge-1"
    assert dig({"a": [{"b": 1}]}, "a", 0, "b") == 1
