"""The Event correlator follows client-go's tools/record: aggregate similar, dedup identical, rate-limit per object.

Pure logic with a hand-driven clock, and proven against client-go's own EventCorrelator (a
small Go program, clientgo_correlator/, built against the control plane's pinned modules).
The API server's side is in test_describing_edgenodes.py.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from loguru import logger

from eventlog import SnapshotCause, SnapshotReason, Source
from manager.events import (
    AGGREGATE_PREFIX,
    Correlator,
    EdgeNodeEvents,
    EdgeNodeRef,
    EventNotFound,
    EventRecorder,
    EventType,
    Occurrence,
    Reason,
)
from manager.recording import DesiredNode, Rejection

REF = EdgeNodeRef("ns", "edge01", "uid-1")
OTHER = EdgeNodeRef("ns", "edge02", "uid-2")


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def occ(note: str, *, ref: EdgeNodeRef = REF, reason: Reason = Reason.AGENT_CONNECTED,
        type_: EventType = EventType.NORMAL) -> Occurrence:
    return Occurrence(ref=ref, type=type_, reason=reason, note=note)


def correlator(clock: Clock) -> Correlator:
    return Correlator(reporting_instance="edge-manager-test", clock=clock)


def test_the_first_occurrence_creates_an_event_regarding_the_edgenode():
    w = correlator(Clock()).correlate(occ("agent connected from 10.0.0.1:1"))
    assert w is not None and w.patch is None and w.namespace == "ns" and w.name.startswith("edge01.")
    b = w.body
    assert b["regarding"] == {"apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode", "namespace": "ns",
                              "name": "edge01", "uid": "uid-1"}
    assert (b["type"], b["reason"], b["action"], b["note"]) == ("Normal", "AgentConnected", "Connect",
                                                               "agent connected from 10.0.0.1:1")
    assert b["reportingController"] == "edge.k8s.io/edge-manager" and b["reportingInstance"] == "edge-manager-test"
    assert b["eventTime"].endswith("Z") and "series" not in b


def test_identical_occurrences_patch_the_series_of_one_event():
    clock = Clock()
    c = correlator(clock)
    first = c.correlate(occ("same"))
    clock.t += 7
    second = c.correlate(occ("same"))
    clock.t += 1
    third = c.correlate(occ("same"))
    assert second.name == third.name == first.name
    assert second.patch == {"series": {"count": 2, "lastObservedTime": second.body["series"]["lastObservedTime"]}}
    assert third.patch["series"]["count"] == 3
    assert third.body["eventTime"] == first.body["eventTime"]  # a 404 on the patch re-creates the same Event


def test_similar_occurrences_are_combined_from_the_tenth_distinct_note():
    clock = Clock()
    c = correlator(clock)
    writes = []
    for i in range(15):
        clock.t += 1
        writes.append(c.correlate(occ(f"agent connected from 10.0.0.1:{i}")))
    assert [w.patch is None for w in writes[:9]] == [True] * 9  # nine Events of their own
    combined = writes[9:]
    assert len({w.name for w in combined}) == 1 and combined[0].patch is None
    assert combined[0].body["note"] == AGGREGATE_PREFIX + "agent connected from 10.0.0.1:9"
    assert [w.patch["series"]["count"] for w in combined[1:]] == [2, 3, 4, 5, 6]


def test_similar_occurrences_ten_minutes_apart_are_not_combined():
    clock = Clock()
    c = correlator(clock)
    for i in range(20):
        clock.t += 601
        w = c.correlate(occ(f"note {i}"))
        assert w.patch is None and not w.body["note"].startswith(AGGREGATE_PREFIX)


def test_each_object_and_type_has_a_bucket_of_25_refilled_one_per_5_minutes():
    clock = Clock()
    c = correlator(clock)
    assert all(c.correlate(occ("same")) is not None for _ in range(25))
    assert c.correlate(occ("same")) is None  # 26th within the burst: dropped
    assert c.correlate(occ("w", type_=EventType.WARNING, reason=Reason.AGENT_DISCONNECTED)) is not None
    assert c.correlate(occ("same", ref=OTHER)) is not None  # another EdgeNode has its own bucket
    clock.t += 299
    assert c.correlate(occ("same")) is None
    clock.t += 2
    w = c.correlate(occ("same"))
    assert w is not None and w.patch["series"]["count"] == 28  # dropped ones still counted, as client-go does
    assert c.correlate(occ("same")) is None


def test_a_long_note_is_cut_to_what_the_api_server_accepts():
    w = correlator(Clock()).correlate(occ("é" * 2000))
    assert len(w.body["note"].encode()) <= 1024 and w.body["note"].endswith("...")


class Sink:
    def __init__(self, *, fail: bool = False, missing: bool = False) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.fail, self.missing = fail, missing

    def create(self, namespace: str, body: dict[str, Any]) -> None:
        if self.fail:
            raise OSError("connection refused")
        self.calls.append(("create", namespace, body))

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        if self.missing:
            raise EventNotFound(name)
        self.calls.append(("patch", name, body))


def test_the_recorder_writes_on_its_own_thread_and_recreates_an_expired_event():
    sink = Sink(missing=True)
    rec = EventRecorder(sink, reporting_instance="i")
    rec.record(occ("same"))
    rec.record(occ("same"))
    assert rec.wait_idle()
    assert [(k, b.get("series", {}).get("count")) for k, _, b in sink.calls] == [("create", None), ("create", 2)]
    rec.close()
    rec.record(occ("after close"))
    assert rec.stats.written == 2 and len(sink.calls) == 2


@pytest.fixture
def warnings():
    seen: list[str] = []
    handler = logger.add(lambda m: seen.append(str(m)), level="WARNING")
    yield seen
    logger.remove(handler)


def test_a_failing_api_is_logged_once_and_its_events_dropped(warnings):
    rec = EventRecorder(Sink(fail=True), reporting_instance="i")
    for i in range(5):
        rec.record(occ(f"n{i}"))
    assert rec.wait_idle()
    rec.close()
    assert rec.stats.dropped_failed == 5
    assert sum("writing Event" in m for m in warnings) == 1


# -- differential: client-go's own EventCorrelator on the same script --------------------

def _script() -> list[dict[str, Any]]:
    """Occurrences that exercise dedup, aggregation, its interval and the token bucket."""
    steps: list[dict[str, Any]] = []
    t = 0.0

    def at(dt: float, obj: str, type_: str, reason: str, note: str) -> None:
        nonlocal t
        t += dt
        steps.append({"at": t, "object": obj, "type": type_, "reason": reason, "note": note})

    for _ in range(12):
        at(1, "a", "Normal", "SnapshotSent", "snapshot sent: empty replica")
    for i in range(15):  # a flapping agent: a new peer port each time
        at(0.5, "b", "Normal", "AgentConnected", f"agent connected from 10.0.0.1:{40000 + i}")
        at(0.5, "b", "Warning", "AgentDisconnected", "agent disconnected (Offline)")
        at(0.1, "b", "Normal", "SnapshotSent", "snapshot sent: empty replica")
    at(200, "b", "Warning", "AgentDisconnected", "agent disconnected (Offline)")
    at(301, "b", "Warning", "AgentDisconnected", "agent disconnected (Offline)")
    at(0, "b", "Normal", "SnapshotSent", "snapshot sent: empty replica")  # refilled: one more token
    at(0, "b", "Normal", "SnapshotSent", "snapshot sent: empty replica")
    at(1, "b", "Warning", "AgentDisconnected", "agent disconnected (Offline)")
    for i in range(12):  # similar notes, but more than ten minutes apart
        at(601, "c", "Warning", "PodRejected", f"pod 'p{i}' rejected: a Secret volume")
    for i in range(12):
        at(1, "d", "Warning", "PodRejected", f"pod 'p{i}' rejected: a Secret volume")
    return steps


def _ours(steps: list[dict[str, Any]]) -> list[str]:
    clock = Clock()
    start = clock.t
    c = correlator(clock)
    names: dict[str, int] = {}
    out = []
    for s in steps:
        clock.t = start + s["at"]
        ref = EdgeNodeRef("ns", s["object"], "uid-" + s["object"])
        w = c.correlate(Occurrence(ref=ref, type=EventType(s["type"]), reason=Reason(s["reason"]), note=s["note"]))
        if w is None:
            out.append("skip")
            continue
        n = names.setdefault(w.name, len(names))
        verb, count = ("create", 1) if w.patch is None else ("patch", w.patch["series"]["count"])
        out.append(f"{verb} {n} {count} {w.body['note']}")
    return out


def test_decisions_match_client_go_event_correlator(clientgo_correlator):
    steps = _script()
    theirs = subprocess.run([str(clientgo_correlator)], input="\n".join(json.dumps(s) for s in steps) + "\n",
                            capture_output=True, text=True, check=True).stdout.splitlines()
    ours = _ours(steps)
    assert len(theirs) == len(steps)
    for i, (o, t) in enumerate(zip(ours, theirs, strict=True)):
        if t.startswith("patch") and AGGREGATE_PREFIX in t:
            # client-go rewrites a combined Event's message on each patch; events.k8s.io/v1 notes are immutable
            o, t = o.split(AGGREGATE_PREFIX)[0], t.split(AGGREGATE_PREFIX)[0]
        assert o == t, f"step {i} {steps[i]}: ours {o!r}, client-go {t!r}"
    assert {line.split()[0] for line in ours} == {"create", "patch", "skip"}


# -- what becomes an Event (EdgeNodeEvents, with a recording sink) -----------------------

def _desired(namespace: str, node: str, uid: str, rejected: tuple = ()) -> DesiredNode:
    return DesiredNode(namespace=namespace, node=node, source=Source(uid=uid, resource_version="1", generation=1),
                       rejected=rejected)


def _notes(sink: Sink) -> list[tuple[str, str, str, str]]:
    """(namespace, reason, type, note) of each write; a patch names the Event it counts up."""
    created = {b["metadata"]["name"]: b for k, _, b in sink.calls if k == "create"}
    bodies = [b if k == "create" else created[name] for k, name, b in sink.calls]
    return [(b["regarding"]["namespace"], b["reason"], b["type"], b["note"]) for b in bodies]


def test_node_events_go_to_each_edgenode_of_the_node_and_wait_for_the_first_list():
    sink = Sink()
    rec = EventRecorder(sink, reporting_instance="i")
    ev = EdgeNodeEvents(rec)
    ev.connected("edge01", peer="ipv4:10.0.0.1:5")  # an agent reconnecting before the manager listed
    assert rec.wait_idle() and sink.calls == []
    ev.edgenode_listed([_desired("a", "edge01", "u1"), _desired("b", "edge01", "u2"), _desired("a", "edge02", "u3")])
    ev.disconnected("edge01", offline=True)
    ev.snapshot_sent("edge02", cause=SnapshotCause(SnapshotReason.EMPTY_REPLICA, "empty replica"))
    ev.edgenode_deleted(("b", "edge01"))
    ev.disconnected("edge01", offline=False)
    assert rec.wait_idle()
    assert _notes(sink) == [
        ("a", "AgentConnected", "Normal", "agent connected from ipv4:10.0.0.1:5"),
        ("b", "AgentConnected", "Normal", "agent connected from ipv4:10.0.0.1:5"),
        ("a", "AgentDisconnected", "Warning", "agent disconnected; no agent of this node is connected (Offline)"),
        ("b", "AgentDisconnected", "Warning", "agent disconnected; no agent of this node is connected (Offline)"),
        ("a", "SnapshotSent", "Normal", "snapshot sent: empty replica"),
        ("a", "AgentDisconnected", "Normal", "agent disconnected; another agent of this node is still connected"),
    ]
    rec.close()


def test_an_agent_that_connected_before_its_edgenode_existed_shows_on_it():
    sink = Sink()
    rec = EventRecorder(sink, reporting_instance="i")
    ev = EdgeNodeEvents(rec)
    ev.edgenode_listed([])
    for i in range(6):  # only the latest few are kept for a node without an EdgeNode
        ev.connected("edge01", peer=f"ipv4:10.0.0.1:{i}")
    assert rec.wait_idle() and sink.calls == []
    ev.edgenode_changed(_desired("a", "edge01", "u1"))
    ev.edgenode_changed(_desired("b", "edge01", "u2"))  # written once, on the first EdgeNode
    assert rec.wait_idle()
    assert [n for ns, _, _, n in _notes(sink)] == [f"agent connected from ipv4:10.0.0.1:{i}" for i in range(2, 6)]
    assert {ns for ns, *_ in _notes(sink)} == {"a"}
    rec.close()


def test_manifest_failures_and_rejections_are_events_when_they_change():
    sink = Sink()
    rec = EventRecorder(sink, reporting_instance="i")
    ev = EdgeNodeEvents(rec)
    ev.edgenode_listed([_desired("a", "edge01", "u1")])
    for _ in range(3):  # the agent reports the same outcome again: no new Event
        ev.reported("edge01", manifests_ok=False, message="disk full")
    ev.reported("edge01", manifests_ok=True, message="")
    ev.reported("edge01", manifests_ok=False, message="disk full")
    ev.rejected(_desired("a", "edge01", "u1", rejected=(Rejection(name="db", reason="a Secret volume"),
                                                         Rejection(name="", reason="pod has no metadata.name"))))
    assert rec.wait_idle()
    assert [(r, n) for _, r, _, n in _notes(sink)] == [
        ("ManifestsFailing", "the agent cannot write its manifests: disk full"),
        ("ManifestsFailing", "the agent cannot write its manifests: disk full"),  # a repeat: its series
        ("PodRejected", "pod 'db' rejected: a Secret volume"),
        ("PodRejected", "pod '(unnamed)' rejected: pod has no metadata.name"),
    ]
    assert [k for k, _, _ in sink.calls] == ["create", "patch", "create", "create"]
    rec.close()
