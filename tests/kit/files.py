"""Files as tests read them: permission bits of paths and LMDB stores; a store opened raw to tamper with it; a log's records."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import lmdb

from eventlog import LogStore

PRIVATE_STORE = {".": 0o700, "data.mdb": 0o600, "lock.mdb": 0o600}


def mode(path: Path) -> int:
    """Permission bits of a path (not following a final symlink)."""
    return stat.S_IMODE(os.lstat(path).st_mode)


def store_modes(store: Path) -> dict[str, int]:
    """Modes of an LMDB store directory and its two files."""
    return {".": mode(store), "data.mdb": mode(store / "data.mdb"), "lock.mdb": mode(store / "lock.mdb")}


def raw_env(path: Path) -> lmdb.Environment:
    """A store's LMDB environment opened directly, to tamper with it (the store must be closed)."""
    return lmdb.open(str(path), max_dbs=8, subdir=True)


def log_records(store: LogStore, *, after: int = 0) -> list[bytes]:
    """A manager log's stored records (framed events) after an offset, in order: what a standby replicates."""
    with store.reader() as r:
        return [v for _, v in r.records(after=after)]
