"""`edge-eventlog`: audit a manager log or an agent replica (dump, stats, verify, state, export, verify-export),
and check that HA managers' logs hold one history (compare).

Opens stores read-only: it never blocks or modifies the writer of a live store.
Every failure a user can cause ends with one line on stderr and a non-zero exit.
Imports no kubernetes or grpc.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any, NoReturn

import lmdb
import orjson

from eventlog.digest import digest_of, format_digest
from eventlog.errors import NotAStoreError, OffsetOutOfRangeError, StoreError
from eventlog.export import export_range, verify_exports
from eventlog.history import compare_histories
from eventlog.log import LogStore
from eventlog.opening import open_store
from eventlog.records import Event, JournalEntry, PodEntry
from eventlog.replay import log_state_at, node_known
from eventlog.replica import ReplicaStore
from eventlog.stats import store_stats
from eventlog.verify import verify_store

PROG = "edge-eventlog"
FOLLOW_POLL_SECONDS = 0.2  # how often --follow looks at the head: cheap read-only transactions
READ_CHUNK = 1024  # events per read transaction, so no reader pins old pages for long
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


class UsageError(Exception):
    """Bad command-line input: shown as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, like every other failure."""

    def error(self, message: str) -> NoReturn:
        """One line on stderr, exit 2."""
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def _offset(text: str) -> int:
    """A non-negative offset argument."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"offset {text!r} is not a number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"offset {text} is negative")
    return n


def parse_time(text: str, *, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch from RFC3339 (naive means UTC) or a duration ago like 10m, 2h, 1d, 500ms."""
    m = _DURATION.match(text.strip())
    if m:
        now = now_ns if now_ns is not None else time.time_ns()
        return now - int(float(m.group(1)) * _UNIT_NS[m.group(2)])
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"bad time {text!r}: use RFC3339 like 2026-11-25T17:00:00Z or a duration ago like 30s, 10m, 2h, 1d"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000


def format_time(ns: int) -> str:
    """RFC3339 UTC with milliseconds."""
    dt = datetime.fromtimestamp(ns // 10**9, tz=timezone.utc).replace(microsecond=(ns % 10**9) // 1000)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _manifest_json(manifest: bytes | None) -> Any:
    """The manifest as JSON, or its text when it is not JSON (never fails a dump)."""
    if manifest is None:
        return None
    try:
        return orjson.loads(manifest)
    except orjson.JSONDecodeError:
        return manifest.decode(errors="replace")


def event_dict(e: Event) -> dict[str, Any]:
    """An event as one JSON object."""
    return {
        "offset": e.offset,
        "time": format_time(e.time_ns),
        "node": e.node,
        "op": e.op,
        "namespace": e.namespace,
        "name": e.name,
        "source": {"uid": e.source.uid, "resource_version": e.source.resource_version, "generation": e.source.generation},
        "manifest": _manifest_json(e.manifest),
    }


def journal_dict(j: JournalEntry) -> dict[str, Any]:
    """A journal line as one JSON object: an applied event or an installed snapshot."""
    head = {"seq": j.seq, "applied": format_time(j.applied_ns), "log_id": j.log_id}
    if j.event is not None:
        return {**head, "kind": "event", **event_dict(j.event)}
    snap = {"offset": j.snapshot_offset, "digest": format_digest(j.snapshot_digest), "pods": j.snapshot_pods}
    return {**head, "kind": "snapshot", "snapshot": snap}


_EVENT_COLUMNS = ("OFFSET", "TIME", "NODE", "OP", "POD", "SOURCE UID/RV/GEN", "BYTES")


def _event_row(e: Event) -> tuple[str, ...]:
    src = f"{e.source.uid or '-'}/{e.source.resource_version or '-'}/{e.source.generation}"
    size = str(len(e.manifest)) if e.manifest is not None else "-"
    return (str(e.offset), format_time(e.time_ns), e.node, e.op, f"{e.namespace}/{e.name}", src, size)


def _journal_row(j: JournalEntry) -> tuple[str, ...]:
    head = (str(j.seq), format_time(j.applied_ns))
    if j.event is not None:
        return head + _event_row(j.event)
    what = f"snapshot digest={format_digest(j.snapshot_digest)} pods={j.snapshot_pods} log={j.log_id}"
    return head + (str(j.snapshot_offset), "", "", "snapshot", what, "", "")


class _Out:
    """Writes JSON lines or aligned table rows to stdout."""

    def __init__(self, fmt: str, columns: tuple[str, ...]) -> None:
        self.fmt = fmt
        self.columns = columns
        defaults = (8, 24, 10, 6, 24, 20, 6)
        if len(columns) > len(defaults):  # a journal: seq and applied time first
            defaults = (6, 24) + defaults
        self.widths = [max(len(c), w) for c, w in zip(columns, defaults)]
        self.header_done = False

    def json(self, obj: Any) -> None:
        sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")

    def row(self, cells: tuple[str, ...]) -> None:
        if not self.header_done:
            self.header_done = True
            self.row(self.columns)
        line = "  ".join(c.ljust(w) for c, w in zip(cells, self.widths + [0] * len(cells)))
        sys.stdout.write(line.rstrip() + "\n")

    def flush(self) -> None:
        sys.stdout.flush()


# -- dump -----------------------------------------------------------------


def _log_batches(store: LogStore, args: argparse.Namespace) -> Callable[[int], list[Event]]:
    """A function reading the next events after an offset, for the whole log or one node."""
    if args.node:
        return lambda a: store.read_node(args.node, after=a, limit=READ_CHUNK)
    return lambda a: store.read(after=a, limit=READ_CHUNK)


def _dump_log(store: LogStore, args: argparse.Namespace, out: _Out, since: int | None, until: int | None) -> None:
    info = store.info()
    if args.node and not node_known(store, args.node) and not args.follow:
        raise UsageError(f"node {args.node!r} is not in this log{_known_nodes(store)}")
    if args.from_ is not None and args.from_ > info.head_offset + 1 and not args.follow:
        raise OffsetOutOfRangeError(f"--from {args.from_} is beyond the head of the log ({info.head_offset})")
    if args.from_ is not None and args.from_ < info.first_offset and info.first_offset > 1:
        raise StoreError(
            f"offsets {args.from_}..{info.first_offset - 1} were compacted; the log starts at {info.first_offset}"
        )
    after = (args.from_ if args.from_ is not None else info.first_offset) - 1
    fetch = _log_batches(store, args)
    for e in _follow(fetch, after, args.to, follow=args.follow, offset_of=lambda e: e.offset, flush=out.flush):
        if (since is not None and e.time_ns < since) or (until is not None and e.time_ns > until):
            continue
        if out.fmt == "jsonl":
            out.json(event_dict(e))
        else:
            out.row(_event_row(e))


def _dump_replica(store: ReplicaStore, args: argparse.Namespace, out: _Out,
                  since: int | None, until: int | None) -> None:
    if args.node and args.node != store.node:
        raise UsageError(f"node {args.node!r} is not in this replica: it is the replica of {store.node!r}")

    def offset_ok(j: JournalEntry) -> bool:
        off = j.event.offset if j.event is not None else j.snapshot_offset
        return (args.from_ is None or off >= args.from_) and (args.to is None or off <= args.to)

    fetch = lambda seq: store.journal(after_seq=seq, limit=READ_CHUNK)  # noqa: E731
    for j in _follow(fetch, 0, None, follow=args.follow, offset_of=lambda j: j.seq, flush=out.flush):
        if not offset_ok(j):
            continue
        if (since is not None and j.applied_ns < since) or (until is not None and j.applied_ns > until):
            continue
        if out.fmt == "jsonl":
            out.json(journal_dict(j))
        else:
            out.row(_journal_row(j))


def _follow(fetch: Callable[[int], list[Any]], after: int, to: int | None, *, follow: bool,
            offset_of: Callable[[Any], int], flush: Callable[[], None]) -> Iterator[Any]:
    """Records after a position in order; with follow, keep polling the head until `to` is reached."""
    while True:
        batch = fetch(after)
        for rec in batch:
            if to is not None and offset_of(rec) > to:
                return
            yield rec
        if batch:
            after = offset_of(batch[-1])
            flush()
            continue
        if not follow or (to is not None and after >= to):
            return
        time.sleep(FOLLOW_POLL_SECONDS)


def cmd_dump(args: argparse.Namespace) -> int:
    """Print events (manager) or journal lines (agent)."""
    if args.from_ is not None and args.to is not None and args.from_ > args.to:
        raise UsageError(f"--from {args.from_} is after --to {args.to}")
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    with _open(args.path) as store:
        if isinstance(store, LogStore):
            _dump_log(store, args, _Out(args.format, _EVENT_COLUMNS), since, until)
        else:
            _dump_replica(store, args, _Out(args.format, ("SEQ", "APPLIED") + _EVENT_COLUMNS), since, until)
    sys.stdout.flush()
    return 0


# -- stats, verify, state ---------------------------------------------------


def cmd_stats(args: argparse.Namespace) -> int:
    """Print identity, extent, size and per-node figures."""
    with _open(args.path) as store:
        stats = store_stats(store)
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(stats, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    for k, v in stats.items():
        if k != "nodes":
            print(f"{k + ':':<20} {v}")
    cols = [c for c in stats["nodes"][0]] if stats["nodes"] else ["node"]
    rows = [[str(n[c]) for c in cols] for n in stats["nodes"]]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    print()
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)).rstrip())
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Print problems and exit 1, or one ok line."""
    with _open(args.path) as store:
        problems = verify_store(store)
        stats = store_stats(store)
    if problems:
        return _problems(problems, f"verify: {len(problems)} problem(s) in {stats['path']}")
    pods = sum(n["pods"] for n in stats["nodes"])
    if stats["role"] == "manager":
        extent = f"offsets {stats['first_offset']}..{stats['head_offset']}, {len(stats['nodes'])} nodes"
    else:
        extent = f"node {stats['node']} at offset {stats['applied_offset']}, {stats['journal_lines']} journal lines"
    print(f"ok: {stats['role']} store {stats['path']}, log {stats['log_id'] or '(none)'}, {extent}, {pods} pods")
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    """Print a node's pods as of an offset (manager) or the current replica (agent)."""
    with _open(args.path) as store:
        if isinstance(store, LogStore):
            if not args.node:
                raise UsageError(f"state of a manager log needs --node{_known_nodes(store)}")
            if not node_known(store, args.node):
                raise UsageError(f"node {args.node!r} is not in this log{_known_nodes(store)}")
            at = args.at if args.at is not None else store.head_offset
            pods = log_state_at(store, args.node, at)
            node = args.node
        else:
            node = store.node
            if args.node and args.node != node:
                raise UsageError(f"node {args.node!r} is not in this replica: it is the replica of {node!r}")
            at = store.cursor().applied_offset
            if args.at is not None and args.at != at:
                raise OffsetOutOfRangeError(
                    f"an agent store holds only its current replica (applied offset {at}), not offset {args.at}"
                )
            pods = store.pods()
    entries = sorted(pods.values(), key=lambda p: p.key)
    digest = digest_of(entries)
    if args.format == "json":
        doc = {
            "node": node, "offset": at, "digest": format_digest(digest), "pod_count": len(entries),
            "pods": [_pod_dict(p) for p in entries],
        }
        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
        return 0
    print(f"node {node} as of offset {at}: {len(entries)} pods, digest {format_digest(digest)}")
    width = max([len("POD")] + [len(f"{p.namespace}/{p.name}") for p in entries])
    print(f"{'POD':<{width}}  {'OFFSET':>8}  BYTES")
    for p in entries:
        print(f"{p.namespace + '/' + p.name:<{width}}  {p.offset:>8}  {len(p.manifest)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a range of a manager log as JSON Lines that verify-export checks without the store."""
    with _open(args.path) as store:
        if not isinstance(store, LogStore):
            raise UsageError(f"{args.path}: an agent replica; export reads a manager log")
        info = store.info()
        if info.event_count == 0:
            raise UsageError(f"{args.path}: the log holds no events (head offset {info.head_offset})")
        first = args.from_ if args.from_ is not None else info.first_offset
        last = args.to if args.to is not None else info.head_offset
        if args.output is None:
            summary = export_range(store, sys.stdout.buffer, first=first, last=last)
        else:
            tmp = args.output + ".partial"
            try:
                with open(tmp, "wb") as f:
                    summary = export_range(store, f, first=first, last=last)
                os.replace(tmp, args.output)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    sys.stderr.write(f"{PROG}: exported offsets {summary.first_offset}..{summary.last_offset} of log "
                     f"{summary.log_id} ({summary.events} events, {summary.nodes} nodes)\n")
    return 0


def cmd_verify_export(args: argparse.Namespace) -> int:
    """Check export files alone and as a chain; print problems and exit 1, or one ok line."""
    for f in args.files:
        if not os.path.exists(f) or os.path.isdir(f):
            raise UsageError(f"{f}: no such file")
    check = verify_exports(Path(f) for f in args.files)
    if check.problems:
        summary = f"verify-export: {len(check.problems)} problem(s) in {len(args.files)} file(s)"
        return _problems(check.problems, summary)
    print(f"ok: {len(args.files)} export file(s), log {', '.join(check.log_ids)}, offsets "
          f"{check.first_offset}..{check.last_offset}, {check.events} events, {check.nodes} nodes")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Check that manager logs hold one history; print the first disagreement and exit 1, or one ok line."""
    if len(args.paths) < 2:
        raise UsageError("compare needs two stores or more")
    for p in args.paths:
        if not os.path.exists(p):
            raise NotAStoreError(f"{p}: does not exist")
    report = compare_histories(args.paths)
    if report.first_disagreement is not None:
        summary = f"compare: {len(report.stores)} stores do not hold one history"
        return _problems([report.first_disagreement.text], summary)
    print(f"ok: one history: {len(report.stores)} stores of log {report.log_id}, "
          f"{report.offsets_compared} offsets compared")
    return 0


def _problems(lines: Iterable[str], summary: str) -> int:
    """A check that found problems: each on stdout, one summary line on stderr, exit 1."""
    for line in lines:
        print(line)
    sys.stdout.flush()
    sys.stderr.write(f"{PROG}: {summary}\n")
    return 1


def _pod_dict(p: PodEntry) -> dict[str, Any]:
    return {"namespace": p.namespace, "name": p.name, "offset": p.offset, "manifest": _manifest_json(p.manifest)}


def _known_nodes(store: LogStore) -> str:
    names = [st.node for st in store.nodes()]
    if not names:
        return " (it holds no nodes)"
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return f" (known: {', '.join(names[:10])}{more})"


def _open(path: str) -> LogStore | ReplicaStore:
    """Open read-only whichever store is at path (or in a daemon's --data-dir)."""
    if not os.path.exists(path):
        raise NotAStoreError(f"{path}: does not exist")
    return open_store(path, readonly=True)


# -- entry point -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept separate so tests and docs can read it)."""
    ap = _Parser(prog=PROG, description="Audit a k8s-edge event log (manager) or replica (agent), read-only.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    path_help = "a store directory, or the --data-dir of edge-manager / edge-agent"

    d = sub.add_parser("dump", help="print events (manager log) or journal lines (agent replica)",
                       description="Print events of a manager log, or the journal (events and snapshots) of an agent.")
    d.add_argument("path", metavar="PATH", help=path_help)
    d.add_argument("--node", help="only this node's events")
    d.add_argument("--from", dest="from_", type=_offset, metavar="OFFSET", help="first offset (default: first retained)")
    d.add_argument("--to", type=_offset, metavar="OFFSET", help="last offset (with --follow: stop there)")
    d.add_argument("--since", metavar="TIME", help="events at or after TIME: RFC3339 or a duration ago (10m, 2h, 1d)")
    d.add_argument("--until", metavar="TIME", help="events at or before TIME: RFC3339 or a duration ago")
    d.add_argument("--format", choices=("jsonl", "table"), default="jsonl", help="output format (default jsonl)")
    d.add_argument("--follow", "-f", action="store_true", help=f"keep printing new events (polls every {FOLLOW_POLL_SECONDS}s)")
    d.set_defaults(fn=cmd_dump)

    s = sub.add_parser("stats", help="identity, extent, size, events and pods per node")
    s.add_argument("path", metavar="PATH", help=path_help)
    s.add_argument("--format", choices=("json", "table"), default="table", help="output format (default table)")
    s.set_defaults(fn=cmd_stats)

    v = sub.add_parser("verify", help="check offsets, records, replay against the view, and digests (exit 1 on problems)")
    v.add_argument("path", metavar="PATH", help=path_help)
    v.set_defaults(fn=cmd_verify)

    st = sub.add_parser("state", help="a node's pods as of an offset (agent: its current replica)")
    st.add_argument("path", metavar="PATH", help=path_help)
    st.add_argument("--node", help="the node (required for a manager log)")
    st.add_argument("--at", type=_offset, metavar="OFFSET", help="as of this offset (default: the head)")
    st.add_argument("--format", choices=("json", "table"), default="json", help="output format (default json)")
    st.set_defaults(fn=cmd_state)

    ex = sub.add_parser("export", help="write a range of a manager log as verifiable JSON Lines (for audit)",
                        description="Write events of a manager log as JSON Lines with the digests the log recorded, "
                                    "so `verify-export` can check them after the log compacted them away.")
    ex.add_argument("path", metavar="PATH", help=path_help)
    ex.add_argument("--from", dest="from_", type=_offset, metavar="OFFSET", help="first offset (default: first retained)")
    ex.add_argument("--to", type=_offset, metavar="OFFSET", help="last offset (default: the head)")
    ex.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    ex.set_defaults(fn=cmd_export)

    ve = sub.add_parser("verify-export", help="check export files without the store (exit 1 on problems)",
                        description="Check export files: each file's digests by replay, and consecutive files "
                                    "of one log as a chain (give them in log order, e.g. a sorted glob).")
    ve.add_argument("files", metavar="FILE", nargs="+", help="export files, oldest first (.gz read as gzip)")
    ve.set_defaults(fn=cmd_verify_export)

    cp = sub.add_parser("compare", help="check that manager logs hold one history (exit 1 at the first difference)",
                        description="Check that manager logs (an HA leader's and its standbys') are of one log_id "
                                    "and hold the same record bytes at every offset any two of them retain.")
    cp.add_argument("paths", metavar="PATH", nargs="+", help=path_help + " (two or more, manager logs)")
    cp.set_defaults(fn=cmd_compare)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command; every user-facing failure is one line on stderr and a non-zero exit."""
    args = build_parser().parse_args(argv)
    try:
        code = args.fn(args)
        sys.stdout.flush()  # inside the try: a reader that went away is handled below, not at exit
        return code
    except (StoreError, UsageError) as exc:
        return _fail(str(exc))
    except lmdb.Error as exc:
        return _fail(f"{getattr(args, 'path', '')}: LMDB: {' '.join(str(exc).split())}")
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            return _broken_pipe()
        return _fail(f"{exc.filename or getattr(args, 'path', '')}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        return 130


def _fail(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 1


def _broken_pipe() -> int:
    """The reader went away (`| head`): stop quietly, and keep Python from complaining at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
