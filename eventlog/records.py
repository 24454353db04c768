"""The records both sides keep: events, pod entries, snapshots, cursors.

Frozen and slotted: records are values, compared and hashed, never mutated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, overload

Op = Literal["put", "delete"]
PodKey = tuple[str, str]  # (namespace, name): a pod's identity on its node


@dataclass(frozen=True, slots=True)
class Source:
    """Where a change came from in Kubernetes, so the log can answer "why"."""

    uid: str = ""
    resource_version: str = ""
    generation: int = 0


NO_SOURCE = Source()


@dataclass(frozen=True, slots=True)
class Change:
    """A pod change before the log gives it an offset."""

    node: str
    op: Op
    namespace: str
    name: str
    manifest: bytes | None = None  # canonical JSON, for put only
    source: Source = NO_SOURCE


@dataclass(frozen=True, slots=True)
class Event:
    """One pod change on one node, at its place in the log."""

    offset: int
    time_ns: int
    node: str
    op: Op
    namespace: str
    name: str
    manifest: bytes | None = None
    source: Source = NO_SOURCE

    @property
    def key(self) -> PodKey:
        """The pod this event is about."""
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True, eq=False)
class Appended(Sequence[Event]):
    """What one append wrote: `changes` at consecutive offsets from `first_offset`.

    A sequence of Events built on access, so the append loop makes no record per
    event and a caller that needs only counts, nodes or offsets pays for none.
    After append_records, `records` holds the stored bytes instead (each with its
    own time; `changes` is empty and time_ns 0).
    """

    first_offset: int  # offset of the first event (the head + 1 when nothing was appended)
    time_ns: int
    changes: tuple[Change, ...]
    records: tuple[bytes, ...] = ()

    @property
    def head_offset(self) -> int:
        """Offset of the last event appended (first_offset - 1 when none)."""
        return self.first_offset + len(self) - 1

    @property
    def nodes(self) -> frozenset[str]:
        """The nodes these events are for."""
        if self.records:
            return frozenset(e.node for e in self)
        return frozenset(c.node for c in self.changes)

    def _event(self, i: int) -> Event:
        if self.records:
            from eventlog.encoding import decode_event  # encoding imports this module

            return decode_event(self.records[i])
        c = self.changes[i]
        return Event(self.first_offset + i, self.time_ns, c.node, c.op, c.namespace, c.name, c.manifest, c.source)

    def __len__(self) -> int:
        return len(self.records) or len(self.changes)

    @overload
    def __getitem__(self, i: int) -> Event: ...
    @overload
    def __getitem__(self, i: slice) -> list[Event]: ...
    def __getitem__(self, i: int | slice) -> Event | list[Event]:
        if isinstance(i, slice):
            return [self._event(j) for j in range(len(self))[i]]
        return self._event(range(len(self))[i])

    def __iter__(self) -> Iterator[Event]:
        return (self._event(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, so not hashable like them


@dataclass(frozen=True, slots=True)
class PodEntry:
    """A pod in a view: its current manifest and the offset that set it."""

    namespace: str
    name: str
    offset: int
    manifest: bytes

    @property
    def key(self) -> PodKey:
        """The pod's identity on its node."""
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class NodeState:
    """What a store knows about one node without reading its pods."""

    node: str
    head_offset: int  # newest event for this node (0: none yet)
    digest: int
    pod_count: int
    compacted_through: int = 0  # newest event of this node dropped by compaction


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A node's whole view as of one offset, read in one transaction."""

    log_id: str
    node: str
    offset: int
    digest: int
    pods: tuple[PodEntry, ...]


@dataclass(frozen=True, slots=True, eq=False)
class SnapshotPlan:
    """A snapshot read lazily: the node's head, digest and each pod's view key and offset, as of one transaction.

    Holds keys, not manifests (about 40 bytes a pod), so a stream's memory does not grow with
    the manifests; LogStore.snapshot_entries reads the manifests a chunk at a time.
    """

    log_id: str
    node: str
    offset: int
    digest: int
    keys: tuple[bytes, ...]
    offsets: tuple[int, ...]

    @property
    def pod_count(self) -> int:
        """Pods in the snapshot."""
        return len(self.keys)


class SnapshotReason(StrEnum):
    """Why an agent gets a snapshot instead of events; the value is its metric label (bounded, no offsets)."""

    EMPTY_REPLICA = "empty_replica"  # the agent has never synced
    UNKNOWN_LOG_ID = "unknown_log_id"  # the agent follows another log (this one was replaced)
    BEYOND_HEAD = "beyond"  # the agent claims offsets this log never gave its node
    COMPACTED = "compacted"  # the events after the agent's position were compacted away
    DIGEST_MISMATCH = "digest"  # the agent's replica differs from the log at its position


@dataclass(frozen=True, slots=True)
class SnapshotCause:
    """One snapshot's reason and its words for people (Welcome.reason, logs, Events), offsets included."""

    reason: SnapshotReason
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a replica stands: which log it follows and how far it applied it."""

    log_id: str
    applied_offset: int


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one replica transaction did."""

    applied: int
    skipped: int
    applied_offset: int
    digest: int


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One line of an agent's history: an applied event or an installed snapshot."""

    seq: int
    applied_ns: int
    log_id: str
    event: Event | None = None  # set for an applied event
    snapshot_offset: int = 0  # set for an installed snapshot
    snapshot_digest: int = 0
    snapshot_pods: int = 0


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What a compaction dropped."""

    dropped: int
    first_offset: int


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """Identity and extent of a store, for stats and health."""

    path: str
    role: str
    log_id: str
    format_version: int
    head_offset: int
    first_offset: int
    event_count: int
    size_bytes: int
