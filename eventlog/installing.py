"""Replacing a closed store directory by a received copy, so that a crash at any moment leaves one whole store.

Owns the rename dance and its recovery. The store must be closed by its owner
first; nothing here opens a store or knows what the records mean.

The dance, with the parent directory fsynced after each step:
  1. incoming -> <store>.new   (the install is decided: from here on it rolls forward)
  2. <store>  -> <store>.old   (skipped when there is no store yet)
  3. <store>.new -> <store>
  4. remove <store>.old
recover_store_dir finishes whatever step a crash interrupted, so the directory
holds the old store (before step 1) or the new one (after it), never a mix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from eventlog.errors import NotAStoreError

NEW_SUFFIX = ".new"
OLD_SUFFIX = ".old"


def install_store(incoming: str | os.PathLike[str], store_dir: str | os.PathLike[str]) -> None:
    """Make `incoming` (a whole, checked copy, on the same filesystem) the store at `store_dir`, crash-safe.

    The old store is removed; whoever had it open must have closed it.
    """
    src, dest = Path(incoming), Path(store_dir)
    if not (src / "data.mdb").is_file():
        raise NotAStoreError(f"{src}: holds no store (no data.mdb); nothing to install")
    new, old = _sibling(dest, NEW_SUFFIX), _sibling(dest, OLD_SUFFIX)
    if src.resolve() in (new.resolve(), old.resolve(), dest.resolve()):
        raise ValueError(f"{src}: a copy is received under another name than {new.name}, {old.name} or {dest.name}")
    recover_store_dir(dest)  # an earlier install interrupted: finish it before starting another
    _sync_tree(src)  # the copy's bytes are on disk before any name points at them
    _rename(src, new)
    _sync_dir(src.parent)
    _finish(dest, new, old)


def recover_store_dir(store_dir: str | os.PathLike[str]) -> None:
    """Finish an install a crash interrupted (call at start, before opening the store); no-op otherwise."""
    dest = Path(store_dir)
    new, old = _sibling(dest, NEW_SUFFIX), _sibling(dest, OLD_SUFFIX)
    if new.exists():
        _finish(dest, new, old)
    elif old.exists():
        if not dest.exists():  # cannot come from install_store's order; keep the whole store there is
            _rename(old, dest)
            _sync_dir(dest.parent)
        else:
            _remove(old)


def _finish(dest: Path, new: Path, old: Path) -> None:
    """Steps 2 to 4, from wherever a crash left them."""
    if dest.exists():
        if old.exists():  # a crash while removing the previous install's old store
            _remove(old)
        _rename(dest, old)
        _sync_dir(dest.parent)
    _rename(new, dest)
    _sync_dir(dest.parent)
    if old.exists():
        _remove(old)


def _remove(path: Path) -> None:
    shutil.rmtree(path)
    _sync_dir(path.parent)


def _rename(src: Path, dest: Path) -> None:
    """One step of the dance (a seam the crash tests cut)."""
    os.rename(src, dest)


def _sibling(store_dir: Path, suffix: str) -> Path:
    return store_dir.with_name(store_dir.name + suffix)


def _sync_tree(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _sync_dir(path)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
