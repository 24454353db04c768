"""Exports of a range of the manager's log as JSON Lines that verify without the store.

An audit trail that outlives retention: what compaction is about to drop can be
written out first (edge-manager --export-before-compaction), and `edge-eventlog
verify-export` checks the files later, alone or as a chain, with nothing but them.

A file has three kinds of line, in this order:
- one `export` header: log_id, the range [from, to], and for every node with an
  event in the range its state just before `from` as pod hashes (namespace, name,
  XXH3 of the manifest, as in digest.py) with their XOR, the node's digest;
- one `event` line per offset from `from` to `to` (the log's offsets are gap-free):
  the event as `edge-eventlog dump` prints it, its `time_ns`, and `digest`, the
  node's digest right after it as the manager recorded it in its node index;
- one `end` line: the count of events and each node's digest after `to`, so a
  truncated file is told from a whole one.
Replaying the event lines over the header's pod hashes must give every recorded
digest; consecutive files of one log chain (from = previous to + 1, and the header
states equal the previous file's final states). Imports no kubernetes or grpc.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from eventlog.digest import format_digest, pod_hash
from eventlog.encoding import canonical_manifest, decode_event, decode_event_fields, from_u64
from eventlog.errors import CompactedError, OffsetOutOfRangeError
from eventlog.log import LogReader, LogStore
from eventlog.records import Event
from eventlog.replay import log_state_at

EXPORT_FORMAT = 1
_CHUNK = 4096  # events per read transaction
MAX_PROBLEMS = 200

PodHashes = dict[tuple[str, str], int]  # (namespace, name) -> pod hash


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What one export wrote."""

    log_id: str
    first_offset: int
    last_offset: int
    events: int
    nodes: int


def export_range(store: LogStore, out: IO[bytes], *, first: int, last: int) -> ExportSummary:
    """Write events first..last (both retained) with the header and end lines to `out`."""
    info = store.info()
    if first > last:
        raise OffsetOutOfRangeError(f"the range {first}..{last} is empty")
    if last > info.head_offset:
        raise OffsetOutOfRangeError(f"offset {last} is beyond the head of the log ({info.head_offset})")
    if first < info.first_offset:
        raise CompactedError(f"offsets {first}..{info.first_offset - 1} were compacted; "
                             f"the log starts at {info.first_offset}")
    nodes = sorted({fields[1] for fields in _raw_range(store, first, last, decode=decode_event_fields)})
    states = {n: {k: pod_hash(p.namespace, p.name, p.manifest) for k, p in log_state_at(store, n, first - 1).items()}
              for n in nodes}
    header = {"kind": "export", "format": EXPORT_FORMAT, "log_id": store.log_id, "from": first, "to": last,
              "nodes": {n: _state_json(s) for n, s in states.items()}}
    out.write(orjson.dumps(header) + b"\n")
    digests = {n: _xor(s.values()) for n, s in states.items()}
    count = 0
    for e, digest in _events_with_digests(store, first, last):
        out.write(orjson.dumps(event_line(e, digest)) + b"\n")
        digests[e.node] = digest
        count += 1
    if count != last - first + 1:
        raise CompactedError(f"offsets of {first}..{last} were compacted while they were exported")
    out.write(orjson.dumps({"kind": "end", "from": first, "to": last, "events": count,
                            "digests": {n: format_digest(d) for n, d in sorted(digests.items())}}) + b"\n")
    return ExportSummary(store.log_id, first, last, count, len(nodes))


def export_file(store: LogStore, directory: Path, *, first: int, last: int) -> Path:
    """Export first..last into a new file of `directory`, durably (written, synced, then renamed)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / export_file_name(store.log_id, first, last)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            export_range(store, f, first=first, last=last)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def export_file_name(log_id: str, first: int, last: int) -> str:
    """<log_id>-<first>-<last>.jsonl, zero-padded so names sort in log order."""
    return f"edge-eventlog-{log_id}-{first:020d}-{last:020d}.jsonl"


def event_line(e: Event, digest: int) -> dict[str, Any]:
    """One event line: the dump fields plus time_ns and the node's digest after it."""
    return {
        "kind": "event", "offset": e.offset, "time_ns": e.time_ns, "node": e.node, "op": e.op,
        "namespace": e.namespace, "name": e.name,
        "source": {"uid": e.source.uid, "resource_version": e.source.resource_version, "generation": e.source.generation},
        "manifest": _manifest_json(e.manifest), "digest": format_digest(digest),
    }


def _manifest_json(manifest: bytes | None) -> Any:
    if manifest is None:
        return None
    try:
        return orjson.loads(manifest)
    except orjson.JSONDecodeError:
        return {"$raw": manifest.decode(errors="replace")}  # never written by the manager; kept verifiable-ish


def _manifest_bytes(value: Any) -> bytes:
    if isinstance(value, dict) and set(value) == {"$raw"}:
        return str(value["$raw"]).encode()
    return canonical_manifest(value)


def _state_json(state: PodHashes) -> dict[str, Any]:
    return {"digest": format_digest(_xor(state.values())),
            "pods": [[ns, name, format_digest(h)] for (ns, name), h in sorted(state.items())]}


def _xor(values: Iterable[int]) -> int:
    d = 0
    for v in values:
        d ^= v
    return d


def _chunks(store: LogStore, first: int, last: int, read: Callable[[LogReader, int, bytes], Any]) -> Iterator[Any]:
    """read(reader, offset, record) for records first..last, one read transaction per chunk (no reader pinned long)."""
    after = first - 1
    while after < last:
        batch: list[tuple[int, Any]] = []
        with store.reader() as r:
            for k, v in r.records(after=after):
                off = from_u64(k)
                if off > last or len(batch) >= _CHUNK:
                    break
                batch.append((off, read(r, off, v)))
        if not batch:
            return
        yield from (d for _, d in batch)
        after = batch[-1][0]


def _raw_range(store: LogStore, first: int, last: int, *, decode: Any) -> Iterator[Any]:
    """Decoded records first..last."""
    return _chunks(store, first, last, lambda _r, _off, v: decode(v))


def _events_with_digests(store: LogStore, first: int, last: int) -> Iterator[tuple[Event, int]]:
    """Events first..last with each node's digest after them, from the node index in the same transaction."""

    def read(r: LogReader, off: int, v: bytes) -> tuple[Event, int]:
        e = decode_event(v)
        digest = r.index_digest(e.node, off)
        if digest is None:
            raise CompactedError(f"event {off} of node {e.node} has no node index entry")
        return e, digest

    return _chunks(store, first, last, read)


# -- verifying ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportCheck:
    """What verify_exports found: the problems (empty: sound) and what the files cover."""

    problems: tuple[str, ...]
    log_ids: tuple[str, ...]
    first_offset: int
    last_offset: int
    events: int
    nodes: int


class _Chain:
    """State carried through the lines of one or more files of one log."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.omitted = 0
        self.log_ids: list[str] = []
        self.first = 0
        self.last = 0
        self.events = 0
        self.states: dict[str, PodHashes] = {}  # per log: reset when the log_id changes

    def add(self, where: str, msg: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{where}: {msg}")
        else:
            self.omitted += 1


def verify_exports(paths: Iterable[Path]) -> ExportCheck:
    """Check export files in the order given: each alone, and each against the one before it."""
    c = _Chain()
    for path in paths:
        _verify_file(c, path)
    problems = list(c.problems) + ([f"... and {c.omitted} more problems"] if c.omitted else [])
    return ExportCheck(tuple(problems), tuple(c.log_ids), c.first, c.last, c.events, len(c.states))


def _verify_file(c: _Chain, path: Path) -> None:
    name = str(path)
    opener = gzip.open if name.endswith(".gz") else open  # rotated files are often compressed
    with opener(path, "rb") as f:
        lines = iter(enumerate(f, start=1))
        try:
            _, raw = next(lines)
        except StopIteration:
            c.add(name, "empty file (no export header)")
            return
        header = _load(c, f"{name}:1", raw)
        if header is None or header.get("kind") != "export":
            c.add(f"{name}:1", "the first line is not an export header")
            return
        if header.get("format") != EXPORT_FORMAT:
            c.add(f"{name}:1", f"export format {header.get('format')!r} is not {EXPORT_FORMAT}")
            return
        log_id, first, last = header.get("log_id"), header.get("from"), header.get("to")
        if not isinstance(first, int) or not isinstance(last, int) or first < 1 or last < first:
            c.add(f"{name}:1", f"range {first!r}..{last!r} is not a range of offsets")
            return
        chained = bool(c.log_ids) and c.log_ids[-1] == log_id
        if chained and first != c.last + 1:
            c.add(f"{name}:1", f"starts at offset {first}, the previous file ended at {c.last} "
                               f"({'gap' if first > c.last + 1 else 'overlap'})")
        if not chained:
            c.states = {}
            c.log_ids.append(str(log_id))
            if len(c.log_ids) == 1:
                c.first = first
        states: dict[str, PodHashes] = {}
        for node, st in (header.get("nodes") or {}).items():
            pods = {(p[0], p[1]): int(p[2], 16) for p in st.get("pods", [])}
            if format_digest(_xor(pods.values())) != st.get("digest"):
                c.add(f"{name}:1", f"node {node}: the pod hashes XOR to {format_digest(_xor(pods.values()))}, "
                                   f"the header says {st.get('digest')}")
            if chained and node in c.states and c.states[node] != pods:
                c.add(f"{name}:1", f"node {node}: the state before {first} differs from the previous file's "
                                   f"state after {c.last}")
            states[node] = pods
        c.states.update(states)
        expected, count, end = first, 0, None
        for lineno, raw in lines:
            where = f"{name}:{lineno}"
            obj = _load(c, where, raw)
            if obj is None:
                continue
            if end is not None:
                c.add(where, "a line after the end line")
                continue
            if obj.get("kind") == "end":
                end = obj
                continue
            if obj.get("kind") != "event":
                c.add(where, f"unknown line kind {obj.get('kind')!r}")
                continue
            off = obj.get("offset")
            if off != expected:
                c.add(where, f"offset {off} where {expected} was expected")
            expected = (off if isinstance(off, int) else expected) + 1
            count += 1
            _apply(c, where, obj, states)
        c.states.update(states)
        if end is None:
            c.add(name, f"no end line: the file is truncated after offset {expected - 1}")
        else:
            if end.get("events") != count or end.get("to") != last:
                c.add(name, f"the end line says {end.get('events')} events to {end.get('to')}, "
                            f"the file holds {count} to {expected - 1}")
            for node, digest in (end.get("digests") or {}).items():
                have = format_digest(_xor(states.get(node, {}).values()))
                if have != digest:
                    c.add(name, f"node {node}: the end line says digest {digest}, replay gives {have}")
        if expected - 1 != last:
            c.add(name, f"the header covers {first}..{last}, the events {first}..{expected - 1}")
        c.last = max(c.last, expected - 1)
        c.events += count


def _apply(c: _Chain, where: str, e: dict[str, Any], states: dict[str, PodHashes]) -> None:
    node, ns, name = e.get("node"), e.get("namespace"), e.get("name")
    if node not in states:
        c.add(where, f"node {node} has an event but no state in the header")
        states[node] = {}
    pods = states[node]
    key = (ns, name)
    if e.get("op") == "put":
        try:
            h = pod_hash(ns, name, _manifest_bytes(e.get("manifest")))
        except (TypeError, orjson.JSONEncodeError) as exc:
            c.add(where, f"manifest cannot be encoded: {exc}")
            return
        if pods.get(key) == h:
            c.add(where, f"put of {ns}/{name} does not change the node (the log appends only changes)")
        pods[key] = h
    elif e.get("op") == "delete":
        if key not in pods:
            c.add(where, f"delete of {ns}/{name}, which the node does not hold")
        pods.pop(key, None)
    else:
        c.add(where, f"unknown op {e.get('op')!r}")
        return
    have = format_digest(_xor(pods.values()))
    if have != e.get("digest"):
        c.add(where, f"node {node}: the log recorded digest {e.get('digest')}, replay gives {have}")


def _load(c: _Chain, where: str, raw: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        c.add(where, f"not JSON: {exc}")
        return None
    if not isinstance(obj, dict):
        c.add(where, "not a JSON object")
        return None
    return obj


__all__ = ["EXPORT_FORMAT", "ExportCheck", "ExportSummary", "event_line", "export_file", "export_file_name",
           "export_range", "verify_exports"]
