"""Whether several manager logs hold one history: the same bytes at every offset any two of them retain.

Owns the comparison behind `edge-eventlog compare` and the HA checker. Reads
each store in one read transaction and walks their records side by side, so
memory stays flat however long the logs are. Imports no kubernetes or grpc.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from eventlog.encoding import from_u64
from eventlog.errors import RoleError
from eventlog.log import LogStore
from eventlog.opening import open_store, store_path


@dataclass(frozen=True, slots=True)
class Disagreement:
    """Where two stores stop holding one history."""

    offset: int  # 0 when the stores are of different logs
    paths: tuple[str, str]
    text: str  # one line naming the offset and the stores


@dataclass(frozen=True, slots=True)
class HistoryReport:
    """The result of compare_histories."""

    log_id: str  # of the first store
    stores: tuple[str, ...]
    offsets_compared: int  # offsets retained by two stores or more
    first_disagreement: Disagreement | None

    @property
    def one_history(self) -> bool:
        """True when no two stores disagree."""
        return self.first_disagreement is None


def compare_histories(paths: Sequence[str | os.PathLike[str]]) -> HistoryReport:
    """Compare manager logs (store dirs or manager --data-dirs), read-only; stops at the lowest disagreeing offset."""
    with ExitStack() as stack:
        stores: list[LogStore] = []
        for p in paths:
            store = stack.enter_context(open_store(p, readonly=True))
            if not isinstance(store, LogStore):
                raise RoleError(f"{store_path(p)}: an agent replica; compare reads manager logs")
            stores.append(store)
        names = tuple(str(s.path) for s in stores)
        log_id = stores[0].log_id if stores else ""
        for s in stores[1:]:
            if s.log_id != log_id:
                text = f"{s.path} is log {s.log_id}, {stores[0].path} is log {log_id}: two histories"
                return HistoryReport(log_id, names, 0, Disagreement(0, (names[0], str(s.path)), text))
        readers = [stack.enter_context(s.reader()) for s in stores]
        compared, disagreement = _walk([(str(s.path), r.records()) for s, r in zip(stores, readers)])
        return HistoryReport(log_id, names, compared, disagreement)


def _walk(logs: list[tuple[str, Iterator[tuple[bytes, bytes]]]]) -> tuple[int, Disagreement | None]:
    """Walk the logs' records in offset order; count offsets held twice or more, stop at the first that differs."""
    heads: dict[int, tuple[bytes, bytes]] = {}  # log index -> its next (key, record)
    for i, (_, it) in enumerate(logs):
        item = next(it, None)
        if item is not None:
            heads[i] = item
    compared = 0
    while heads:
        key = min(k for k, _ in heads.values())  # keys are u64(offset): byte order is offset order
        holders = [i for i, (k, _) in heads.items() if k == key]
        if len(holders) > 1:
            compared += 1
            first = holders[0]
            for other in holders[1:]:
                if heads[other][1] != heads[first][1]:
                    a, b = logs[first][0], logs[other][0]
                    offset = from_u64(key)
                    text = f"{a} and {b} hold different records at offset {offset}"
                    return compared, Disagreement(offset, (a, b), text)
        for i in holders:
            item = next(logs[i][1], None)
            if item is None:
                del heads[i]
            else:
                heads[i] = item
    return compared, None
