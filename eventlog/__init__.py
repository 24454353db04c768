"""eventlog: the sequence-numbered log, the materialised view, snapshots and the agent's replica.

Shared by manager and agent. Imports neither kubernetes nor grpc.
"""

from eventlog.digest import digest_of, format_digest, pod_hash
from eventlog.encoding import (
    RECORD_FORMAT,
    canonical_manifest,
    decode_entry,
    decode_event,
    encode_entry,
    encode_event,
    event_offset,
)
from eventlog.errors import (
    CompactedError,
    CorruptRecordError,
    DigestMismatchError,
    DivergedError,
    FormatError,
    LogMismatchError,
    NotAStoreError,
    OffsetOutOfRangeError,
    RoleError,
    StoreError,
    StoreFullError,
)
from eventlog.log import LogReader, LogStore
from eventlog.opening import open_store
from eventlog.records import (
    Appended,
    ApplyResult,
    Change,
    CompactionResult,
    Cursor,
    Event,
    JournalEntry,
    NodeState,
    PodEntry,
    PodKey,
    Snapshot,
    SnapshotCause,
    SnapshotPlan,
    SnapshotReason,
    Source,
    StoreInfo,
)
from eventlog.replica import ReplicaReader, ReplicaStore

__all__ = [name for name in dir() if not name.startswith("_")]
