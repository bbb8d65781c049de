"""Reconnect delays: exponential growth, full jitter, a cap. Pure and seedable."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator


def backoff(
    initial: float = 0.5,
    factor: float = 2.0,
    cap: float = 30.0,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Yield delays in seconds: each uniform in [0, min(cap, initial * factor**attempt)].

    "Full jitter" (AWS architecture blog, 2015): after a hub restart, a fleet's
    reconnects spread over the whole window instead of arriving in waves.
    """
    if initial <= 0 or factor < 1 or cap < initial:
        raise ValueError("backoff needs initial > 0, factor >= 1 and cap >= initial")
    ceiling = initial
    while True:
        yield rand() * ceiling
        ceiling = min(cap, ceiling * factor)
