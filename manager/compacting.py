"""Retention of the event log: compaction by age, size and count, each run exporting what it drops first.

Owns the periodic compaction task, the export before compaction (--export-before-compaction)
and their one-line-per-distinct-error logging. The store does the work in a worker thread;
this module decides when and how far. Imports neither grpc nor kubernetes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from loguru import logger

from eventlog import CompactionResult, LogStore
from eventlog.export import export_file


class RetentionBounds(Protocol):
    """The bounds compaction applies (main's Retention); None means unbounded."""

    @property
    def keep_last(self) -> int | None: ...

    @property
    def max_age_seconds(self) -> float | None: ...

    @property
    def max_bytes(self) -> int | None: ...

    @property
    def enabled(self) -> bool: ...


class Compactor:
    """Applies retention to one store, every interval or when asked; one compaction at a time."""

    def __init__(self, *, store: LogStore, retention: RetentionBounds, export_dir: Path | None = None,
                 on_dropped: Callable[[int], None] | None = None) -> None:
        self._store = store
        self._retention = retention
        self._export_dir = export_dir
        self._on_dropped = on_dropped
        self._running = threading.Lock()  # held while a compaction writes, so stopped() can wait for it
        self._export_error: str | None = None  # last export failure logged (one line per distinct error)
        self._compact_error: str | None = None  # likewise for compaction

    async def run_forever(self, interval: float) -> None:
        """Compact every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.compact_once()

    async def stopped(self) -> None:
        """Wait for a compaction thread that outlived its cancelled task; none starts after this."""
        await asyncio.to_thread(self._running.acquire)

    async def compact_once(self) -> None:
        """Apply retention once: export what it drops first (when asked to), then drop it."""
        r = self._retention
        older = time.time_ns() - int(r.max_age_seconds * 1e9) if r.max_age_seconds is not None else None
        try:
            res = await asyncio.to_thread(self._compact, keep_last=r.keep_last, older_than_ns=older,
                                          max_bytes=r.max_bytes)
        except Exception as exc:
            why = " ".join(str(exc).split())
            if why != self._compact_error:  # one line per distinct error: a full disk fails every interval
                logger.warning("compaction failed: {}", why)
            self._compact_error = why
            return
        self._compact_error = None
        if res is not None and res.dropped:
            if self._on_dropped is not None:
                self._on_dropped(res.dropped)
            logger.info("compaction dropped {} event(s); the log now starts at offset {}",
                        res.dropped, res.first_offset)

    def _compact(self, *, keep_last: int | None, older_than_ns: int | None,
                 max_bytes: int | None) -> CompactionResult | None:
        with self._running:
            first = self._store.first_offset
            cut = self._store.compaction_cut(keep_last=keep_last, older_than_ns=older_than_ns, max_bytes=max_bytes)
            if cut <= first:
                return None
            if self._export_dir is not None and not self._export(self._export_dir, first, cut - 1):
                return None  # nothing is dropped that was not exported first
            return self._store.compact_before(cut)

    def _export(self, export_dir: Path, first: int, last: int) -> bool:
        """Write what compaction is about to drop into the export directory; False when it could not."""
        try:
            path = export_file(self._store, export_dir, first=first, last=last)
        except OSError as exc:
            why = f"{exc.filename or export_dir}: {exc.strerror or exc}"
        except Exception as exc:
            why = " ".join(str(exc).split())
        else:
            if self._export_error is not None:
                logger.info("export before compaction works again")
            self._export_error = None
            logger.info("exported offsets {}..{} to {} before compaction", first, last, path)
            return True
        if why != self._export_error:
            logger.error("cannot export offsets {}..{} before compaction, so nothing is compacted: {}",
                         first, last, why)
        self._export_error = why
        return False
