"""Usage errors of both daemons: one line `<prog>: error: <what>` on stderr and exit code 2, as argparse's own.

Never a usage dump, never a traceback, never through the logger (it is not set up
before the flags are read). Imports nothing of the project.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")

EXIT_USAGE = 2  # argparse's and the shells' convention for a command-line mistake


class UsageError(Exception):
    """A flag or environment value the user must fix; the message is one line."""


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake raises UsageError (one line) instead of printing the usage and exiting."""

    def error(self, message: str) -> NoReturn:
        """argparse's hook for a bad command line."""
        raise UsageError(message)


def flag_value(flag: str, parse: Callable[[str], T], text: str) -> T:
    """parse(text); a ValueError (edgecommon's QuantityError, AddressError) becomes a UsageError naming the flag."""
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def report_usage_error(prog: str, exc: UsageError) -> int:
    """Print `<prog>: error: <what>` to stderr; return the exit code."""
    print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
    return EXIT_USAGE
