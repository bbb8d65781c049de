"""Reconnect delays: exponential growth, full jitter, a cap."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeward.backoff import backoff


def first(n: int, delays: Iterator[float]) -> list[float]:
    """The first ``n`` delays of a schedule."""
    return list(itertools.islice(delays, n))


def test_ceilings_double_up_to_the_cap() -> None:
    """With the largest jitter the delays are initial, 2x, 4x … and then the cap forever."""
    delays = first(10, backoff(initial=0.5, factor=2.0, cap=30.0, rand=lambda: 1.0))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_defaults_start_at_half_a_second_and_cap_at_thirty() -> None:
    """The default schedule starts at 0.5 s and never waits more than 30 s."""
    delays = first(20, backoff(rand=lambda: 1.0))
    assert delays[0] == 0.5
    assert max(delays) == 30.0
    assert delays[-1] == 30.0


def test_other_factor() -> None:
    """The growth factor is honoured."""
    assert first(5, backoff(initial=1, factor=3, cap=100, rand=lambda: 1.0)) == [1, 3, 9, 27, 81]


def test_factor_one_is_a_constant_delay() -> None:
    """A factor of 1 gives the same ceiling every time."""
    assert first(4, backoff(initial=2, factor=1, cap=5, rand=lambda: 1.0)) == [2, 2, 2, 2]


def test_cap_equal_to_initial_is_allowed() -> None:
    """A cap equal to the initial delay keeps every delay at that ceiling."""
    assert first(3, backoff(initial=4, factor=2, cap=4, rand=lambda: 1.0)) == [4, 4, 4]


def test_zero_jitter_gives_zero_delays() -> None:
    """With rand() == 0 every delay is zero (full jitter reaches down to nothing)."""
    assert first(12, backoff(rand=lambda: 0.0)) == [0.0] * 12


def test_jitter_scales_the_ceiling() -> None:
    """Each delay is rand() times the current ceiling."""
    assert first(4, backoff(initial=1, factor=2, cap=10, rand=lambda: 0.25)) == [
        0.25,
        0.5,
        1.0,
        2.0,
    ]


def test_generator_never_ends() -> None:
    """The delays go on for as many reconnects as there are."""
    assert len(first(1000, backoff(rand=lambda: 0.5))) == 1000


@settings(max_examples=200)
@given(
    initial=st.floats(min_value=0.001, max_value=100),
    factor=st.floats(min_value=1, max_value=10),
    extra=st.floats(min_value=0, max_value=1000),
    seed=st.integers(0, 2**32),
)
def test_every_delay_is_within_zero_and_its_ceiling(
    initial: float, factor: float, extra: float, seed: int
) -> None:
    """Every delay lies in [0, min(cap, initial * factor**attempt)]."""
    cap = initial + extra
    rng = random.Random(seed)
    ceiling = initial
    for delay in first(40, backoff(initial, factor, cap, rand=rng.random)):
        assert 0 <= delay <= ceiling <= cap
        ceiling = min(cap, ceiling * factor)


def test_seeded_rand_is_reproducible() -> None:
    """The same seeded random source gives the same delays."""
    one = first(10, backoff(rand=random.Random(7).random))
    two = first(10, backoff(rand=random.Random(7).random))
    assert one == two


@pytest.mark.parametrize(
    ("initial", "factor", "cap"),
    [
        (0, 2, 30),  # no initial delay
        (-1, 2, 30),  # negative initial delay
        (1, 0.5, 30),  # shrinking delays
        (1, 0, 30),
        (10, 2, 5),  # cap below the first delay
    ],
)
def test_bad_arguments_raise_value_error(initial: float, factor: float, cap: float) -> None:
    """Arguments that cannot make a growing, capped schedule are refused with ValueError."""
    with pytest.raises(ValueError):
        next(backoff(initial, factor, cap))
