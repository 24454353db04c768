"""One daemon per data dir: an exclusive lock on `<data-dir>/<name>.lock`, held for the life of the process.

The data dir is made private first (files.ensure_private_dir: it holds every manifest).
The lock file holds the owner's pid, so a refused second daemon names the first. The
kernel releases the lock however the process ends. Imports nothing of the project but
edgecommon.files.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edgecommon.files import ensure_private_dir


class LockHeld(Exception):
    """Another process holds the lock; the message is one line naming it."""


def lock_data_dir(data_dir: Path, *, program: str) -> int:
    """Take <data_dir>/<program>.lock exclusively; return its descriptor (keep it open).

    Raises edgecommon.files.PrivacyError for a data dir that cannot be made private,
    OSError when it cannot be created, LockHeld when another `program` holds it.
    """
    ensure_private_dir(data_dir)
    name = program.removeprefix("edge-")  # manager.lock, agent.lock: the names earlier versions used
    fd = os.open(data_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LockHeld(f"another {program} (pid {holder}) is using --data-dir {data_dir}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def unlock(fd: int) -> None:
    """Release the lock (at a clean stop; otherwise the kernel does it)."""
    os.close(fd)
