"""devicetwin imports nothing of ours, so it spells the report topics itself."""

from __future__ import annotations

from devicetwin import outcome
from edgeward import protocol


def test_report_topics_are_spelled_alike_on_both_sides() -> None:
    """The edge's twin reports use exactly the topics the hub has handlers for."""
    assert outcome.TWIN_REPORTED == protocol.TOPIC_TWIN_REPORTED
    assert outcome.DEVICE_STATE == protocol.TOPIC_DEVICE_STATE
    assert outcome.UPLOAD == protocol.TOPIC_UPLOAD
