"""Kubernetes Events (events.k8s.io/v1) about EdgeNodes, for `kubectl describe edgenode`.

Owns what is worth an Event (agent connected/disconnected, snapshot sent, pod rejected,
manifests failing), their correlation, and the worker thread that writes them. Writing is an
EventSink given by the daemon (kubeapi.ApiEventSink), so this module imports neither grpc nor
the kubernetes client.

Semantics: client-go's `tools/record` correlator (events_cache.go), applied to
events.k8s.io/v1 objects:
- aggregation: occurrences with the same object, type, reason and action but different notes
  are similar; from the 10th distinct note within 10 minutes on, they become one Event whose
  note is "(combined from similar events): <note>";
- dedup: an occurrence identical to one already written (same object, type, reason, action,
  note) patches that Event's `series` (`count`, `lastObservedTime`: the events.k8s.io/v1
  fields; the note is immutable there, so an aggregated Event keeps its first note) instead
  of creating a new one; a patch answered 404 creates the Event anew, series included;
- rate limit: a token bucket per object and type (burst 25, refilled one per 5 minutes);
  an occurrence without a token is counted but not written (the next written one carries
  the count).
Not followed: `tools/events`' 30-minute re-patch of live series, so nothing here is periodic
and a manager at steady state writes no Events (bench/apicost_bench.py). Writes happen on
one worker thread, never on the caller's; a failing write is logged once and dropped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from loguru import logger

from eventlog import SnapshotCause
from manager.recording import DesiredNode, EdgeNodeKey

REPORTING_CONTROLLER = "edge.k8s.io/edge-manager"
EDGENODE_API_VERSION, EDGENODE_KIND = "edge.k8s.io/v1alpha1", "EdgeNode"
AGGREGATE_PREFIX = "(combined from similar events): "
ORPHAN_NODES = 10_000  # nodes whose agents connected before their EdgeNode existed, remembered at most
ORPHAN_OCCURRENCES = 4  # the latest occurrences kept for each of them
NOTE_LIMIT = 1024  # the API server refuses longer notes


class EventType(StrEnum):
    """The two Event types Kubernetes accepts."""

    NORMAL = "Normal"
    WARNING = "Warning"


class Reason(StrEnum):
    """Why an EdgeNode gets an Event (the REASON column of kubectl describe)."""

    AGENT_CONNECTED = "AgentConnected"
    AGENT_DISCONNECTED = "AgentDisconnected"
    SNAPSHOT_SENT = "SnapshotSent"
    POD_REJECTED = "PodRejected"
    MANIFESTS_FAILING = "ManifestsFailing"
    JOIN_REFUSED = "JoinRefused"


_ACTIONS = {  # what the manager (or its agent) was doing when it happened
    Reason.AGENT_CONNECTED: "Connect",
    Reason.AGENT_DISCONNECTED: "Disconnect",
    Reason.SNAPSHOT_SENT: "Sync",
    Reason.POD_REJECTED: "Record",
    Reason.MANIFESTS_FAILING: "Reconcile",
    Reason.JOIN_REFUSED: "Join",
}


@dataclass(frozen=True, slots=True)
class EdgeNodeRef:
    """The EdgeNode an Event is about (its `regarding`)."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Occurrence:
    """Something that happened to an EdgeNode, before correlation."""

    ref: EdgeNodeRef
    type: EventType
    reason: Reason
    note: str

    @property
    def action(self) -> str:
        """The events.k8s.io/v1 action of this reason."""
        return _ACTIONS[self.reason]


@dataclass(frozen=True, slots=True, kw_only=True)
class EventWrite:
    """One API request: create `body`, or patch Event `name` with `patch` (creating `body` on 404)."""

    namespace: str
    name: str
    body: dict[str, Any]
    patch: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CorrelatorSettings:
    """client-go's defaults (tools/record/events_cache.go)."""

    aggregate_max_events: int = 10  # distinct notes of similar occurrences before they are combined
    aggregate_interval_seconds: float = 600.0  # similar occurrences further apart start afresh
    burst: int = 25  # writes per object and type before the rate limit bites
    refill_seconds: float = 300.0  # one more write allowed per this many seconds
    cache_entries: int = 4096  # per cache; the least recently used entry is forgotten


class EventNotFound(Exception):
    """The Event to patch is gone (the API server expires Events after an hour)."""


class EventSink(Protocol):
    """Where Events go; raises on failure (EventNotFound for a patch of a missing Event)."""

    def create(self, namespace: str, body: dict[str, Any]) -> None: ...

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None: ...


def micro_time(t: float) -> str:
    """A metav1.MicroTime: RFC 3339 with microseconds."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Lru(OrderedDict[Any, Any]):
    """A bounded cache, as client-go's: the least recently used entry goes first."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def get_fresh(self, key: Any) -> Any:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self._size:
            self.popitem(last=False)


@dataclass(slots=True)
class _Aggregate:
    notes: set[str] = field(default_factory=set)
    last: float = 0.0


@dataclass(frozen=True, slots=True)
class _Written:
    name: str
    count: int
    event_time: str


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class Correlator:
    """client-go's EventCorrelator for events.k8s.io/v1: aggregate, dedup, then rate-limit (not thread-safe)."""

    def __init__(self, *, reporting_instance: str, settings: CorrelatorSettings = CorrelatorSettings(),
                 clock: Callable[[], float] = time.time) -> None:
        self._instance = reporting_instance[:128]
        self._settings = settings
        self._clock = clock
        self._aggregates: _Lru = _Lru(settings.cache_entries)
        self._written: _Lru = _Lru(settings.cache_entries)
        self._buckets: _Lru = _Lru(settings.cache_entries)
        self._last_ns = 0

    def correlate(self, occ: Occurrence) -> EventWrite | None:
        """The request this occurrence needs, or None when the rate limit drops it."""
        now = self._clock()
        occ = replace(occ, note=_truncate(occ.note))
        occ, key = self._aggregate(occ, now)
        seen: _Written | None = self._written.get_fresh(key)
        if seen is None:
            self._last_ns = max(self._last_ns + 1, time.time_ns())  # client-go's <object>.<hex unix nanos>
            written = _Written(f"{occ.ref.name}.{self._last_ns:x}", 1, micro_time(now))
        else:
            written = replace(seen, count=seen.count + 1)
        self._written.put(key, written)  # counted even when dropped below, as client-go does
        if not self._take_token((occ.ref, occ.type), now):
            return None
        body = self._body(occ, written, now)
        if written.count == 1:
            return EventWrite(namespace=occ.ref.namespace, name=written.name, body=body)
        return EventWrite(namespace=occ.ref.namespace, name=written.name, body=body,
                          patch={"series": body["series"]})

    def _aggregate(self, occ: Occurrence, now: float) -> tuple[Occurrence, Any]:
        """The occurrence to write and its dedup key: itself, or the combined Event of its kind."""
        key = (occ.ref, occ.type, occ.reason)
        agg: _Aggregate | None = self._aggregates.get_fresh(key)
        if agg is None or now - agg.last > self._settings.aggregate_interval_seconds:
            agg = _Aggregate()
        agg.notes.add(occ.note)
        agg.last = now
        self._aggregates.put(key, agg)
        if len(agg.notes) < self._settings.aggregate_max_events:
            return occ, (*key, occ.note)
        agg.notes.pop()  # keep just under the limit, so the next distinct note still combines
        # one Event per kind: later combined occurrences only count up its series
        return replace(occ, note=_truncate(AGGREGATE_PREFIX + occ.note)), (*key, None)

    def _take_token(self, key: Any, now: float) -> bool:
        s = self._settings
        b: _Bucket | None = self._buckets.get_fresh(key)
        if b is None:
            b = _Bucket(tokens=float(s.burst), at=now)
        b.tokens = min(float(s.burst), b.tokens + max(0.0, now - b.at) / s.refill_seconds)
        b.at = now
        self._buckets.put(key, b)
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True

    def _body(self, occ: Occurrence, written: _Written, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": written.name, "namespace": occ.ref.namespace},
            "eventTime": written.event_time,
            "type": str(occ.type),
            "reason": str(occ.reason),
            "action": occ.action,
            "note": occ.note,
            "regarding": {"apiVersion": EDGENODE_API_VERSION, "kind": EDGENODE_KIND,
                          "namespace": occ.ref.namespace, "name": occ.ref.name, "uid": occ.ref.uid},
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self._instance,
        }
        if written.count > 1:
            body["series"] = {"count": written.count, "lastObservedTime": micro_time(now)}
        return body


def _truncate(note: str) -> str:
    raw = note.encode()
    if len(raw) <= NOTE_LIMIT:
        return note
    return raw[:NOTE_LIMIT - 3].decode(errors="ignore") + "..."


@dataclass(frozen=True, slots=True, kw_only=True)
class RecorderStats:
    """What the recorder did, for metrics and tests."""

    written: int
    dropped_rate_limited: int
    dropped_failed: int
    dropped_queue_full: int


class EventRecorder:
    """Correlates occurrences on the caller's thread and writes them on its own worker thread."""

    def __init__(self, sink: EventSink, *, reporting_instance: str,
                 settings: CorrelatorSettings = CorrelatorSettings(), clock: Callable[[], float] = time.time,
                 max_queued: int = 1000) -> None:
        self._sink = sink
        self._correlator = Correlator(reporting_instance=reporting_instance, settings=settings, clock=clock)
        self._lock = threading.Lock()  # occurrences come from the loop and the watch thread
        self._queue: queue.Queue[EventWrite | None] = queue.Queue(maxsize=max_queued)
        self._thread: threading.Thread | None = None
        self._failing = False
        self._closed = False
        self._written = self._rate_limited = self._failed = self._queue_full = 0

    def record(self, occ: Occurrence) -> None:
        """Take in one occurrence; never blocks on the API."""
        with self._lock:
            if self._closed:
                return
            write = self._correlator.correlate(occ)
            if write is None:
                self._rate_limited += 1
                logger.debug("Event {} on EdgeNode {}/{} rate-limited", occ.reason, occ.ref.namespace, occ.ref.name)
                return
            try:
                self._queue.put_nowait(write)
            except queue.Full:
                self._queue_full += 1
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="event-writer", daemon=True)
                self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Take no more; write what is queued (up to `timeout` seconds: an unreachable API must not hold a stop)."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            if thread is None:
                return
        self._queue.put(None)
        thread.join(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Whether every queued write was done within `timeout` seconds (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    @property
    def stats(self) -> RecorderStats:
        """Counts so far."""
        return RecorderStats(written=self._written, dropped_rate_limited=self._rate_limited,
                             dropped_failed=self._failed, dropped_queue_full=self._queue_full)

    def _work(self) -> None:
        while True:
            write = self._queue.get()
            try:
                if write is None:
                    return
                self._write(write)
            finally:
                self._queue.task_done()

    def _write(self, w: EventWrite) -> None:
        try:
            if w.patch is not None:
                try:
                    self._sink.patch(w.namespace, w.name, w.patch)
                except EventNotFound:  # expired or never created: create it, series and all
                    self._sink.create(w.namespace, w.body)
            else:
                self._sink.create(w.namespace, w.body)
        except Exception as exc:  # Events are best-effort: drop it, say so once
            self._failed += 1
            if not self._failing:
                self._failing = True
                logger.warning("writing Event {} of EdgeNode {}/{} failed (Events are dropped until writes "
                               "work again): {}", w.body["reason"], w.namespace, w.body["regarding"]["name"],
                               " ".join(str(exc).split())[:300])
            return
        self._written += 1
        if self._failing:
            self._failing = False
            logger.info("writing Events works again")


class EdgeNodeEvents:
    """What the manager sees, as Events on the EdgeNodes of a node (one per namespace).

    Node-level calls (connected, ...) come on the event loop; `rejected` comes from the
    watch thread. Node-level occurrences before the first EdgeNode list are held until it.
    """

    def __init__(self, recorder: EventRecorder) -> None:
        self._recorder = recorder
        self._refs: dict[str, dict[EdgeNodeKey, EdgeNodeRef]] = {}  # node -> its EdgeNodes
        self._listed = False
        self._held: list[tuple[str, EventType, Reason, str]] = []
        # node -> its latest occurrences while it has no EdgeNode (an agent that connects first):
        # written on the first EdgeNode of the node, so `describe` shows its agent is there
        self._orphans: dict[str, deque[tuple[str, EventType, Reason, str]]] = {}
        self._manifests: dict[str, tuple[bool, str]] = {}  # node -> last (ok, message) reported

    # -- what happened to a node's agent (loop thread) ------------------------------

    def connected(self, node: str, *, peer: str) -> None:
        """An agent opened its stream."""
        self._node(node, EventType.NORMAL, Reason.AGENT_CONNECTED, f"agent connected from {peer}")

    def disconnected(self, node: str, *, offline: bool) -> None:
        """An agent's stream ended; offline: no other agent of the node is connected."""
        if offline:
            self._node(node, EventType.WARNING, Reason.AGENT_DISCONNECTED,
                       "agent disconnected; no agent of this node is connected (Offline)")
        else:
            self._node(node, EventType.NORMAL, Reason.AGENT_DISCONNECTED,
                       "agent disconnected; another agent of this node is still connected")

    def snapshot_sent(self, node: str, *, cause: SnapshotCause) -> None:
        """The agent got a snapshot instead of events."""
        self._node(node, EventType.NORMAL, Reason.SNAPSHOT_SENT, f"snapshot sent: {cause.text}")

    def reported(self, node: str, *, manifests_ok: bool, message: str) -> None:
        """The agent reconciled its manifests; a new failure is worth an Event."""
        outcome = (manifests_ok, message)
        if self._manifests.get(node) == outcome:
            return
        self._manifests[node] = outcome
        if not manifests_ok:
            self._node(node, EventType.WARNING, Reason.MANIFESTS_FAILING,
                       f"the agent cannot write its manifests: {message or 'no reason given'}")

    def join_refused(self, node: str, *, message: str) -> None:
        """An authenticated join or renewal of the node was refused (docs/joining.md)."""
        self._node(node, EventType.WARNING, Reason.JOIN_REFUSED, message)

    # -- EdgeNodes (rejections on the watch thread, the rest on the loop) -----------

    def rejected(self, d: DesiredNode) -> None:
        """The rejections of an EdgeNode changed: one Event per rejected pod."""
        ref = EdgeNodeRef(d.namespace, d.node, d.source.uid)
        for r in d.rejected:
            self._recorder.record(Occurrence(ref=ref, type=EventType.WARNING, reason=Reason.POD_REJECTED,
                                             note=f"pod {r.name or '(unnamed)'!r} rejected: {r.reason}"))

    def edgenode_changed(self, d: DesiredNode) -> None:
        """An EdgeNode was recorded: remember its uid."""
        if d.source.uid:
            self._refs.setdefault(d.node, {})[d.key] = EdgeNodeRef(d.namespace, d.node, d.source.uid)
            for args in self._orphans.pop(d.node, ()):
                self._node(*args)

    def edgenode_deleted(self, key: EdgeNodeKey) -> None:
        """An EdgeNode was deleted."""
        refs = self._refs.get(key[1], {})
        refs.pop(key, None)
        if not refs:
            self._refs.pop(key[1], None)

    def edgenode_listed(self, desired: Iterable[DesiredNode]) -> None:
        """A full list: the known EdgeNodes are exactly these; write what waited for it."""
        self._refs = {}
        for d in desired:
            self.edgenode_changed(d)
        self._listed = True
        held, self._held = self._held, []
        for args in held:
            self._node(*args)

    def _node(self, node: str, type_: EventType, reason: Reason, note: str) -> None:
        if not self._listed:
            if len(self._held) < 10_000:  # agents reconnecting before the first list
                self._held.append((node, type_, reason, note))
            return
        refs = list(self._refs.get(node, {}).values())
        if not refs:
            if node in self._orphans or len(self._orphans) < ORPHAN_NODES:
                self._orphans.setdefault(node, deque(maxlen=ORPHAN_OCCURRENCES)).append((node, type_, reason, note))
            return
        for ref in refs:
            self._recorder.record(Occurrence(ref=ref, type=type_, reason=reason, note=note))
