"""Reconnect delays: exponential growth with full jitter, so agents that lost the manager together do not return together.

The delays grow until the agent makes progress (an apply that committed), not merely until
a stream opens: a failure that repeats after every Welcome (a full disk) must not reconnect
in a tight loop, fetching a full snapshot each time (issue 12). Pure logic; imports nothing
from grpc, kubernetes or the manager.
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
        """Start again from the initial ceiling (after progress: an apply committed, or a long healthy stream)."""
        self.attempt = 0


class ErrorStreak:
    """Failures in a row, so a repeating error is logged once, not once per try.

    `failed` says whether the error is new (log it) and how often the one before it repeated;
    `cleared` ends the streak when the agent made progress.
    """

    def __init__(self) -> None:
        self.error = ""
        self.repeats = 0  # tries after the first that failed with `error`
        self.failures = 0  # tries that failed since the last progress

    def failed(self, error: str) -> tuple[bool, int]:
        """(whether `error` differs from the previous one, how often the previous one repeated)."""
        self.failures += 1
        if error == self.error:
            self.repeats += 1
            return False, 0
        previous_repeats, self.error, self.repeats = self.repeats, error, 0
        return True, previous_repeats

    def cleared(self) -> tuple[int, str, int]:
        """(failures in the streak, its last error, how often that error repeated); the streak starts over."""
        out = (self.failures, self.error, self.repeats)
        self.error, self.repeats, self.failures = "", 0, 0
        return out
