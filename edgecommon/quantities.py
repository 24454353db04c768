"""Durations and sizes as both daemons' flags spell them: one syntax, one parser.

Durations are Go's and Kubernetes' (`90s`, `1h30m`, `250ms`) plus days and weeks
(`7d`, `2w`) for retention; a plain number is seconds. Sizes are Kubernetes quantities
(`512Mi`, `2Gi`, `1G`) or plain bytes. Imports nothing of the project.
"""

from __future__ import annotations

import math
import re

DURATION_UNITS: dict[str, float] = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
}
DURATION_SYNTAX = "a number with a unit (ns, us, ms, s, m, h, d, w), several added up (1h30m), or plain seconds"
SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1, "k": 10**3, "kb": 10**3, "ki": 2**10, "m": 10**6, "mb": 10**6, "mi": 2**20,
    "g": 10**9, "gb": 10**9, "gi": 2**30, "t": 10**12, "tb": 10**12, "ti": 2**40,
}
SIZE_SYNTAX = "bytes, or a number with a unit (Ki, Mi, Gi, Ti; k, M, G, T)"

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w)")
_SIZE = re.compile(r"(\d+)\s*([a-z]*)")


class QuantityError(ValueError):
    """Text that is not a duration or size; the message is one line naming the text."""


def parse_duration(text: str) -> float:
    """Seconds in '90s', '1h30m', '250ms', '7d' or a plain number of seconds; never negative."""
    t = text.strip().lower()
    try:
        value = float(t)
    except ValueError:
        pos, value = 0, 0.0
        for m in _DURATION_PART.finditer(t):
            if m.start() != pos:
                break
            value += float(m.group(1)) * DURATION_UNITS[m.group(2)]
            pos = m.end()
        if not t or pos != len(t):
            raise QuantityError(f"not a duration: {text!r} (use e.g. 90s, 1h30m, 500ms, 7d)") from None
    if value < 0 or not math.isfinite(value):
        raise QuantityError(f"not a duration: {text!r} (must be a finite, non-negative time)")
    return value


def parse_size(text: str) -> int:
    """Bytes in '500Mi', '2G', '1048576'."""
    m = _SIZE.fullmatch(text.strip().lower())
    if not m or m.group(2) not in SIZE_UNITS:
        raise QuantityError(f"not a size: {text!r} (use e.g. 512Mi, 2Gi, 1000000)")
    return int(m.group(1)) * SIZE_UNITS[m.group(2)]
