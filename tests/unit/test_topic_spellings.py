"""devicetwin imports nothing of ours, so it spells the report topics, the twin alphabets and
the limits the hub enforces itself; these tests hold each copy equal to the original."""

from __future__ import annotations

from devicetwin import limits, outcome, values
from edgeward import kinds, protocol, storable


def test_report_topics_are_spelled_alike_on_both_sides() -> None:
    """The edge's twin reports use exactly the topics the hub has handlers for."""
    assert outcome.TWIN_REPORTED == protocol.TOPIC_TWIN_REPORTED
    assert outcome.DEVICE_STATE == protocol.TOPIC_DEVICE_STATE
    assert outcome.UPLOAD == protocol.TOPIC_UPLOAD


def test_twin_alphabets_are_the_same_on_both_sides() -> None:
    """A key or value the edge accepts from a mapper is one the hub accepts in a Device."""
    assert values.TWIN_KEY.pattern == kinds.TWIN_KEY.pattern
    assert values.TWIN_VALUE.pattern == kinds.TWIN_VALUE.pattern


def test_the_edge_refuses_exactly_what_the_hub_could_not_take() -> None:
    """A mapper's update is refused at the edge by the same limits the hub applies to the
    report it produces, so nothing answered to a mapper is dropped by the hub."""
    assert limits.MAX_TWINS == storable.MAX_TWINS
    assert limits.MAX_REPORT_BYTES == storable.MAX_REPORT_BYTES


def test_the_mapper_sdk_sends_only_states_edgecore_takes() -> None:
    """Every state the SDK lets a mapper set is one the twin rules accept."""
    from devicetwin.engine import STATES
    from edgeward.mapper.payloads import DEVICE_STATES

    assert set(DEVICE_STATES) == set(STATES)
