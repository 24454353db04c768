"""Reconnect delays: exponential growth with full jitter, so agents that lost the manager together do not return together.

Pure logic; imports nothing from grpc, kubernetes or the manager.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays drawn uniformly from [0, min(maximum, initial * 2**attempt)]."""

    def __init__(self, *, initial: float = 0.5, maximum: float = 30.0, rng: Callable[[], float] = random.random) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial} and {maximum}")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng
        self.attempt = 0

    def ceiling(self) -> float:
        """The largest delay the next attempt may wait."""
        return min(self.maximum, self.initial * 2.0 ** min(self.attempt, 64))

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling."""
        delay = self._rng() * self.ceiling()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the initial ceiling (after a stream that worked)."""
        self.attempt = 0
