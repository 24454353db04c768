"""The checker finds what it must: its diff logic on small synthetic stores (no daemons)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from eventlog import Change, JournalEntry, LogStore, ReplicaStore, canonical_manifest
from manager.recording import desired_node
from tests.kit.checker import (
    POD_CHECK, MirrorPodObs, check_agent, check_journal, check_log, check_manifests, check_mirror_pods,
    check_one_history, check_rejections, check_rendering, check_replica_consistent, check_standbys, check_status,
    check_view, compare_stores, digest_as_of, expected_view, journal_snapshots, manifest_file_name, mirror_pods_of, observe_agent,
    observe_manager, unexplained_snapshots,
)
from tests.kit.workload import MALFORMED, MALFORMED_LABEL, edgenode, malformed_pod, pod


def _edgenode(ns: str, node: str, *pods: tuple[str, str]) -> dict:
    return {"apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode",
            "metadata": {"namespace": ns, "name": node, "uid": "u", "resourceVersion": "1", "generation": 1},
            "spec": {"pods": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                               "spec": {"containers": [{"name": "c", "image": image}]}} for name, image in pods]}}


def _put(node: str, ns: str, name: str, image: str) -> Change:
    return Change(node, "put", ns, name, canonical_manifest({"metadata": {"name": name}, "image": image}))


@pytest.fixture
def world(tmp_path: Path):
    """A manager log with two nodes, and edge01's agent replica that followed it faithfully."""
    log = LogStore(tmp_path / "m")
    log.append([_put("edge01", "a", "web", "nginx:1"), _put("edge02", "a", "db", "redis:1")])
    log.append([_put("edge01", "a", "web", "nginx:2"), _put("edge01", "b", "web", "nginx:1")])
    log.append([Change("edge01", "delete", "a", "web")])
    replica = ReplicaStore(tmp_path / "r", node="edge01")
    replica.install_snapshot(replace(log.snapshot("nonexistent"), node="edge01", offset=0))
    events = log.read_node("edge01")
    replica.apply(events[:2], log_id=log.log_id)
    replica.apply(events[2:], log_id=log.log_id)
    folder = tmp_path / "manifests"
    folder.mkdir()
    for (ns, name), e in replica.pods().items():
        (folder / manifest_file_name(ns, name)).write_bytes(e.manifest)
    (folder / "kube-proxy.yaml").write_bytes(b"foreign")
    log.close(); replica.close()
    mgr = observe_manager(tmp_path / "m")
    agent = observe_agent("edge01", tmp_path / "r", folder, foreign={"kube-proxy.yaml": b"foreign"})
    return mgr, agent


def test_a_faithful_replica_has_no_problems(world):
    mgr, agent = world
    assert check_log(mgr) == []
    assert check_agent(agent, mgr) == []
    assert check_journal(agent, mgr) == []
    assert check_manifests(agent) == []
    assert len(agent.journal) == 5 and agent.journal[0].event is None


def test_a_missing_event_between_snapshots_is_named(world):
    mgr, agent = world
    journal = tuple(j for j in agent.journal if j.event is None or j.event.offset != 3)
    problems = check_journal(replace(agent, journal=journal), mgr)
    assert any("missing [3]" in p for p in problems), problems


def test_an_event_applied_twice_is_named(world):
    mgr, agent = world
    dup = replace(agent.journal[2], seq=99)
    journal = (*agent.journal[:3], dup, *agent.journal[3:])
    problems = check_journal(replace(agent, journal=journal), mgr)
    assert any("applied again or out of order" in p for p in problems), problems


def test_events_of_a_new_log_without_a_snapshot_are_named(world):
    mgr, agent = world
    journal = tuple(replace(j, log_id="other") if j.event is not None and j.event.offset == 5 else j
                    for j in agent.journal)
    problems = check_journal(replace(agent, journal=journal), mgr)
    assert any("without a snapshot" in p for p in problems), problems


def test_a_replica_behind_the_head_or_diverged_is_named(world):
    mgr, agent = world
    behind = check_agent(replace(agent, applied_offset=3), mgr)
    assert any("applied_offset 3 != node head 5" in p for p in behind)
    wrong = dict(agent.pods)
    key = next(iter(wrong))
    wrong[key] = replace(wrong[key], manifest=b'{"stale":1}')
    diverged = check_agent(replace(agent, pods=wrong), mgr)
    assert any("differs" in p for p in diverged) and any("stored digest" in p for p in diverged)


def test_manifest_folder_differences_are_named(world):
    mgr, agent = world
    files = dict(agent.files)
    files["k8s-edge_a_gone.json"] = b"{}"
    files.pop("kube-proxy.yaml")
    fname = manifest_file_name("b", "web")
    files[fname] = b"edited"
    problems = check_manifests(replace(agent, files=files))
    assert any("stale k8s-edge_a_gone.json" in p for p in problems)
    assert any("foreign file kube-proxy.yaml was removed" in p for p in problems)
    assert any(f"{fname} differs" in p for p in problems)


def test_a_log_gap_and_a_view_that_replay_does_not_give_are_named(world):
    mgr, _ = world
    gap = replace(mgr, events=tuple(e for e in mgr.events if e.offset != 2))
    assert any("not gap-free" in p and "missing [2]" in p for p in check_log(gap))


def test_view_against_desired_state(world):
    mgr, _ = world
    objs = [_edgenode("b", "edge01", ("web", "nginx:1")), _edgenode("a", "edge02", ("db", "redis:1"))]
    expected = expected_view(objs)
    assert check_rendering(objs, expected) == []
    problems = check_view(expected, mgr)
    # the synthetic manifests are not the manager's rendering: both pods differ, nothing is missing
    assert sorted(p.split(" differs")[0] for p in problems) == [
        "manager view of edge01: b/web", "manager view of edge02: a/db"]
    objs.append(_edgenode("c", "edge03", ("x", "busybox")))
    assert any("missing c/x" in p for p in check_view(expected_view(objs), mgr))


def test_status_must_be_synced_at_the_head(world):
    mgr, _ = world
    obj = _edgenode("b", "edge01")
    obj["status"] = {"phase": "Synced", "syncedOffset": 5, "headOffset": 5}
    assert check_status([obj], mgr, ["edge01"]) == []
    obj["status"] = {"phase": "Pending", "syncedOffset": 4, "headOffset": 5}
    assert check_status([obj], mgr, ["edge01"]) and check_status([obj], mgr, ["edge09"]) == []


def test_journal_snapshot_counting(world):
    _, agent = world
    assert [j.snapshot_offset for j in journal_snapshots(agent.journal)] == [0]
    assert isinstance(agent.journal[0], JournalEntry)


def test_snapshots_need_a_reason(world):
    _, agent = world
    assert unexplained_snapshots(agent) == []  # the first snapshot of a fresh replica
    last = agent.journal[-1]
    again = replace(last, seq=last.seq + 1, applied_ns=last.applied_ns + 10, event=None, snapshot_offset=5)
    extra = replace(agent, journal=(*agent.journal, again))
    position = last.event.offset if last.event is not None else last.snapshot_offset
    assert any("within the same log with no compaction" in p for p in unexplained_snapshots(extra))
    assert unexplained_snapshots(extra, compactions=[(last.log_id, position + 2)]) == []  # dropped past it
    assert unexplained_snapshots(extra, compactions=[(last.log_id, position + 1)]) != []  # it could resume
    assert unexplained_snapshots(extra, compactions=[("other", position + 9)]) != []  # another log's
    moved = replace(extra, journal=(*agent.journal, replace(again, log_id="new")))
    assert any("into a new log with no wipe" in p for p in unexplained_snapshots(moved))
    assert unexplained_snapshots(moved, wiped_logs=[last.log_id]) == []
    assert unexplained_snapshots(moved, wiped_logs=["new"]) != []  # the log it left was not the one wiped


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_pod_must_be_refused_and_named_in_the_status(kind):
    obj = edgenode("ns1", "edge01", [pod("web", "nginx"), malformed_pod("db", kind)])
    obj["metadata"]["generation"] = 2
    expected = expected_view([obj])
    assert set(expected["edge01"]) == {("ns1", "web")}  # the manager's rendering refuses it
    assert any("not in status.rejected" in p for p in check_rejections([obj], expected))
    (r,) = desired_node(obj, pod_check=POD_CHECK).rejected
    obj["status"] = {"observedGeneration": 2, "rejected": [{"name": "db", "reason": "stale"}]}
    assert any("want" in p for p in check_rejections([obj], expected))
    obj["status"]["rejected"][0]["reason"] = r.reason
    assert check_rejections([obj], expected) == []
    # a malformed pod that would be sent is found, whatever the status says
    assert any("would be sent" in p for p in check_rejections([obj], {"edge01": {("ns1", "db"): b"{}"}}))
    assert MALFORMED_LABEL in obj["spec"]["pods"][1]["metadata"]["labels"]


def test_status_must_be_running_where_the_kubelet_runs(world):
    mgr, _ = world
    obj = _edgenode("b", "edge01", ("web", "nginx:1"))
    expected = expected_view([obj])
    obj["status"] = {"phase": "Synced", "syncedOffset": 5, "headOffset": 5}
    assert any("want ('Running', 5, 5)" in p for p in
               check_status([obj], mgr, ["edge01"], kubelet_nodes={"edge01"}, expected=expected))
    assert check_status([obj], mgr, ["edge01"], kubelet_nodes=(), expected=expected) == []  # kubelet down: either
    obj["status"]["phase"] = "Running"
    assert check_status([obj], mgr, ["edge01"], kubelet_nodes={"edge01"}, expected=expected) == []
    empty = _edgenode("b", "edge01")  # no pods: Synced is the honest phase, with or without a kubelet
    empty["status"] = {"phase": "Running", "syncedOffset": 5, "headOffset": 5}
    assert check_status([empty], mgr, ["edge01"], kubelet_nodes={"edge01"}, expected=expected_view([empty]))


def _mirror(ns: str, name: str, node: str, image: str, *, phase: str = "Running", ready: bool = True) -> dict:
    return {"metadata": {"namespace": ns, "name": name, "uid": name,
                         "annotations": {"kubernetes.io/config.mirror": "h"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": image}]},
            "status": {"phase": phase, "containerStatuses": [{"name": "c", "ready": ready}]}}


def test_mirror_pods_must_be_exactly_the_desired_pods_running():
    objs = [_edgenode("a", "edge01", ("web", "nginx:1"), ("db", "redis:7")), _edgenode("b", "edge01", ("web", "x:1"))]
    expected = expected_view(objs)
    good = [_mirror("a", "web-edge01", "edge01", "nginx:1"), _mirror("a", "db-edge01", "edge01", "redis:7"),
            _mirror("b", "web-edge01", "edge01", "x:1")]
    plain = {"metadata": {"namespace": "a", "name": "other"}, "spec": {"nodeName": "edge01", "containers": []}}
    assert check_mirror_pods(expected, mirror_pods_of([*good, plain], ["edge01"]), {"edge01"}) == []
    assert check_mirror_pods(expected, (), ()) == []  # no kubelet runs: nothing to check
    bad = [_mirror("a", "web-edge01", "edge01", "nginx:2"), _mirror("a", "db-edge01", "edge01", "redis:7",
                                                                     phase="Pending", ready=False),
           _mirror("a", "stale-edge01", "edge01", "busybox"), _mirror("b", "web-edge02", "edge02", "x:1")]
    problems = check_mirror_pods(expected, mirror_pods_of(bad, ["edge01", "edge02"]), {"edge01"})
    assert any("no mirror pod b/web-edge01" in p for p in problems)
    assert any("unexpected mirror pod a/stale-edge01" in p for p in problems)
    assert any("a/web-edge01 has images (('c', 'nginx:2'),)" in p for p in problems)
    assert any("a/db-edge01 is Pending, not ready" in p for p in problems)
    assert not any("edge02" in p for p in problems)  # edge02's kubelet is not one we check
    assert isinstance(mirror_pods_of(bad, ["edge01"])[0], MirrorPodObs)


# -- several managers (HA, issue #14) ----------------------------------------------------------


def test_an_agent_behind_the_head_is_within_the_leaders_history(world):
    mgr, agent = world
    assert check_replica_consistent(agent, mgr) == []
    at3 = digest_as_of(mgr, "edge01", 3)  # after a/web became nginx:2, before b/web was added
    assert at3 is not None and at3 not in (agent.digest, digest_as_of(mgr, "edge01", 1))
    assert digest_as_of(mgr, "edge01", 2) == digest_as_of(mgr, "edge01", 1)  # offset 2 is edge02's
    assert check_replica_consistent(replace(agent, applied_offset=3, digest=at3), mgr) == []


def test_an_agent_with_a_state_the_leader_never_had_is_named(world):
    mgr, agent = world
    other = check_replica_consistent(replace(agent, applied_offset=3), mgr)  # head's digest at offset 3
    assert any("a state the leader's history never had" in p for p in other), other
    ahead = check_replica_consistent(replace(agent, applied_offset=9), mgr)
    assert any("ahead of the leader's head 5" in p for p in ahead), ahead
    foreign = check_replica_consistent(replace(agent, log_id="deposed"), mgr)
    assert any("follows log deposed" in p for p in foreign), foreign
    assert check_replica_consistent(replace(agent, log_id="", applied_offset=0, digest=0), mgr) == []  # never synced


def test_a_running_standby_must_hold_the_leaders_whole_log(world):
    mgr, _ = world
    same = replace(mgr)
    assert check_standbys(mgr, {"m0": mgr, "m1": same}, {"m0", "m1"}) == []
    behind = replace(mgr, head_offset=4)
    assert any("head 4, the leader's is 5" in p for p in check_standbys(mgr, {"m0": mgr, "m1": behind}, {"m0", "m1"}))
    assert check_standbys(mgr, {"m0": mgr, "m1": behind}, {"m0"}) == []  # down: nothing to hold
    other_log = replace(mgr, log_id="other")
    assert any("log other" in p for p in check_standbys(mgr, {"m0": mgr, "m1": other_log}, {"m0", "m1"}))
    view = {n: dict(v) for n, v in mgr.view.items()}
    view["edge02"] = {}
    assert any("another view" in p for p in check_standbys(mgr, {"m0": mgr, "m1": replace(mgr, view=view)},
                                                          {"m0", "m1"}))


def test_one_history_names_a_deposed_leaders_tail(tmp_path):
    """Two manager stores of one log_id that hold different records at one offset are two histories."""
    with LogStore(tmp_path / "leader") as lead:
        lead.copy_to(tmp_path / "standby")
        lead.append([_put("edge01", "a", "web", "nginx:1")])
        with lead.reader() as r:
            records = [v for _, v in r.records()]
    with LogStore(tmp_path / "standby") as standby:
        standby.append_records(records)
    same = compare_stores([tmp_path / "leader", tmp_path / "standby"])
    assert check_one_history(same) == [] and same.offsets_compared == 1
    with LogStore(tmp_path / "leader") as lead:
        lead.append([_put("edge01", "a", "web", "nginx:2")])  # offset 2 on the deposed leader alone
    with LogStore(tmp_path / "standby") as standby:
        standby.append([_put("edge01", "a", "web", "nginx:3")])  # offset 2 on the new leader
    problems = check_one_history(compare_stores([tmp_path / "leader", tmp_path / "standby"]))
    assert len(problems) == 1 and "different records at offset 2" in problems[0], problems
