"""Waiting with deadlines: poll a condition (threads or asyncio), run an async scenario, wait for /readyz.

Imports only the standard library; the one place tests wait, so every timeout fails the same way.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class DaemonDied(RuntimeError):
    """A daemon exited while the test expected it to run."""


class Deadline(AssertionError):
    """A condition did not hold within its deadline."""


def wait_for(
    cond: Callable[[], object], timeout: float = 60.0, what: str = "condition", *, interval: float = 0.2,
    max_interval: float | None = None, on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll cond every `interval` until it returns something truthy; raise Deadline with context after timeout.

    With max_interval the pause grows by half each time up to it (for costly conditions such as
    the end-to-end observations). An exception from cond is kept and shown on timeout (a probe
    may fail while a daemon starts), except DaemonDied, which ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last: object = None
    while True:
        try:
            last = cond()
            if last:
                return last
        except DaemonDied:
            raise
        except Exception as e:  # noqa: BLE001 - keep polling; show the last error on timeout
            last_exc = e
        if time.monotonic() > deadline:
            extra = f"\nlast error: {last_exc!r}" if last_exc else f" (last: {last!r})"
            extra += f"\n{on_timeout()}" if on_timeout else ""
            raise Deadline(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)
        if max_interval is not None:
            interval = min(interval * 1.5, max(interval, max_interval))


async def wait_until(predicate: Callable[[], object], *, timeout: float = 20.0, what: str = "condition") -> None:
    """Wait for a condition inside an async scenario, with a deadline (checks every 20 ms)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def run(coro: Coroutine[Any, Any, T], *, timeout: float = 90.0) -> T:
    """Run one async scenario with a hard deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def http_get(port: int, path: str, *, timeout: float = 10.0) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:<port><path>; error statuses are answers, not exceptions."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_ready(port: int, *, alive: Callable[[], object], what: str, timeout: float = 90.0,
               on_timeout: Callable[[], str] | None = None) -> None:
    """Until GET /readyz on `port` answers 200; `alive()` raises DaemonDied if the daemon exited."""
    def ready() -> bool:
        alive()
        return http_get(port, "/readyz", timeout=5)[0] == 200

    wait_for(ready, timeout, f"{what} to answer /readyz 200", on_timeout=on_timeout)
