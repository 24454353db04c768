"""Backoff: exponential ceilings, jitter ranges, reset on progress; an error streak logged once per distinct error."""

from __future__ import annotations

import pytest

from edgecommon.backoff import AROUND, FULL_JITTER, NO_JITTER, Backoff, ErrorStreak, exponential


def test_ceilings_double_up_to_the_maximum():
    top = Backoff(initial=0.5, maximum=30.0, rng=lambda: 1.0)
    assert [top.next() for _ in range(9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    top.reset()
    assert top.next() == 0.5
    assert exponential(initial=0.5, maximum=300, attempt=1000) == 300


@pytest.mark.parametrize("jitter, low, high", [(FULL_JITTER, 0.0, 4.0), (AROUND, 2.0, 6.0), (NO_JITTER, 4.0, 4.0)])
def test_jitter_ranges(jitter, low, high):
    def at(r: float) -> float:
        b = Backoff(initial=1.0, maximum=30.0, jitter=jitter, rng=lambda: r)
        b.attempt = 2  # ceiling 4
        return b.next()
    assert (at(0.0), at(1.0)) == (low, high)


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        Backoff(initial=0, maximum=1)
    with pytest.raises(ValueError):
        Backoff(initial=2, maximum=1)


def test_a_streak_says_an_error_once_and_counts_its_repeats():
    s = ErrorStreak()
    assert s.failed("refused") == (True, 0)
    assert s.failed("refused") == (False, 0)
    assert s.failed("refused") == (False, 0)
    assert s.failed("disk full") == (True, 2)  # the new error, and how often the previous one repeated
    assert s.cleared() == (4, "disk full", 0)
    assert s.failed("disk full") == (True, 0)  # after progress, the same error is news again
