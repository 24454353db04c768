"""Helpers for the tests of private files: modes, one-line refusals, fixtures borrowed from tests/agent."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.agent.agentproc import error_lines


def mode(path: Path) -> int:
    """Permission bits of a path (not following a final symlink)."""
    return stat.S_IMODE(os.lstat(path).st_mode)


def store_modes(store: Path) -> dict[str, int]:
    """Modes of an LMDB store directory and its two files."""
    return {".": mode(store), "data.mdb": mode(store / "data.mdb"), "lock.mdb": mode(store / "lock.mdb")}


PRIVATE_STORE = {".": 0o700, "data.mdb": 0o600, "lock.mdb": 0o600}


def one_error_line(text: str) -> str:
    """The only error line of a refused start; fails if there are several, none, or a traceback."""
    assert "Traceback" not in text, text
    errs = error_lines(text)
    assert len(errs) == 1, text
    return errs[0]
