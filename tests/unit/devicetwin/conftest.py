"""Fixtures of the devicetwin unit tests."""

from __future__ import annotations

import pytest

from tests.unit.devicetwin.support import Edge, device


@pytest.fixture
def edge() -> Edge:
    """An edge with no devices."""
    return Edge()


@pytest.fixture
def thermo(edge: Edge) -> Edge:
    """An edge holding default/thermo, with no twins yet."""
    edge.cloud(device())
    edge.forget()
    return edge
