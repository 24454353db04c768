"""Agents as real processes against the real edge-manager and apiserver, driven with kubectl."""

from __future__ import annotations

import shutil
import signal
import subprocess

import pytest

from tests.kit.agents import journal_kinds
from tests.kit.builders import apply
from tests.kit.manifests import expected_files, foreign_files, managed_files
from tests.kit.waits import wait_for


def converge(a, mgr, node: str) -> None:
    """Until the agent applied the manager's head for its node and its folder equals the manager's view."""
    wait_for(lambda: mgr.head(node) > 0 or mgr.desired(node) == {}, timeout=60, what="the manager to record")
    a.wait_applied(mgr.head(node), timeout=90)
    a.wait_files(expected_files(mgr.desired(node)))


def assert_journal_once(a, mgr, node: str, *, snapshots: int) -> None:
    with a.replica() as r:
        snaps, events = journal_kinds(r)
        assert len(snaps) == snapshots, (snaps, events)
        assert events == mgr.node_events(node, after=snaps[-1])  # each of its node's events once, in order
        with mgr.store() as s:
            assert r.state().digest == s.node_state(node).digest


def test_new_agent_gets_its_pods_and_later_changes_as_events(control_plane, manager, namespace, agents):
    cp, mgr = control_plane, manager
    node = f"edge-{namespace[-6:]}"
    apply(cp, node, namespace, {"nginx": "nginx:1.25", "web": "web:1"})
    apply(cp, "someone-else", namespace, {"nginx": "nginx:1.25"})
    mgr.start().wait_ready()
    a = agents(node=node, servers=[mgr.address])
    foreign = a.foreign
    a.start()
    converge(a, mgr, node)
    assert sorted(managed_files(a.manifests)) == [f"k8s-edge_{namespace}_nginx.json", f"k8s-edge_{namespace}_web.json"]

    apply(cp, node, namespace, {"nginx": "nginx:1.26", "api": "api:1"})  # changed, removed, added
    wait_for(lambda: len(mgr.desired(node)) == 2 and (namespace, "api") in mgr.desired(node), timeout=60,
             what="the manager to record the change")
    converge(a, mgr, node)
    assert a.metrics()["k8s_edge_agent_snapshots_installed_total"] == 1
    assert a.metrics()["k8s_edge_agent_events_applied_total"] == 3
    assert_journal_once(a, mgr, node, snapshots=1)

    # the manager's status shows the agent's acknowledged offset
    def synced() -> bool:
        out = cp.kubectl("get", "edgenode", node, "-n", namespace, "-o", "jsonpath={.status.syncedOffset}").stdout
        return out.strip() == str(mgr.head(node))
    wait_for(synced, timeout=90, what="EdgeNode status.syncedOffset to reach the head")

    cp.kubectl("delete", "edgenode", node, "-n", namespace)
    wait_for(lambda: mgr.desired(node) == {}, timeout=60, what="the manager to record the deletion")
    converge(a, mgr, node)
    assert managed_files(a.manifests) == {}
    assert foreign_files(a.manifests) == foreign
    for line in ("Starting edge agent", "Starting sync agent", "Starting sync edge spec"):
        assert line in a.log()


@pytest.mark.parametrize("point", ["crash-after-commit", "crash-after-files"])
def test_sigkill_at_each_step_then_restart(control_plane, manager, namespace, agents, point):
    cp, mgr = control_plane, manager
    node = f"edge-{namespace[-6:]}"
    apply(cp, node, namespace, {f"p{i}": "nginx:1" for i in range(4)})
    mgr.start().wait_ready()
    a = agents(node=node, servers=[mgr.address])
    foreign = a.foreign
    a.start()
    converge(a, mgr, node)
    a.stop()
    a.set_env(K8S_EDGE_FAULT=point)
    a.start()
    a.wait_ready()
    apply(cp, node, namespace, {"p0": "nginx:2", "p2": "nginx:1", "p3": "nginx:1", "p9": "nginx:1"})
    wait_for(lambda: a.proc.poll() is not None, timeout=90, what="the agent to die at its fault point",
             on_timeout=a.log_tail)
    assert a.proc.returncode == -signal.SIGKILL and "TEST FAULT: SIGKILL" in a.log()
    apply(cp, node, namespace, {"p0": "nginx:3", "p9": "nginx:1", "p5": "nginx:1"})  # more while it is dead
    a.set_env(K8S_EDGE_FAULT=None)
    a.start()
    wait_for(lambda: (namespace, "p5") in mgr.desired(node), timeout=60, what="the manager to record")
    converge(a, mgr, node)
    assert_journal_once(a, mgr, node, snapshots=1)
    assert foreign_files(a.manifests) == foreign


def test_agent_restarted_while_manager_down(control_plane, manager, namespace, agents):
    cp, mgr = control_plane, manager
    node = f"edge-{namespace[-6:]}"
    apply(cp, node, namespace, {"a": "nginx:1", "b": "nginx:1"})
    mgr.start().wait_ready()
    a = agents(node=node, servers=[mgr.address])
    foreign = a.foreign
    a.start()
    converge(a, mgr, node)
    before = managed_files(a.manifests)
    mgr.stop()
    a.stop()
    for f in before:
        (a.manifests / f).unlink()
    a.start()
    a.wait_files(before)  # restored from the replica with no manager
    a.wait_log("retrying in")
    apply(cp, node, namespace, {"a": "nginx:2", "c": "nginx:1"})  # changed while the manager is down
    mgr.start().wait_ready()
    wait_for(lambda: (namespace, "c") in mgr.desired(node), timeout=60, what="the manager to catch up")
    converge(a, mgr, node)
    assert_journal_once(a, mgr, node, snapshots=1)  # the changes came as events
    assert foreign_files(a.manifests) == foreign


def test_new_log_id_sends_a_snapshot_that_removes_pods(control_plane, manager, namespace, agents):
    cp, mgr = control_plane, manager
    node = f"edge-{namespace[-6:]}"
    apply(cp, node, namespace, {"a": "nginx:1", "b": "nginx:1", "c": "nginx:1"})
    mgr.start().wait_ready()
    a = agents(node=node, servers=[mgr.address])
    foreign = a.foreign
    a.start()
    converge(a, mgr, node)
    mgr.stop()
    shutil.rmtree(mgr.data_dir)  # the manager's data is lost: it rebuilds a new log from Kubernetes
    apply(cp, node, namespace, {"c": "nginx:2"})
    mgr.start().wait_ready()
    converge(a, mgr, node)
    assert sorted(managed_files(a.manifests)) == [f"k8s-edge_{namespace}_c.json"]
    with a.replica() as r, mgr.store() as s:
        assert r.cursor().log_id == s.log_id
        assert len(journal_kinds(r)[0]) == 2
    assert foreign_files(a.manifests) == foreign


def test_compacted_position_sends_a_snapshot_that_removes_pods(control_plane, manager, namespace, agents):
    cp, mgr = control_plane, manager
    mgr.cmd += ["--retain-events", "1", "--compaction-interval", "1s"]
    node = f"edge-{namespace[-6:]}"
    apply(cp, node, namespace, {"a": "nginx:1", "b": "nginx:1", "c": "nginx:1"})
    mgr.start().wait_ready()
    a = agents(node=node, servers=[mgr.address])
    foreign = a.foreign
    a.start()
    converge(a, mgr, node)
    a.stop()
    apply(cp, node, namespace, {"b": "nginx:2", "d": "nginx:1"})
    apply(cp, node, namespace, {"d": "nginx:2"})

    def compacted() -> bool:
        with mgr.store() as s:
            return s.node_state(node).compacted_through > 3
    wait_for(compacted, timeout=60, what="the manager to compact the agent's position away")
    a.start()
    converge(a, mgr, node)
    assert sorted(managed_files(a.manifests)) == [f"k8s-edge_{namespace}_d.json"]
    assert "compacted" in a.log()
    assert a.metrics()["k8s_edge_agent_snapshots_installed_total"] == 1
    assert foreign_files(a.manifests) == foreign


def test_unwritable_folder_shows_in_the_edgenode_status(control_plane, manager, namespace, agents):
    """chattr +i (root ignores chmod): the agent reports ManifestsFailed; once writable, the repair clears it."""
    cp, mgr = control_plane, manager
    node = f"edge-{namespace[-6:]}"
    apply(cp, node, namespace, {"a": "nginx:1"})
    mgr.start().wait_ready()
    a = agents(node=node, servers=[mgr.address])
    a.start()
    converge(a, mgr, node)

    def pods_condition() -> tuple[str, str]:
        out = cp.kubectl("get", "edgenode", node, "-n", namespace, "-o",
                         'jsonpath={.status.conditions[?(@.type=="PodsRunning")].reason}|'
                         '{.status.conditions[?(@.type=="PodsRunning")].message}').stdout
        reason, _, message = out.partition("|")
        return reason, message

    r = subprocess.run(["chattr", "+i", str(a.manifests)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot make the folder immutable: {r.stderr.strip()}")
    try:
        apply(cp, node, namespace, {"a": "nginx:2", "b": "nginx:1"})
        wait_for(lambda: pods_condition()[0] == "ManifestsFailed", timeout=90,
                 what="the EdgeNode status to show ManifestsFailed")
        assert "Operation not permitted" in pods_condition()[1]
        a.wait_applied(mgr.head(node))  # the replica kept following: nothing lost
    finally:
        subprocess.run(["chattr", "-i", str(a.manifests)], check=True)
    converge(a, mgr, node)
    wait_for(lambda: pods_condition()[0] not in ("", "ManifestsFailed"), timeout=90,
             what="the EdgeNode status to clear ManifestsFailed")
