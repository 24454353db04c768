"""Which nodes are refused: the `edge.k8s.io/agent-refused: "true"` label on their EdgeNode.

A refused node may not join, renew, fetch a certificate nor open a sync stream, and its
live stream is dropped at once. Fed the EdgeNode watch's items on its thread; read by the
join server's threads, hence the lock. Imports nothing of the project: the sync session reads
the label's name from here.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REFUSED_LABEL = "edge.k8s.io/agent-refused"


@dataclass(frozen=True, slots=True)
class RefusalChange:
    """Nodes refused and nodes let back by one watch item."""

    refused: frozenset[str]
    allowed: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.refused or self.allowed)


def _key_and_refused(obj: Mapping[str, Any]) -> tuple[tuple[str, str], bool] | None:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        return None
    labels = meta.get("labels") if isinstance(meta.get("labels"), Mapping) else {}
    return (str(meta.get("namespace") or ""), meta["name"]), labels.get(REFUSED_LABEL) == "true"


class NodeRefusals:
    """The refused nodes: a node is refused when any EdgeNode of its name carries the label."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refused: set[tuple[str, str]] = set()  # (namespace, name) of labelled EdgeNodes
        self.known = threading.Event()  # set at the first list: before it, no node is known not to be refused

    def is_refused(self, node: str) -> bool:
        """Whether `node` is refused now."""
        with self._lock:
            return any(name == node for _, name in self._refused)

    def listed(self, objects: list[dict[str, Any]]) -> RefusalChange:
        """Take a full list of EdgeNodes; the nodes it refused or let back."""
        with self._lock:
            before = self._names()
            self._refused = {k for k, refused in filter(None, map(_key_and_refused, objects)) if refused}
            self.known.set()
            return self._change(before)

    def changed(self, event_type: str, obj: dict[str, Any]) -> RefusalChange:
        """Take one watch event of an EdgeNode; the nodes it refused or let back."""
        with self._lock:
            before = self._names()
            found = _key_and_refused(obj)
            if found is not None:
                key, refused = found
                if refused and event_type != "DELETED":
                    self._refused.add(key)
                else:
                    self._refused.discard(key)
            return self._change(before)

    def _names(self) -> set[str]:
        return {name for _, name in self._refused}

    def _change(self, before: set[str]) -> RefusalChange:
        after = self._names()
        return RefusalChange(frozenset(after - before), frozenset(before - after))
