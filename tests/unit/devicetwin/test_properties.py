"""Hypothesis: any input is handled, every refusal is documented, twins stay valid and converge."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from devicetwin import DeviceTwin, Outcome, check_value, handle_message
from devicetwin.values import TWIN_TYPES, value_ok
from tests.unit.devicetwin.support import NODE, T0, Edge, device, model, wire

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DEVICES = ("default/a", "default/b", "plant/a")
KEYS = ("temp", "hum", "Temp", "mode")
VALUES = ("", "1", "-5", "1.5", "true", "false", "on", "x y", "9223372036854775808", "1e400", "NaN")
TYPE_NAMES = ("", "string", "int", "integer", "float", "boolean", "double")
STATES = ("online", "OFFLINE", "ok", "Unknown", "unhealthy", "DISCONNECTED", "sleeping", "")

# The spec's reasons and ours, with the topic each is answered on ("" for no reply).
EMPTY_ID = "$hw/events/device//twin/update/result"
UPDATE_REASONS = {
    (400, "Unmarshal update request body failed, please check the request"): EMPTY_ID,
    (400, "Update twin error, key:twin does not exist"): EMPTY_ID,
    (
        400,
        "The key of twin must only include upper or lowercase letters, number, english, "
        "and special letter - _ . , : / @ # and the length of key should be less than 128 bytes",
    ): EMPTY_ID,
    (
        400,
        "The value of twin must only include upper or lowercase letters, number, english, "
        "and special letter - _ . , : / @ # and the length of value should be less than 512 bytes",
    ): EMPTY_ID,
    (400, "Update twin error, expected and actual must carry a value"): EMPTY_ID,
    (404, "update rejected due to the device is not existed"): "{D}/twin/update/result",
    (400, "the value is not int or integer"): "{D}/twin/update/result",
    (400, "the value is not float"): "{D}/twin/update/result",
    (400, "the bool value must be true or false"): "{D}/twin/update/result",
    (400, "the value type is not allowed"): "{D}/twin/update/result",
    (400, "Update twin error, a device may have at most 1000 twins"): "{D}/twin/update/result",
    (
        400,
        "Update twin error, the device's twins would take more than 1048576 bytes",
    ): "{D}/twin/update/result",
}
GET_REASONS = {
    (400, "Unmarshal get request body failed, please check the request"): "{D}/twin/get/result",
    (404, "Device {id} not found while getting twin"): "{D}/twin/get/result",
}
STATE_REASONS = {
    (400, "Unmarshal state update request body failed, please check the request"): "",
    (
        400,
        "the state must be online, ok, offline, disconnected, unhealthy or unknown (any case)",
    ): "{D}/state/update/result",
    (404, "Device {id} not found while updating state"): "",
}
MEMBERSHIP_REASONS = {
    (
        400,
        "Unmarshal membership get request body failed, please check the request",
    ): f"$hw/events/node/{NODE}/membership/get/result",
}


def dev_topic(device_id: str) -> str:
    return f"$hw/events/device/{device_id}"


# ---- strategies ----------------------------------------------------------------------------

twin_value = st.one_of(
    st.none(),
    st.just({}),
    st.builds(lambda v: {"value": v}, st.sampled_from(VALUES)),
    st.builds(lambda v: {"value": v, "metadata": {"timestamp": 3}}, st.sampled_from(VALUES)),
)
patch = st.fixed_dictionaries(
    {},
    optional={
        "expected": twin_value,
        "actual": twin_value,
        "optional": st.one_of(st.none(), st.booleans()),
        "metadata": st.one_of(
            st.none(), st.builds(lambda t: {"type": t}, st.sampled_from(TYPE_NAMES))
        ),
    },
)
update_body = st.builds(
    lambda eid, twins: {"event_id": eid, "timestamp": 0, "twin": twins},
    st.sampled_from(("e1", "e2", "")),
    st.dictionaries(st.sampled_from((*KEYS, "a b")), st.one_of(st.none(), patch), max_size=3),
)
desired = st.one_of(
    st.none(),
    st.sampled_from(("21", "22", "on", "1.5", "true")),
    st.tuples(st.just("21"), st.integers(0, 2)),
)
cloud_device = st.builds(
    lambda ns_name, props, seen: device(
        name=ns_name[1], namespace=ns_name[0], properties=props, status=seen
    ),
    st.sampled_from([tuple(d.split("/")) for d in DEVICES]),
    st.dictionaries(st.sampled_from(KEYS), desired, max_size=3),
    st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from(KEYS),
            st.builds(lambda e: {"cloud": 0, "edge": e}, st.integers(0, 3)),
            max_size=2,
        ),
    ),
)
cloud_model = st.one_of(
    st.none(),
    st.builds(
        lambda types: model(**types),
        st.dictionaries(
            st.sampled_from(KEYS),
            st.sampled_from(("INT", "FLOAT", "DOUBLE", "BOOLEAN", "STRING")),
            max_size=3,
        ),
    ),
)

field_names = st.one_of(
    st.sampled_from(
        (
            "event_id",
            "EVENT_ID",
            "timestamp",
            "twin",
            "Twin",
            "expected",
            "actual",
            "value",
            "Value",
            "metadata",
            "type",
            "optional",
            "state",
            "attributes",
            "expected_version",
            "cloud",
            "edge",
            *KEYS,
        )
    ),
    st.text(max_size=5),
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(VALUES),
        st.text(max_size=8),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(field_names, inner, max_size=4),
    max_leaves=15,
)
payloads = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    update_body.map(lambda v: json.dumps(v).encode()),
)
clean_patch = st.fixed_dictionaries(
    {},
    optional={
        "expected": st.builds(lambda v: {"value": v}, st.sampled_from(("1", "20", "true"))),
        "actual": st.builds(lambda v: {"value": v}, st.sampled_from(("1", "2.5", ""))),
        "metadata": st.builds(lambda t: {"type": t}, st.sampled_from(TYPE_NAMES[:-1])),
    },
)
clean_update = st.builds(
    lambda twins: {"event_id": "e1", "timestamp": 0, "twin": twins},
    st.dictionaries(st.sampled_from(KEYS), st.one_of(st.none(), clean_patch), max_size=3),
)
op = st.one_of(
    st.tuples(
        st.just("update"),
        st.sampled_from(DEVICES),
        st.one_of(clean_update, clean_update, update_body),
    ),
    st.tuples(st.just("get"), st.sampled_from(DEVICES)),
    st.tuples(st.just("state"), st.sampled_from(DEVICES), st.sampled_from(STATES)),
    st.tuples(st.just("membership")),
    st.tuples(st.just("cloud"), cloud_device, cloud_model),
    st.tuples(st.just("remove"), st.sampled_from(DEVICES)),
    st.tuples(st.just("tick")),
)
# every device exists at first; the sequence may remove and re-add them
SETUP = [
    ("cloud", device(name, {"temp": "1"}, ns), None) for ns, name in (d.split("/") for d in DEVICES)
]
ops = st.lists(op, max_size=25).map(lambda steps: SETUP + steps)

state_body = st.builds(
    lambda eid, state: {"event_id": eid, "state": state},
    st.sampled_from(("s1", "")),
    st.sampled_from(STATES),
)
# for each action: well-formed requests often, anything else as often
REQUESTS = {
    "twin/update": st.one_of(
        clean_update.map(lambda v: json.dumps(v).encode()),
        update_body.map(lambda v: json.dumps(v).encode()),
        payloads,
    ),
    "state/update": st.one_of(state_body.map(lambda v: json.dumps(v).encode()), payloads),
    "twin/get": st.one_of(st.just(b'{"event_id": "g1"}'), payloads),
    "membership": payloads,
}
topics = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda d, s: f"{dev_topic(d)}/{s}",
        st.sampled_from((*DEVICES, "thermo", "", "default/")),
        st.sampled_from(("twin/update", "twin/get", "state/update", "twin/cloud_updated", "x")),
    ),
    st.sampled_from(
        (
            f"$hw/events/node/{NODE}/membership/get",
            "$hw/events/node//membership/get",
            "$hw/events/upload/x",
            "SYS/dis/upload_records",
        )
    ),
)


# ---- the run and its invariants ------------------------------------------------------------


def run(edge: Edge, step: tuple[Any, ...]) -> Outcome:
    kind = step[0]
    if kind == "update":
        return edge.mqtt(f"{dev_topic(step[1])}/twin/update", step[2])
    if kind == "get":
        return edge.mqtt(f"{dev_topic(step[1])}/twin/get", {"event_id": "g"})
    if kind == "state":
        return edge.mqtt(f"{dev_topic(step[1])}/state/update", {"event_id": "s", "state": step[2]})
    if kind == "membership":
        return edge.mqtt("$hw/events/node/any/membership/get", {"event_id": "m"})
    if kind == "cloud":
        meta = step[1]["metadata"]
        return edge.cloud(step[1], step[2], device_id=f"{meta['namespace']}/{meta['name']}")
    if kind == "remove":
        return edge.cloud(None, device_id=step[1])
    edge.now_ms += 1000
    return Outcome()


def keys_anywhere(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(keys_anywhere(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_anywhere(v) for v in value))
    return set()


def check_device(device: DeviceTwin) -> None:
    assert DeviceTwin.from_dict(wire(device.to_dict())) == device
    for twin in device.twins.values():
        assert twin.type in TWIN_TYPES
        if twin.deleted:
            assert twin.expected is None and twin.actual is None
        for value in (twin.expected, twin.actual):
            if value is not None:
                assert value_ok(value.value) and check_value(twin.type, value.value) is None


def check_step(before: dict[str, DeviceTwin], edge: Edge, outcome: Outcome) -> None:
    for device_id, old in before.items():
        new = edge.devices.get(device_id)
        if new is None:
            continue
        for key, was in old.twins.items():
            now = new.twins[key]  # twins are never dropped, only soft-deleted
            assert now.type == was.type
            assert not (was.optional is False and now.optional is True)
            for a, b in (
                (was.expected_version, now.expected_version),
                (was.actual_version, now.actual_version),
            ):
                assert b.cloud >= a.cloud and b.edge >= a.edge
    for stored in edge.devices.values():
        check_device(stored)
    for message in outcome.publish:
        payload = wire(message.payload)
        assert not keys_anywhere(payload) & {"expected_version", "actual_version", "version"}
        device_id = "/".join(message.topic.split("/")[3:5])
        stored = edge.devices.get(device_id)
        if message.topic.endswith("/twin/get/result") and "twin" in payload:
            assert stored is not None
            assert set(payload["twin"]) == {k for k, t in stored.twins.items() if not t.deleted}
        if message.topic.endswith("/twin/update/delta"):
            assert stored is not None
            live = {k: t for k, t in stored.twins.items() if not t.deleted}
            assert set(payload["twin"]) <= set(live)
            for key, expected in payload["delta"].items():
                twin = live[key]
                assert twin.expected is not None and twin.expected.value == expected != ""
                assert twin.actual is None or twin.actual.value != expected


@SETTINGS
@given(ops)
def test_any_sequence_keeps_every_twin_valid(steps: list[tuple[Any, ...]]) -> None:
    """Versions never go down, types never change, optional never returns, deleted twins hide."""
    edge = Edge()
    for step in steps:
        before = dict(edge.devices)
        outcome = run(edge, step)
        if outcome.error is not None and step[0] != "cloud":
            assert edge.devices == before and outcome.reports == ()
        check_step(before, edge, outcome)


@SETTINGS
@given(ops, st.sampled_from(KEYS))
def test_replicas_converge_and_last_cloud_write_wins(
    steps: list[tuple[Any, ...]], key: str
) -> None:
    """Two edges fed the same sequence end equal; a last cloud write leaves expected = desired."""
    one, two = Edge(), Edge()
    last_writer: dict[tuple[str, str], str] = {}
    for step in steps:
        before = dict(one.devices)
        assert run(one, step) == run(two, step)
        for device_id, new in one.devices.items():
            old = before.get(device_id)
            for k, twin in new.twins.items():
                was = old.twins.get(k) if old is not None else None
                cloud = 0 if was is None else was.expected_version.cloud
                edge = 0 if was is None else was.expected_version.edge
                if twin.expected_version.cloud > cloud:
                    last_writer[(device_id, k)] = "cloud"
                elif twin.expected_version.edge > edge:
                    last_writer[(device_id, k)] = "edge"
    assert one.devices == two.devices
    assert one.published == two.published and one.outbox == two.outbox
    for (device_id, k), writer in last_writer.items():
        twin = one.devices.get(device_id, DeviceTwin(id="", name="", namespace="")).twins.get(k)
        if writer == "cloud" and twin is not None and twin.cloud_desired is not None:
            assert twin.expected is not None and twin.expected.value == twin.cloud_desired[0]
            assert not twin.deleted
    # one more cloud write with a fresh identity, and nothing after it
    for device_id, current in list(one.devices.items()):
        namespace, name = device_id.split("/")
        twin = current.twins.get(key)
        value = {"string": "zz", "int": "7", "float": "7.5", "boolean": "true"}[
            twin.type if twin is not None else "string"
        ]
        one.cloud(device(name, {key: (value, "fresh")}, namespace), device_id=device_id)
        written = one.devices[device_id].twins[key]
        assert written.expected is not None and written.expected.value == value
        assert written.cloud_desired == (value, "fresh") and not written.deleted


@SETTINGS
@given(topics, payloads)
def test_handle_message_never_raises(topic: str, payload: bytes) -> None:
    """Any topic with any bytes gives an Outcome, never an exception."""
    edge = Edge()
    edge.cloud(device("a", {"temp": "1"}), model(temp="INT"), device_id="default/a")
    outcome = handle_message(
        topic, payload, edge.ctx(), edge.devices.get, lambda: list(edge.devices.values())
    )
    assert isinstance(outcome, Outcome)
    for message in outcome.publish:
        wire(message.payload)
    for report in outcome.reports:
        wire(report.body)


def documented(reasons: dict[tuple[int, str], str], device_id: str, outcome: Outcome) -> None:
    """The outcome's error is one of ``reasons`` and is answered on its topic (or not at all)."""
    error = outcome.error
    assert error is not None
    key = (
        error.code,
        error.reason.replace(device_id, "{id}", 1) if "Device " in error.reason else error.reason,
    )
    assert key in reasons, key
    topic = reasons[key].replace("{D}", dev_topic(device_id))
    assert [p.topic for p in outcome.publish] == ([topic] if topic else [])
    assert outcome.updated == () and outcome.reports == ()


@settings(SETTINGS, max_examples=300)
@given(
    # updates have the most ways to fail: draw them most often
    st.sampled_from(("twin/update",) * 3 + ("twin/get", "state/update", "membership")),
    st.sampled_from(("default/a", "default/a", "default/ghost")),
    st.data(),
)
def test_every_payload_is_accepted_or_refused_as_documented(
    action: str, device_id: str, data: st.DataObject
) -> None:
    """Every body is either answered normally or refused with a documented code and reason."""
    payload = data.draw(REQUESTS[action])
    edge = Edge()
    edge.cloud(device("a", {"temp": "1"}), model(temp="INT"), device_id="default/a")
    edge.forget()
    if action == "membership":
        outcome = edge.mqtt("$hw/events/node/x/membership/get", payload)
        reasons = MEMBERSHIP_REASONS
        accepted = f"$hw/events/node/{NODE}/membership/get/result"
    else:
        outcome = edge.mqtt(f"{dev_topic(device_id)}/{action}", payload)
        reasons = {"twin/update": UPDATE_REASONS, "twin/get": GET_REASONS}.get(
            action, STATE_REASONS
        )
        accepted = f"{dev_topic(device_id)}/{action}/result"
    if outcome.error is not None:
        event(f"refused {outcome.error.code} {outcome.error.reason[:30]}")
        documented(reasons, device_id, outcome)
    else:
        event(f"accepted {action}")
        assert outcome.publish[0].topic == accepted
        assert "code" not in outcome.publish[0].payload
        assert outcome.publish[0].payload["timestamp"] == T0
