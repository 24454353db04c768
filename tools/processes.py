"""Process groups of the daemons the tools and tests start: one way to kill and reap them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

# Prefix for a child that must die with its parent (a killed test runner leaves no daemon behind).
DEATHSIG = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal a child's process group (it runs in its own session), reap it, then kill what outlived it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    try:  # children of the daemon that outlived it in the group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
