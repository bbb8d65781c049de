"""How many nodes a replica asks to move in one rebalancing round (cloudhub/rebalance.py)."""

from __future__ import annotations

import pytest

from cloudhub.rebalance import to_move


@pytest.mark.parametrize(
    ("mine", "others", "expected"),
    [
        (6, {"b": 0}, 1),  # a replica joins: one at a time for a small fleet
        (4, {"b": 2}, 1),  # 4 against a share of 3
        (3, {"b": 3}, 0),  # balanced
        (4, {"b": 3}, 0),  # 7 over 2 cannot be even: a share of 4, nothing moves
        (10_000, {"b": 0, "c": 0}, 500),  # two return: 5% of its nodes per round
        (3_400, {"b": 3_300, "c": 3_300}, 0),  # within the slack of a share of 3,334
        (3_600, {"b": 3_200, "c": 3_200}, 180),  # past it: 5% per round, not all 266
        (200, {"b": 190}, 0),  # nothing to gain
        (0, {"b": 10}, 0),  # an empty replica never moves anything
        (10, {}, 0),  # alone: nowhere to move to
    ],
)
def test_a_round_moves_part_of_what_is_over_the_share(
    mine: int, others: dict[str, int], expected: int
) -> None:
    assert to_move(mine, {"a": 99, **others}, "a") == expected


def test_its_own_count_is_taken_from_memory_not_from_its_stale_row() -> None:
    assert to_move(6, {"a": 0, "b": 0}, "a") == 1
