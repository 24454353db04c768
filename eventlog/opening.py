"""Opening a store whose kind the caller does not know (the edge-eventlog tool)."""

from __future__ import annotations

import os
from pathlib import Path

import lmdb

from eventlog.errors import NotAStoreError, RoleError
from eventlog.log import LogStore
from eventlog.replica import ReplicaStore

# Where the daemons keep their store inside --data-dir, so tools accept either path.
MANAGER_SUBDIR = "eventlog"
AGENT_SUBDIR = "replica"


def store_path(path: str | os.PathLike[str]) -> Path:
    """The store directory for a path that is a store or a daemon's --data-dir."""
    p = Path(path)
    for sub in (MANAGER_SUBDIR, AGENT_SUBDIR):
        if not (p / "data.mdb").exists() and (p / sub / "data.mdb").exists():
            return p / sub
    return p


def open_store(path: str | os.PathLike[str], *, readonly: bool = True) -> LogStore | ReplicaStore:
    """Open a manager log or an agent replica, whichever is there."""
    p = store_path(path)
    try:
        return LogStore(p, readonly=readonly)
    except RoleError:
        return ReplicaStore(p, readonly=readonly)
    except lmdb.Error as exc:
        raise NotAStoreError(f"{p}: {exc}") from None
