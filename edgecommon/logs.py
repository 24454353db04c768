"""Logging of both daemons: the same flags, levels and line format, to stderr.

Loguru as text for people or one JSON object per line for log shippers. Imports nothing
of the project.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from loguru import logger

LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
TEXT_FORMAT = "{time:YYYY-MM-DDTHH:mm:ss.SSSZZ} {level: <7} {message}"


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    """--log-level (any case) and --log-format, spelled alike in both daemons."""
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LEVELS, metavar="LEVEL",
                        help="trace, debug, info, success, warning, error or critical, any case (default info)")
    parser.add_argument("--log-format", default="text", choices=FORMATS,
                        help="text for people, json (one object per line) for log shippers (default text)")


def setup_logging(*, level: str, fmt: str) -> None:
    """Loguru to stderr at `level`, as text or JSON lines; no variable dumps in tracebacks."""
    logger.remove()
    if fmt == "json":
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stderr, level=level, backtrace=False, diagnose=False, format=TEXT_FORMAT)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    """--log-level and --log-format, as read."""

    level: str
    """A loguru level name, upper case."""
    format: str
    """text or json."""


def log_settings(args: argparse.Namespace) -> LogSettings:
    """The logging flags added by add_logging_flags, as settings."""
    return LogSettings(level=args.log_level, format=args.log_format)


def setup(settings: LogSettings) -> None:
    """setup_logging from settings."""
    setup_logging(level=settings.level, fmt=settings.format)
