"""Exponential backoff with jitter, and a streak of failures logged once per distinct error.

One implementation for the agent's reconnects (full jitter, reset only on progress), the
manager's watch loop (jitter around the delay) and restarts after a crash (no jitter).
Agents or watches that failed together spread out instead of returning together. Pure
logic, clock- and random-free but for the injected rng; imports nothing of the project.
"""

from __future__ import annotations

import random
from collections.abc import Callable

FULL_JITTER = (0.0, 1.0)
"""A delay anywhere in [0, ceiling]: the best spread (AWS's "full jitter")."""
AROUND = (0.5, 1.5)
"""A delay in [ceiling/2, 1.5*ceiling]: spread, but never much sooner than the ceiling."""
NO_JITTER = (1.0, 1.0)
"""The ceiling itself."""


def exponential(*, initial: float, maximum: float, attempt: int) -> float:
    """initial * 2**attempt, capped at maximum (attempt counts from 0)."""
    return min(maximum, initial * 2.0 ** min(attempt, 64))


class Backoff:
    """Delays of successive attempts: a ceiling doubling from `initial` up to `maximum`, scaled by a jitter range."""

    def __init__(self, *, initial: float = 0.5, maximum: float = 30.0, jitter: tuple[float, float] = FULL_JITTER,
                 rng: Callable[[], float] = random.random) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial} and {maximum}")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._rng = rng
        self.attempt = 0

    def ceiling(self) -> float:
        """The delay of the next attempt before jitter."""
        return exponential(initial=self.initial, maximum=self.maximum, attempt=self.attempt)

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling."""
        low, high = self.jitter
        delay = self.ceiling() * (low + (high - low) * self._rng())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the initial ceiling (after progress: an apply committed, a list was taken)."""
        self.attempt = 0


class ErrorStreak:
    """Failures in a row, so a repeating error is logged once, not once per try.

    `failed` says whether the error is new (log it) and how often the one before it repeated;
    `cleared` ends the streak when the daemon made progress (not merely when a connection opened).
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
