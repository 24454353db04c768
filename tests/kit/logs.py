"""Capturing a process's own loguru lines in a test: each line's level and message.

Imports only loguru; a test asserts on what an operator would read, not on how it is formatted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from loguru import logger


@dataclass(frozen=True)
class LogLine:
    """One logged line: its level name and its formatted message (no traceback)."""

    level: str
    message: str


@contextmanager
def captured_logs(level: str = "DEBUG") -> Iterator[list[LogLine]]:
    """The lines logged at `level` and above while the block runs, in order."""
    lines: list[LogLine] = []
    sink = logger.add(lambda m: lines.append(LogLine(m.record["level"].name, m.record["message"])), level=level)
    try:
        yield lines
    finally:
        logger.remove(sink)
