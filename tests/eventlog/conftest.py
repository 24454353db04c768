"""Fixtures for the eventlog tests (helpers live in storehelpers.py)."""

from __future__ import annotations

import subprocess

import pytest

from storehelpers import kill_group


@pytest.fixture
def procs():
    """Processes a test starts; killed (process group) at teardown whatever happens."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        kill_group(p)
