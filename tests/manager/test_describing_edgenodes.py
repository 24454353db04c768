"""`kubectl describe edgenode` shows the manager's Events: what happened to the node's agent and pods.

A real edge-manager against the real API server; a raw gRPC test agent stands in for the edge.
"""

from __future__ import annotations

import json

from manager.events import AGGREGATE_PREFIX
from tests.kit.builders import apply
from tests.kit.fake_agents import FakeAgent
from tests.kit.waits import wait_for


def edge_events(cp, ns: str, name: str) -> list[dict]:
    """events.k8s.io/v1 Events regarding EdgeNode `name`."""
    items = json.loads(cp.kubectl("get", "events.v1.events.k8s.io", "-n", ns, "-o", "json").stdout)["items"]
    return [e for e in items if e["regarding"].get("kind") == "EdgeNode" and e["regarding"]["name"] == name]


def by_reason(evs: list[dict], reason: str) -> list[dict]:
    return [e for e in evs if e["reason"] == reason]


def count(e: dict) -> int:
    return (e.get("series") or {}).get("count", 1)


def describe_events(cp, ns: str, name: str) -> list[list[str]]:
    """The rows of the Events table of `kubectl describe edgenode` (split on whitespace)."""
    out = cp.kubectl("describe", "edgenode", name, "-n", ns).stdout
    assert "\nEvents:\n" in out, out
    return [line.split() for line in out.split("\nEvents:\n", 1)[1].splitlines()[2:] if line.strip()]


def test_describe_shows_connect_snapshot_rejection_failure_and_disconnect(control_plane, edgenode_crd, namespace,
                                                                          manager_factory, tmp_path):
    cp, ns, data = control_plane, namespace, tmp_path / "data"
    mgr = manager_factory(kubeconfig=cp.kubeconfig, data_dir=data, namespace=ns)
    cp.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode", "metadata": {"name": "edge01", "namespace": ns},
        "spec": {"pods": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
             "spec": {"containers": [{"name": "main", "image": "nginx"}]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "secretive"},
             "spec": {"containers": [{"name": "main", "image": "x"}],
                      "volumes": [{"name": "s", "secret": {"secretName": "creds"}}]}},
        ]}}))
    uid = json.loads(cp.kubectl("get", "edgenode", "edge01", "-n", ns, "-o", "json").stdout)["metadata"]["uid"]
    agent = FakeAgent(mgr.sync_port, "edge01", data)
    try:
        wait_for(lambda: agent.acked >= 1, 60, "the agent in sync")
        agent.report(ok=False, message="write /etc/kubernetes/manifests/web.yaml: read-only file system")
        wait_for(lambda: by_reason(edge_events(cp, ns, "edge01"), "ManifestsFailing"), 60, "ManifestsFailing")
    finally:
        agent.close()
    evs = wait_for(lambda: (e := edge_events(cp, ns, "edge01")) and by_reason(e, "AgentDisconnected") and e,
                   60, "AgentDisconnected")

    for e in evs:  # what describe and `kubectl events --for` find them by
        assert e["regarding"] == {"apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode", "namespace": ns,
                                  "name": "edge01", "uid": uid}
        assert e["reportingController"] == "edge.k8s.io/edge-manager"
        assert e["reportingInstance"].startswith("edge-manager-")
    (rejected,) = by_reason(evs, "PodRejected")
    assert rejected["type"] == "Warning" and rejected["action"] == "Record"
    assert rejected["note"].startswith("pod 'secretive' rejected: volume 's' is a Secret volume")
    (snapshot,) = by_reason(evs, "SnapshotSent")
    assert snapshot["type"] == "Normal" and snapshot["note"].startswith("snapshot sent: ")
    (failing,) = by_reason(evs, "ManifestsFailing")
    assert failing["type"] == "Warning" and "read-only file system" in failing["note"]
    (gone,) = by_reason(evs, "AgentDisconnected")
    assert gone["type"] == "Warning" and "(Offline)" in gone["note"]

    rows = describe_events(cp, ns, "edge01")
    shown = {(r[0], r[1]) for r in rows}
    assert {("Normal", "AgentConnected"), ("Normal", "SnapshotSent"), ("Warning", "PodRejected"),
            ("Warning", "ManifestsFailing"), ("Warning", "AgentDisconnected")} <= shown, rows
    assert all("edge.k8s.io/edge-manager" in r for r in rows), rows
    listed = cp.kubectl("events", "--for", "edgenode/edge01", "-n", ns).stdout
    assert all(reason in listed for reason in ("AgentConnected", "PodRejected", "AgentDisconnected")), listed
    assert mgr.stop() == 0


def test_a_flapping_agent_gets_combined_and_rate_limited_events_not_one_per_flap(control_plane, edgenode_crd,
                                                                                 namespace, manager_factory,
                                                                                 tmp_path):
    cp, ns, data, flaps = control_plane, namespace, tmp_path / "data", 30
    mgr = manager_factory(kubeconfig=cp.kubeconfig, data_dir=data, namespace=ns)
    apply(cp, "edge01", ns, {"web": "nginx"})
    wait_for(lambda: "recorded 1 event(s)" in mgr.log(), 60, "the pod recorded")
    for i in range(flaps):
        agent = FakeAgent(mgr.sync_port, "edge01", data)  # a new channel: a new peer port each time
        wait_for(lambda: agent.acked >= 1, 60, f"flap {i}: the agent in sync")
        agent.close()
        wait_for(lambda: mgr.log().count("agent of node edge01 disconnected") == i + 1, 60, f"flap {i} noticed")

    # the Warning bucket of edge01 holds only disconnects: 1 create + 24 series patches, then dropped
    evs = wait_for(lambda: (e := edge_events(cp, ns, "edge01")) and any(
        count(d) == 25 for d in by_reason(e, "AgentDisconnected")) and e, 60, "25 disconnects written")
    (gone,) = by_reason(evs, "AgentDisconnected")
    assert count(gone) == 25 < flaps and gone["series"]["lastObservedTime"]

    connected = by_reason(evs, "AgentConnected")
    combined = [e for e in connected if e["note"].startswith(AGGREGATE_PREFIX + "agent connected from ")]
    # nine notes of their own, then one combined Event
    assert len(connected) == 10 and len(combined) == 1, [(e["note"], count(e)) for e in connected]
    assert len(evs) < flaps, [(e["reason"], e["note"]) for e in evs]
    normal_written = sum(count(e) for e in evs if e["type"] == "Normal")
    assert normal_written <= 25  # the Normal bucket: connects and snapshots together, burst 25

    rows = describe_events(cp, ns, "edge01")
    assert any(r[:2] == ["Warning", "AgentDisconnected"] and "(x25" in " ".join(r) for r in rows), rows
    assert mgr.stop() == 0
