"""Device topics in both shapes: the namespaced id, and the bare id (the device's name alone)
that KubeEdge wrote into mappers' configs up to 1.16."""

from __future__ import annotations

import pytest

from devicetwin.topics import BARE_SUBSCRIPTIONS, SUBSCRIPTIONS, device_of, from_bare, to_bare


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (
            "$hw/events/device/modbus-dev/twin/update",
            ("$hw/events/device/plant/modbus-dev/twin/update", "plant/modbus-dev"),
        ),
        (
            "$hw/events/device/modbus-dev/twin/get",
            ("$hw/events/device/plant/modbus-dev/twin/get", "plant/modbus-dev"),
        ),
        (
            "$hw/events/device/modbus-dev/state/update",
            ("$hw/events/device/plant/modbus-dev/state/update", "plant/modbus-dev"),
        ),
        (
            "$hw/events/device/modbus-dev/twin/cloud_updated",
            ("$hw/events/device/plant/modbus-dev/twin/cloud_updated", "plant/modbus-dev"),
        ),
        ("$hw/events/device/default/modbus-dev/twin/update", None),  # namespaced already
        ("$hw/events/device/modbus-dev/twin/update/result", None),  # a reply
        ("$hw/events/device//twin/update", None),  # no id
        ("$hw/events/device/modbus-dev/twin/delete", None),
        ("$hw/events/node/n1/membership/get", None),
        ("$hw/events/upload/x", None),
    ],
)
def test_a_bare_topic_is_read_as_the_namespaced_one(
    topic: str, expected: tuple[str, str] | None
) -> None:
    assert from_bare(topic, "plant") == expected


def test_bare_subscriptions_cover_the_device_actions_and_nothing_the_edge_publishes() -> None:
    """Each bare filter is a namespaced filter with one id level fewer; no reply, delta or
    document the edge publishes (one level more than a request) matches one."""
    assert {f.replace("/+/", "/+/+/", 1) for f in BARE_SUBSCRIPTIONS} <= set(SUBSCRIPTIONS)
    for suffix in ("twin/update/result", "twin/update/delta", "twin/update/document",
                   "twin/get/result", "state/update/result"):  # fmt: skip
        assert from_bare(f"$hw/events/device/thermo/{suffix}", "default") is None


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (
            "$hw/events/device/default/thermo/twin/update/delta",
            ("default/thermo", "twin/update/delta"),
        ),
        ("$hw/events/device/a/b/state/update/result", ("a/b", "state/update/result")),
        ("$hw/events/device//twin/update/result", None),  # the empty-id error topic
        ("$hw/events/device/default//twin", None),
        ("$hw/events/device/default/thermo", None),
        ("$hw/events/node/n1/membership/updated", None),
    ],
)
def test_device_of_a_topic_the_edge_builds(topic: str, expected: tuple[str, str] | None) -> None:
    assert device_of(topic) == expected


def test_to_bare_keeps_the_name_alone() -> None:
    assert (
        to_bare("default/thermo", "twin/update/delta")
        == "$hw/events/device/thermo/twin/update/delta"
    )
    assert to_bare("thermo", "twin/get/result") == "$hw/events/device/thermo/twin/get/result"
