"""The one place that turns records into bytes and back, and that lays out the stores' keys.

Manifests are canonical JSON (orjson, sorted keys, no spaces) so every side
hashes the same bytes for the same pod. Records are a small binary frame: a
fixed struct header then the variable fields, because the log is read and
written hundreds of thousands of times a second and JSON framing would double
the cost. The frame starts with RECORD_FORMAT so a reader can refuse what it
does not know.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from eventlog.errors import CorruptRecordError
from eventlog.records import Event, JournalEntry, PodEntry, Source

RECORD_FORMAT = 1
_OPS = ("put", "delete")
OP_PUT, OP_DELETE = 0, 1
_OP_CODE = {"put": OP_PUT, "delete": OP_DELETE}

# format, offset, time_ns, op, generation, then lengths of node, namespace, name, uid, resourceVersion
_EVENT = struct.Struct(">BQqBqHHHHH")
# format, offset, len(namespace), len(name); the manifest is the rest
_ENTRY = struct.Struct(">BQHH")
# offset, pod hash, then the manifest: the value stored per pod in a view
_VIEW = struct.Struct(">QQ")
_U64 = struct.Struct(">Q")
# kind, applied_ns, len(log_id); then an event, or (offset, digest, pod count) of a snapshot
_JOURNAL = struct.Struct(">BqH")
_JOURNAL_SNAPSHOT = struct.Struct(">QQI")
_NODE = struct.Struct(">QQIQ")  # head_offset, digest, pod_count, compacted_through


def canonical_manifest(obj: Any) -> bytes:
    """Canonical JSON of a manifest: sorted keys, compact, UTF-8."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


# u64(n): big-endian key bytes, so LMDB's byte order is numeric order. The bound
# method itself rather than a wrapper: it runs several times per appended event.
u64 = _U64.pack


def from_u64(b: bytes) -> int:
    """Inverse of u64."""
    return _U64.unpack(b)[0]


def encode_event(e: Event) -> bytes:
    """Frame an event for the log, the journal and the wire."""
    return frame_event(
        e.offset, e.time_ns, _OP_CODE[e.op], e.node.encode(), e.namespace.encode(), e.name.encode(), e.source,
        e.manifest,
    )


def frame_event(
    offset: int, time_ns: int, op: int, node: bytes, namespace: bytes, name: bytes, source: Source,
    manifest: bytes | None,
) -> bytes:
    """encode_event from fields the caller already encoded (the append loop); op is OP_PUT or OP_DELETE."""
    uid, rv = source.uid.encode(), source.resource_version.encode()
    head = _EVENT.pack(
        RECORD_FORMAT, offset, time_ns, op, source.generation,
        len(node), len(namespace), len(name), len(uid), len(rv),
    )
    return b"".join((head, node, namespace, name, uid, rv, manifest or b""))


EventFields = tuple[int, str, str, str, str, "bytes | None"]  # offset, node, op, namespace, name, manifest


def decode_event_fields(b: bytes) -> EventFields:
    """What a view needs of a framed event, without building records (the agent's hot path).

    Raises CorruptRecordError on anything malformed, like decode_event.
    """
    try:
        fmt, offset, _, op, _, ln, lns, lname, luid, lrv = _EVENT.unpack_from(b)
        if fmt != RECORD_FORMAT:
            raise CorruptRecordError(f"record format {fmt} is not {RECORD_FORMAT}")
        i = _EVENT.size
        node = b[i : i + ln].decode(); i += ln
        ns = b[i : i + lns].decode(); i += lns
        name = b[i : i + lname].decode(); i += lname + luid + lrv
        b[i - luid - lrv : i].decode()  # the source must be text too
        if i > len(b) or op > 1:
            raise CorruptRecordError("truncated event record")
    except CorruptRecordError:
        raise
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptRecordError(f"undecodable event record: {exc}") from None
    return offset, node, _OPS[op], ns, name, (b[i:] if op == 0 else None)


def decode_event(b: bytes | memoryview) -> Event:
    """Read a framed event; raises CorruptRecordError on anything malformed."""
    try:
        fmt, offset, time_ns, op, gen, ln, lns, lname, luid, lrv = _EVENT.unpack_from(b)
        if fmt != RECORD_FORMAT:
            raise CorruptRecordError(f"record format {fmt} is not {RECORD_FORMAT}")
        raw = bytes(b)
        i = _EVENT.size
        node = raw[i : i + ln].decode(); i += ln
        ns = raw[i : i + lns].decode(); i += lns
        name = raw[i : i + lname].decode(); i += lname
        uid = raw[i : i + luid].decode(); i += luid
        rv = raw[i : i + lrv].decode(); i += lrv
        if i > len(raw) or op > 1:
            raise CorruptRecordError("truncated event record")
        manifest = raw[i:] if op == 0 else None
    except CorruptRecordError:
        raise
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise CorruptRecordError(f"undecodable event record: {exc}") from None
    return Event(offset, time_ns, node, _OPS[op], ns, name, manifest, Source(uid, rv, gen))


def event_manifest(b: bytes | memoryview) -> bytes | None:
    """The manifest of a framed event without decoding the rest (None for a delete)."""
    try:
        fmt, _, _, op, _, ln, lns, lname, luid, lrv = _EVENT.unpack_from(b)
    except struct.error as exc:
        raise CorruptRecordError(f"undecodable event record: {exc}") from None
    if fmt != RECORD_FORMAT:
        raise CorruptRecordError(f"record format {fmt} is not {RECORD_FORMAT}")
    if op != 0:
        return None
    return bytes(b[_EVENT.size + ln + lns + lname + luid + lrv :])


def event_offset(b: bytes | memoryview) -> int:
    """The offset of a framed event without decoding the rest."""
    return _U64.unpack_from(b, 1)[0]


def encode_entry(p: PodEntry) -> bytes:
    """Frame a pod entry for snapshots on the wire."""
    ns, name = p.namespace.encode(), p.name.encode()
    return b"".join((_ENTRY.pack(RECORD_FORMAT, p.offset, len(ns), len(name)), ns, name, p.manifest))


def decode_entry(b: bytes | memoryview) -> PodEntry:
    """Read a framed pod entry; raises CorruptRecordError on anything malformed."""
    try:
        fmt, offset, lns, lname = _ENTRY.unpack_from(b)
        if fmt != RECORD_FORMAT:
            raise CorruptRecordError(f"record format {fmt} is not {RECORD_FORMAT}")
        raw = bytes(b)
        i = _ENTRY.size
        ns = raw[i : i + lns].decode(); i += lns
        name = raw[i : i + lname].decode(); i += lname
        if i > len(raw):
            raise CorruptRecordError("truncated pod entry")
    except CorruptRecordError:
        raise
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptRecordError(f"undecodable pod entry: {exc}") from None
    return PodEntry(ns, name, offset, raw[i:])


# -- keys: the one place that knows their layout ---------------------------------------
# A view key is node NUL namespace NUL name (LogStore refuses names holding a NUL), so a node's
# pods, and a namespace's within it, are one contiguous key range; a node-index key is node NUL
# u64(offset), so a node's events are one range in offset order; the log and the journal are
# keyed by u64(offset) and u64(seq); the nodes database by the node's name.

KEY_SEP = b"\0"
KEY_SEP_TEXT = KEY_SEP.decode()  # so no node, namespace or name may hold it
# join_key((node, namespace, name)), fields as bytes: a view key. The bound method itself, as
# u64: the append and apply loops build one per event.
join_key = KEY_SEP.join
# key[INDEX_OFFSET]: the u64(offset) a node-index key ends with, which is the log's key of that event;
# key[INDEX_NODE]: the node's name before the NUL
INDEX_OFFSET = slice(-_U64.size, None)
INDEX_NODE = slice(None, -_U64.size - 1)
# value[VIEW_OFFSET]: the u64(offset) a view value starts with, which is the log's key of that version
VIEW_OFFSET = slice(0, _U64.size)


def node_prefix(node: str) -> bytes:
    """Where a node's keys start in a view and in the node index."""
    return node.encode() + KEY_SEP


def view_key(node: str, namespace: str = "", name: str | None = None) -> bytes:
    """Key of a pod in a view; with name None, the prefix of a node (or namespace)."""
    if name is None:
        return node_prefix(node) if not namespace else join_key((node.encode(), namespace.encode(), b""))
    return join_key((node.encode(), namespace.encode(), name.encode()))


def split_view_key(k: bytes) -> tuple[str, str, str]:
    """Inverse of view_key for a full key: (node, namespace, name)."""
    node, ns, name = bytes(k).decode().split("\0")
    return node, ns, name


def node_index_key(node: str, offset: int) -> bytes:
    """Key of a node's event in the per-node index: node, NUL, offset."""
    return node_prefix(node) + _U64.pack(offset)


def encode_view_value(offset: int, pod_hash: int, manifest: bytes = b"") -> bytes:
    """Value of a pod in a view: the offset that set it, its hash (kept so a
    delete needs no rehash and a no-op put is seen without a compare), then its
    manifest (empty in the manager's view, which reads it from the log)."""
    return _VIEW.pack(offset, pod_hash) + manifest


# view_value_hash(v)[0]: the pod hash of a view value without copying its manifest (per changed pod)
view_value_hash = struct.Struct(">8xQ").unpack_from


def decode_view_value(v: bytes | memoryview) -> tuple[int, int, bytes]:
    """Inverse of encode_view_value: (offset, pod hash, manifest)."""
    raw = bytes(v)
    offset, h = _VIEW.unpack_from(raw)
    return offset, h, raw[_VIEW.size :]


def encode_node(head_offset: int, digest: int, pod_count: int, compacted_through: int) -> bytes:
    """Per-node summary kept beside the view."""
    return _NODE.pack(head_offset, digest, pod_count, compacted_through)


def decode_node(v: bytes | memoryview) -> tuple[int, int, int, int]:
    """Inverse of encode_node."""
    return _NODE.unpack(bytes(v))


def encode_journal(entry: JournalEntry) -> bytes:
    """Frame a journal line: an applied event, or the snapshot that was installed."""
    log_id = entry.log_id.encode()
    if entry.event is not None:
        return encode_journal_event(entry.applied_ns, log_id, encode_event(entry.event))
    body = _JOURNAL_SNAPSHOT.pack(entry.snapshot_offset, entry.snapshot_digest, entry.snapshot_pods)
    return _JOURNAL.pack(1, entry.applied_ns, len(log_id)) + log_id + body


def encode_journal_event(applied_ns: int, log_id: bytes, event: bytes) -> bytes:
    """Frame a journal line of an applied event from its framed bytes, as received."""
    return journal_event_prefix(applied_ns, log_id) + event


def journal_event_prefix(applied_ns: int, log_id: bytes) -> bytes:
    """What precedes the event bytes in a journal line; the same for a whole applied batch."""
    return _JOURNAL.pack(0, applied_ns, len(log_id)) + log_id


def decode_journal(seq: int, v: bytes | memoryview) -> JournalEntry:
    """Inverse of encode_journal."""
    raw = bytes(v)
    try:
        kind, applied_ns, llog = _JOURNAL.unpack_from(raw)
        i = _JOURNAL.size
        log_id = raw[i : i + llog].decode()
        i += llog
        if kind == 0:
            return JournalEntry(seq, applied_ns, log_id, event=decode_event(raw[i:]))
        s_off, s_digest, s_pods = _JOURNAL_SNAPSHOT.unpack_from(raw, i)
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptRecordError(f"undecodable journal entry {seq}: {exc}") from None
    return JournalEntry(seq, applied_ns, log_id, snapshot_offset=s_off, snapshot_digest=s_digest, snapshot_pods=s_pods)
