"""Consistency checks of a manager log or an agent replica: lists of problems, empty when sound.

Used by `edge-eventlog verify` and by end-to-end tests. Each check reads its
store in ONE read transaction, so it runs against a live store (the writer is
never blocked) and never sees half a batch. Problems are one-line strings fit
to show a user. Imports no kubernetes or grpc.

What is checked, and why it is all that can be:

LogStore (`verify_log`)
- offsets: every key from first_offset to head_offset is present once, in order,
  and each record decodes to an event carrying its own key as offset;
- per node: replaying the retained events over `base` (the view as of
  first_offset - 1, where compaction folds what it drops) gives exactly the view
  (manifests and the offset that set each pod);
- each event changes the node (no put of the same manifest, no delete of a pod
  not held): the log appends only differences;
- the node index holds exactly one entry per retained event, and its digest
  equals the replay's digest right after that event;
- the node summary: digest equals `digest_of` the view recomputed from scratch,
  pod_count equals the number of pods, head_offset is the node's newest event
  (or its newest compacted one), compacted_through lies before first_offset;
- meta: log_bytes equals the bytes of the retained records.

ReplicaStore (`verify_replica`)
- journal sequence gap-free up to the stored journal_seq;
- within one log_id: event offsets strictly increase between snapshots, each
  after the snapshot's offset, and each offset is applied at most once;
- every journal event is for the replica's node;
- the cursor (log_id, applied_offset) is that of the newest journal line;
- the node summary: digest equals `digest_of` the view from scratch, pod_count
  matches, head_offset equals applied_offset;
- replay: the journal records a snapshot's digest and pod count but not its
  pods, so a pod touched after the last snapshot had a manifest there that no
  one can know. Hence, exactly what is determined is checked:
  * no snapshot and an uncompacted journal (it starts at seq 1): a full replay
    from empty must equal the view, pods, offsets and digest;
  * each pod touched since the anchor (last snapshot, else the oldest retained
    line) must be in the view exactly as its last event left it (or absent
    after a delete);
  * every other pod must predate the anchor (its offset <= the snapshot offset);
  * no event since the snapshot: the view's digest and pod count equal the
    snapshot's; otherwise the snapshot's pod count lies between the untouched
    pods plus the touched pods whose first later event is a delete (the log
    deletes only pods it held) and the untouched plus all touched pods.
  `verify_replica_against(replica, log)` closes the gap when the manager's log
  is at hand: the replica must equal the log's state of the node at its
  applied_offset.
"""

from __future__ import annotations

from collections import defaultdict

from eventlog.digest import digest_of, format_digest
from eventlog.encoding import decode_event, decode_journal, from_u64
from eventlog.errors import CorruptRecordError, StoreError
from eventlog.log import LogStore
from eventlog.records import Event, JournalEntry, NodeState, PodEntry, PodKey
from eventlog.replay import Replayer, log_state_at
from eventlog.replica import ReplicaStore

MAX_PROBLEMS = 200  # a badly broken store would otherwise print one line per record


class _Problems(list[str]):
    """A list of problems that stops growing at MAX_PROBLEMS and says how many it left out."""

    omitted = 0

    def add(self, msg: str) -> None:
        """Record one problem."""
        if len(self) < MAX_PROBLEMS:
            self.append(msg)
        else:
            self.omitted += 1

    def done(self) -> list[str]:
        """The plain list, with a last line counting what was left out."""
        out = list(self)
        if self.omitted:
            out.append(f"... and {self.omitted} more problems")
        return out


def verify_store(store: LogStore | ReplicaStore) -> list[str]:
    """Problems of either kind of store (empty: sound)."""
    return verify_log(store) if isinstance(store, LogStore) else verify_replica(store)


def verify_log(store: LogStore) -> list[str]:
    """Problems of a manager log: offsets, records, replay over base, index digests, summaries."""
    p = _Problems()
    with store.reader() as r:  # everything below must come from one read transaction
        head = r.head_offset()
        first = r.first_offset()
        log_bytes = r.log_bytes()
        if first < 1 or first > head + 1:
            p.add(f"first_offset {first} does not fit head_offset {head}")
        bases = r.all_bases()
        views = r.all_pods()  # manifests resolved from the log and the base
        summaries = {st.node: st for st in r.nodes()}
        replays: dict[str, Replayer] = {}
        newest: dict[str, int] = {}
        events_per_node: dict[str, int] = defaultdict(int)
        expected, seen_bytes = first, 0
        for k, v in r.records():
            if len(k) != 8:
                p.add(f"log key {bytes(k)!r} is not an 8-byte offset")
                continue
            off = from_u64(k)
            if off > expected:
                p.add(f"offsets {_span(expected, off - 1)} are missing (gap in the log)")
            elif off < expected:
                p.add(f"event {off} lies before first_offset {first}")
            expected = max(expected, off + 1)
            seen_bytes += len(v)
            try:
                e = decode_event(v)
            except CorruptRecordError as exc:
                p.add(f"event {off}: {exc}")
                continue
            if e.offset != off:
                p.add(f"event stored at offset {off} says it is offset {e.offset}")
            replayer = replays.get(e.node)
            if replayer is None:
                replayer = replays[e.node] = Replayer(bases.get(e.node))
            why = replayer.apply(e)
            if why:
                p.add(f"event {off} on node {e.node}: {why}")
            indexed = r.index_digest(e.node, off)
            if indexed is None:
                p.add(f"event {off} of node {e.node} is missing from the node index")
            elif indexed != replayer.digest:
                p.add(
                    f"node index of {e.node} at {off} says digest {format_digest(indexed)}, "
                    f"replay gives {format_digest(replayer.digest)}"
                )
            newest[e.node] = off
            events_per_node[e.node] += 1
        if expected != head + 1 and expected <= head:
            p.add(f"offsets {_span(expected, head)} are missing (the log ends before head_offset {head})")
        elif expected > head + 1:
            p.add(f"the log holds events up to {expected - 1}, beyond head_offset {head}")
        if seen_bytes != log_bytes:
            p.add(f"meta log_bytes is {log_bytes}, the retained records take {seen_bytes}")
        indexed_per_node: dict[str, int] = defaultdict(int, r.index_counts())
        for node in sorted(set(indexed_per_node) | set(events_per_node)):
            if indexed_per_node[node] != events_per_node[node]:
                p.add(
                    f"node index holds {indexed_per_node[node]} entries for {node}, "
                    f"the log {events_per_node[node]} events"
                )
        for node in sorted(set(summaries) | set(views) | set(bases) | set(replays)):
            _check_log_node(p, node, first, summaries.get(node), views.get(node, {}), bases.get(node, {}),
                            replays.get(node) or Replayer(bases.get(node)), newest.get(node))
    return p.done()


def _check_log_node(p: _Problems, node: str, first: int, st: NodeState | None, view: dict[PodKey, PodEntry],
                    base: dict[PodKey, PodEntry], r: Replayer, newest: int | None) -> None:
    """Problems of one node of a log: replay vs view, digest and summary."""
    if st is None:
        p.add(f"node {node} has pods or events but no summary")
        return
    if r.pods != view:
        p.add(f"node {node}: replay of base + events differs from the view ({_diff(r.pods, view)})")
    digest = digest_of(view.values())
    if st.digest != digest:
        p.add(f"node {node}: stored digest {format_digest(st.digest)}, the view hashes to {format_digest(digest)}")
    if st.pod_count != len(view):
        p.add(f"node {node}: stored pod_count {st.pod_count}, the view holds {len(view)}")
    if newest is not None and st.head_offset != newest:
        p.add(f"node {node}: head_offset {st.head_offset}, its newest event is {newest}")
    if newest is None and st.head_offset != st.compacted_through:
        p.add(f"node {node}: head_offset {st.head_offset} but no retained event and compacted through "
              f"{st.compacted_through}")
    if st.compacted_through >= first:
        p.add(f"node {node}: compacted_through {st.compacted_through} is not before first_offset {first}")
    late = [k for k, e in base.items() if e.offset >= first]
    if late:
        p.add(f"node {node}: base holds {len(late)} pods set at or after first_offset {first}, e.g. {_name(late[0])}")


def verify_replica(store: ReplicaStore) -> list[str]:
    """Problems of an agent replica: journal order, cursor, summary, and what replay can determine."""
    p = _Problems()
    node = store.node
    with store.reader() as r:  # one read transaction
        journal_seq = r.journal_seq()
        cursor = r.cursor()
        applied, log_id = cursor.applied_offset, cursor.log_id
        views = r.all_pods()
        view = views.pop(node, {})
        for other in sorted(views):
            p.add(f"the replica of {node} holds pods of another node {other}")
        summaries = {st.node: st for st in r.nodes()}
        st = summaries.pop(node, None)
        for other in sorted(summaries):
            p.add(f"the replica of {node} holds a summary of another node {other}")
        first_seq = expected = 0
        anchor: JournalEntry | None = None  # newest snapshot line
        segment: list[Event] = []  # events after the anchor
        seen: dict[str, set[int]] = defaultdict(set)  # offsets applied per log_id
        last: JournalEntry | None = None
        for seq, v in r.journal_records():
            if not first_seq:
                first_seq = expected = seq
            if seq != expected:
                p.add(f"journal lines {_span(expected, seq - 1)} are missing")
            expected = seq + 1
            try:
                entry = decode_journal(seq, v)
            except CorruptRecordError as exc:
                p.add(str(exc))
                continue
            last = entry
            if entry.event is None:
                anchor, segment = entry, []
                continue
            e = entry.event
            if e.node != node:
                p.add(f"journal line {seq}: event {e.offset} is for node {e.node}, not {node}")
            if anchor is not None and entry.log_id != anchor.log_id:
                p.add(f"journal line {seq}: event of log {entry.log_id} after a snapshot of log {anchor.log_id}")
            floor = segment[-1].offset if segment else (anchor.snapshot_offset if anchor else 0)
            if (segment or anchor) and e.offset <= floor:
                p.add(f"journal line {seq}: offset {e.offset} does not follow {floor}")
            if e.offset in seen[entry.log_id]:
                p.add(f"journal line {seq}: offset {e.offset} of log {entry.log_id} was applied before")
            seen[entry.log_id].add(e.offset)
            segment.append(e)
        if first_seq and expected - 1 != journal_seq:
            p.add(f"the journal ends at {expected - 1}, meta journal_seq is {journal_seq}")
        if last is not None:
            last_offset = last.event.offset if last.event is not None else last.snapshot_offset
            if last.log_id != log_id:
                p.add(f"cursor log_id {log_id or '(none)'} is not the newest journal line's {last.log_id}")
            if last_offset != applied:
                p.add(f"cursor applied_offset {applied} is not the newest journal line's offset {last_offset}")
        digest = digest_of(view.values())
        if st is None:
            if view or applied:
                p.add(f"the replica of {node} has pods or an applied offset but no summary")
        else:
            if st.digest != digest:
                p.add(f"stored digest {format_digest(st.digest)}, the replica hashes to {format_digest(digest)}")
            if st.pod_count != len(view):
                p.add(f"stored pod_count {st.pod_count}, the replica holds {len(view)}")
            if st.head_offset != applied:
                p.add(f"node head_offset {st.head_offset} is not applied_offset {applied}")
        if anchor is None and (first_seq == 1 or (first_seq == 0 and journal_seq == 0)):
            replayer = Replayer()
            for e in segment:
                replayer.apply(e)
            if replayer.pods != view:
                p.add(f"replay of the whole journal differs from the replica ({_diff(replayer.pods, view)})")
        elif anchor is not None or segment:
            _check_segment(p, view, segment, anchor, first_event=segment[0].offset if segment else None)
    return p.done()


def _check_segment(p: _Problems, view: dict[PodKey, PodEntry], segment: list[Event], anchor: JournalEntry | None, *,
                   first_event: int | None) -> None:
    """What the events since the anchor determine about the view (see the module docstring)."""
    final: dict[PodKey, Event] = {}
    first_op: dict[PodKey, str] = {}
    for e in segment:
        final[e.key] = e
        first_op.setdefault(e.key, e.op)
    for key, e in final.items():
        held = view.get(key)
        if e.op == "delete" and held is not None:
            p.add(f"pod {_name(key)} was deleted at {e.offset} but the replica holds it")
        elif e.op == "put" and (held is None or held.manifest != e.manifest or held.offset != e.offset):
            p.add(f"pod {_name(key)} is not in the replica as event {e.offset} left it")
    untouched = {k: v for k, v in view.items() if k not in final}
    bound = anchor.snapshot_offset if anchor is not None else (first_event - 1 if first_event else None)
    if bound is not None:
        late = [k for k, v in untouched.items() if v.offset > bound]
        if late:
            p.add(f"{len(late)} pods carry offsets after {bound} that no journal line explains, e.g. {_name(late[0])}")
    if anchor is None:
        return
    if not segment:
        digest = digest_of(view.values())
        if digest != anchor.snapshot_digest:
            p.add(f"no event since the snapshot at {anchor.snapshot_offset}, but the replica hashes to "
                  f"{format_digest(digest)}, the snapshot to {format_digest(anchor.snapshot_digest)}")
        if len(view) != anchor.snapshot_pods:
            p.add(f"no event since the snapshot at {anchor.snapshot_offset}, but the replica holds {len(view)} pods, "
                  f"the snapshot {anchor.snapshot_pods}")
        return
    low = len(untouched) + sum(1 for op in first_op.values() if op == "delete")
    high = len(untouched) + len(final)
    if not low <= anchor.snapshot_pods <= high:
        p.add(f"the snapshot at {anchor.snapshot_offset} had {anchor.snapshot_pods} pods, the events since allow "
              f"only {low}..{high}")


def verify_replica_against(replica: ReplicaStore, log: LogStore) -> list[str]:
    """Problems of a replica compared with the manager's log it follows (invariant 4)."""
    p = _Problems()
    cursor = replica.cursor()
    node = replica.node
    if cursor.log_id != log.log_id:
        p.add(f"replica follows log {cursor.log_id or '(none)'}, the manager's log is {log.log_id}")
        return p.done()
    state = replica.state()
    expected = log.digest_through(node, cursor.applied_offset)
    if expected is not None and expected != state.digest:
        p.add(f"replica of {node} at {cursor.applied_offset} hashes to {format_digest(state.digest)}, "
              f"the log says {format_digest(expected)}")
    try:
        want = log_state_at(log, node, cursor.applied_offset)
    except StoreError as exc:
        p.add(f"cannot rebuild {node} at {cursor.applied_offset} from the log: {exc}")
        return p.done()
    have = replica.pods()
    if have != want:
        p.add(f"replica of {node} at {cursor.applied_offset} differs from the log ({_diff(have, want)})")
    return p.done()


def _diff(have: dict[PodKey, PodEntry], want: dict[PodKey, PodEntry]) -> str:
    """A short description of how `have` differs from `want` (extra: only in have)."""
    only_have = sorted(set(have) - set(want))
    only_want = sorted(set(want) - set(have))
    changed = sorted(k for k in set(have) & set(want) if have[k] != want[k])
    parts = []
    for label, keys in (("extra", only_have), ("missing", only_want), ("different", changed)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            parts.append(f"{label}: {', '.join(_name(k) for k in keys[:3])}{more}")
    return "; ".join(parts)


def _name(key: PodKey) -> str:
    return f"{key[0]}/{key[1]}"


def _span(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}..{b}"


__all__ = ["MAX_PROBLEMS", "verify_store", "verify_log", "verify_replica", "verify_replica_against"]
