"""Per-object retry with exponential backoff: client-go workqueue's shape for one failing EdgeNode.

Owns the pending retries (key -> latest object and when to retry it) and the per-key
failure count (ItemExponentialFailureRateLimiter: base * 2^failures, capped). A newer event
for a key replaces its pending object; success forgets the key. Pure and clock-injected:
imports nothing of the manager.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Literal

from edgecommon.backoff import exponential

RetryOp = Literal["changed", "deleted"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Delays of one key's retries."""

    base_seconds: float = 0.5
    """First retry: soon, a transient fault (the store busy) is usually gone."""
    max_seconds: float = 300.0
    """Cap: a persistently failing object costs one attempt every five minutes."""

    def delay(self, failures: int) -> float:
        """Delay before retry number `failures` (1-based)."""
        return exponential(initial=self.base_seconds, maximum=self.max_seconds, attempt=failures - 1)


@dataclass(frozen=True, slots=True)
class Retry:
    """One due retry: the object to handle again and how."""

    key: Hashable
    op: RetryOp
    obj: Any
    failures: int


class RetryQueue:
    """Failed objects waiting for their retry; thread-safe."""

    def __init__(self, *, backoff: Backoff = Backoff(), clock: Callable[[], float] = time.monotonic) -> None:
        self._backoff = backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[Hashable, int] = {}
        self._pending: dict[Hashable, tuple[float, RetryOp, Any]] = {}

    def failed(self, key: Hashable, op: RetryOp, obj: Any) -> float:
        """Handling `obj` for `key` raised: schedule it again; return the delay."""
        with self._lock:
            n = self._failures[key] = self._failures.get(key, 0) + 1
            delay = self._backoff.delay(n)
            self._pending[key] = (self._clock() + delay, op, obj)
            return delay

    def forget(self, key: Hashable) -> None:
        """The key was handled (or is gone): no retry, and its backoff starts over."""
        with self._lock:
            self._failures.pop(key, None)
            self._pending.pop(key, None)

    def pending(self) -> set[Hashable]:
        """Keys waiting for a retry."""
        with self._lock:
            return set(self._pending)

    def failures(self, key: Hashable) -> int:
        """Consecutive failures of a key."""
        with self._lock:
            return self._failures.get(key, 0)

    def take_due(self) -> list[Retry]:
        """Remove and return the retries that are due (their failure counts stay until forget)."""
        now = self._clock()
        with self._lock:
            due = [k for k, (at, _, _) in self._pending.items() if at <= now]
            return [Retry(k, (p := self._pending.pop(k))[1], p[2], self._failures.get(k, 0)) for k in due]

    def next_due(self) -> float | None:
        """Seconds until the next retry is due (None: nothing pending)."""
        with self._lock:
            if not self._pending:
                return None
            return max(0.0, min(at for at, _, _ in self._pending.values()) - self._clock())
