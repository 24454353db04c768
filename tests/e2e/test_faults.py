"""One named scenario per fault: EdgeNodes change during the fault, the system heals, every invariant holds.

Each test starts a manager and three agents (each behind its own Toxiproxy proxy), brings
them in sync, injects one fault, changes EdgeNodes with the built kubectl while it lasts,
heals, and runs the convergence checker. Snapshots are counted from the agents' journals:
a fault that neither replaces the log nor compacts past an agent must not cause one.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.kit import checker
from tests.kit.harness import EdgeSystem
from tests.kit.manifests import managed_files
from tests.kit.waits import wait_for
from tests.kit.workload import Workload, pod


pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def world(edge_system, e2e_control_plane, e2e_namespaces, seed):
    """A converged system with EdgeNodes for every node (one node also in a second namespace)."""
    system: EdgeSystem = edge_system(seed=seed)
    ns_a, ns_b = e2e_namespaces
    w = Workload(e2e_control_plane.kubectl, e2e_namespaces, list(system.agents), random.Random(seed))
    w.apply([
        *({"apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode", "metadata": {"namespace": ns_a, "name": n},
           "spec": {"pods": [pod("web", "nginx:1.27"), pod("cache", "redis:7")]}} for n in system.agents),
        {"apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode", "metadata": {"namespace": ns_b, "name": "edge01"},
         "spec": {"pods": [pod("web", "busybox:1.36")]}},  # same pod name, other namespace, same node
    ])
    system.wait_converged(context="initial sync")
    return system, w


def wait_recorded(system: EdgeSystem, *, timeout: float = 60) -> None:
    """Wait until the manager's log holds the API's desired state (agents may lag)."""
    def recorded() -> bool:
        obs = system.observe()
        return not checker.check_view(checker.expected_view(obs.edgenodes), obs.manager)
    wait_for(recorded, timeout=timeout, max_interval=1.0, what="the manager to record the API's desired state",
             on_timeout=system.log_tails)


def running_pods(system: EdgeSystem, *nodes: str) -> dict[tuple[str, str], tuple]:
    """(namespace, mirror pod) -> (images, uid) of the Running, ready mirror pods on nodes."""
    return {(m.namespace, m.name): (m.images, m.uid) for m in system.mirror_pods()
            if m.node in nodes and m.phase == "Running" and m.ready}


def changes(w: Workload, node: str = "edge01") -> None:
    """A create, an update, a patch and a delete touching `node` and one other node."""
    ns_a, ns_b = w.namespaces
    w.put(ns_a, node, [pod("web", "nginx:1.28", revision=1), pod("metrics", "busybox:1.37")])  # update + add + remove
    w.patch_image(ns_a, "edge02", 0, "alpine:3.20")
    w.delete(ns_b, "edge01")
    w.put(ns_b, "edge03", [pod("db", "redis:7")])  # create


def test_partition_heals_by_resuming_without_snapshot(world):
    system, w = world
    before = system.snapshot_counts()
    kept = running_pods(system, "edge01")
    system.partition("edge01")
    changes(w)
    wait_recorded(system)
    time.sleep(2)  # edge01 stays cut off while others move on
    assert running_pods(system, "edge01") == kept, "a partitioned node keeps running its pods"
    system.heal("edge01")
    system.wait_converged(context="partition healed")
    assert system.snapshot_counts() == before, "a healed partition must resume, not snapshot"


def test_connection_reset_heals_by_resuming_without_snapshot(world):
    system, w = world
    before = system.snapshot_counts()
    system.reset_peer("edge01")
    system.reset_peer("edge02")
    changes(w)
    wait_recorded(system)
    time.sleep(3)  # reconnect attempts are reset too
    system.heal()
    system.wait_converged(context="connection resets healed")
    assert system.snapshot_counts() == before


def test_black_hole_is_noticed_by_keepalive(world):
    system, w = world
    before = system.snapshot_counts()
    system.black_hole("edge01")
    started = time.monotonic()
    changes(w)
    wait_recorded(system)

    def offline() -> bool:  # the manager noticed the silent peer: the EdgeNode says so
        for o in system.edgenodes():
            if o["metadata"]["name"] == "edge01":
                st = o.get("status") or {}
                conn = {c["type"]: c["status"] for c in st.get("conditions", [])}.get("Connected")
                if st.get("phase") == "Offline" or conn == "False":
                    return True
        return False
    wait_for(offline, timeout=120, max_interval=1.0,
             what="edge01 to be reported Offline (keepalive) during a black hole",
             on_timeout=system.log_tails)
    print(f"[e2e] black hole noticed after {time.monotonic() - started:.0f}s")
    system.heal("edge01")
    system.wait_converged(context="black hole healed")
    assert system.snapshot_counts() == before


def test_latency_and_bandwidth_limit_still_converge(world):
    system, w = world
    before = system.snapshot_counts()
    system.slow("edge01", latency_ms=400)
    system.narrow("edge02", rate_kb=2)
    changes(w)
    big = [pod(f"p{i}", "busybox:1.36", revision=i) for i in range(40)]  # ~12 KB of manifests through 2 KB/s
    w.put(w.namespaces[0], "edge02", big)
    system.wait_converged(context="under latency and a bandwidth limit", timeout=180)
    system.heal()
    system.wait_converged(context="after healing")
    assert system.snapshot_counts() == before


def test_manager_kill9_and_restart(world):
    system, w = world
    before = system.snapshot_counts()
    kept = running_pods(system, *system.agents)
    system.kill_manager()
    changes(w)  # deletions made while the manager is down must be recorded once it is back
    w.delete(w.namespaces[0], "edge03")
    time.sleep(2)
    assert running_pods(system, *system.agents) == kept, "without a manager every node keeps running its pods"
    system.start_manager()
    system.wait_converged(context="manager restarted")
    assert system.snapshot_counts() == before, "same log_id: agents must resume"


def test_agent_kill9_and_restart(world):
    system, w = world
    before = system.snapshot_counts()
    kept = running_pods(system, "edge01")
    system.kill_agent("edge01")
    changes(w)
    wait_recorded(system)
    assert running_pods(system, "edge01") == kept, "a node whose agent is down keeps running its pods"
    # a hand-deleted and a hand-edited manifest while the agent is down come back
    folder = system.agents["edge01"].manifest_dir
    files = sorted(managed_files(folder))
    (folder / files[0]).unlink()
    (folder / files[-1]).write_text("{}")
    system.start_agent("edge01")
    system.wait_converged(context="agent restarted")
    assert system.snapshot_counts() == before


def test_kubelet_kill9_and_restart(world):
    """Changes made while a node's kubelet is down run once it is back on the same folder; the others keep running.

    A hollow kubelet gets a new temp root on each start and kubelet hashes the manifest's path into
    a static pod's UID, so here (unlike a real kubelet) every mirror pod of the node is recreated."""
    system, w = world
    before = system.snapshot_counts()
    untouched = {k: v for k, v in running_pods(system, "edge01").items() if k[0] == w.namespaces[0]}
    system.kill_kubelet("edge03")
    changes(w, node="edge03")  # edge03: ns_a pods replaced, one pod created in ns_b; edge01's ns_a pods untouched
    system.wait_converged(context="kubelet of edge03 down")  # the agents caught up; edge03's pods not checked
    system.start_kubelet("edge03")
    obs = system.wait_converged(context="kubelet of edge03 restarted")
    assert {(m.namespace, m.name) for m in obs.mirror_pods if m.node == "edge03"} == {
        (w.namespaces[0], "web-edge03"), (w.namespaces[0], "metrics-edge03"), (w.namespaces[1], "db-edge03")}
    assert len(untouched) == 2 and {k: v for k, v in running_pods(system, "edge01").items() if k in untouched} == \
        untouched, "another node's untouched pods kept running, same mirror pods"
    assert system.snapshot_counts() == before


def test_agent_restores_manifests_from_replica_without_manager(world):
    system, w = world
    system.kill_manager()
    system.kill_agent("edge02")
    folder = system.agents["edge02"].manifest_dir
    files = managed_files(folder)
    for f in files:
        (folder / f).unlink()
    system.start_agent("edge02")
    wait_for(lambda: managed_files(folder) == files, timeout=30, max_interval=1.0,
             what="edge02 to restore its manifests from its replica with no manager",
             on_timeout=system.agents["edge02"].daemon.log_tail)
    system.start_manager()
    system.wait_converged(context="manager back")


def test_apiserver_kill9_and_restart(world):
    system, w = world
    before = system.snapshot_counts()
    system.restart_apiserver()
    changes(w)  # while the manager's watch is still reconnecting
    system.wait_converged(context="apiserver restarted")
    assert system.snapshot_counts() == before


def test_api_outage_with_etcd_compaction_and_apiserver_restart(world):
    system, w = world
    before = system.snapshot_counts()
    lists = system.manager_log().count("EdgeNodes listed:")
    system.api_outage_with_compaction(during=lambda: (changes(w), w.delete(w.namespaces[0], "edge03")))
    system.wait_converged(context="after the API outage")
    assert system.snapshot_counts() == before
    assert system.manager_log().count("EdgeNodes listed:") > lists, "the manager did not relist after the outage"


def test_watch_410_after_etcd_compaction_relists(nocache_control_plane, edge_system, seed):
    """etcd compacted past the manager's watch position: the next watch gets 410 Gone and the manager relists."""
    cp = nocache_control_plane
    # no periodic lastSeen writes: a status write would move the watch's resourceVersion past the compaction
    # --watch-timeout 10s: the apiserver ends each watch after 10 s, so the re-watch (and its 410) comes soon
    system: EdgeSystem = edge_system(seed=seed, control_plane=cp,
                                     manager_args=["--status-refresh-interval", "1h", "--watch-timeout", "10s"])
    w = Workload(cp.kubectl, ["e2e-a", "e2e-b"], list(system.agents), random.Random(seed))
    w.apply([{"apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode", "metadata": {"namespace": "e2e-a", "name": n},
              "spec": {"pods": [pod("web", "nginx:1.27")]}} for n in system.agents])
    system.wait_converged(context="initial sync")
    before = system.snapshot_counts()
    changes(w)  # recorded live by the open watch
    system.wait_converged(context="before the compaction")  # statuses written: no EdgeNode write follows
    # The apiserver ends each watch after --watch-timeout and the re-watch from the old
    # resourceVersion gets 410. A status write between compaction and re-watch moves that
    # resourceVersion past the compaction (the mirror-pod watch's own 410 relist can cause one), so
    # compact again every 5 s until the EdgeNode watch has expired once.
    def expired() -> bool:
        if "watch of EdgeNodes expired" in system.manager_log():
            return True
        system.compact_etcd_past_watch()
        return False
    wait_for(expired, timeout=120, interval=5, what="the manager's EdgeNode watch to get 410 Gone",
             on_timeout=system.manager.log_tail)
    w.put("e2e-b", "edge02", [pod("late", "busybox:1.37")])  # after the relist, the new watch works
    obs = system.wait_converged(context="after 410 Gone and relist")
    assert system.snapshot_counts() == before
    relists = [ln for ln in system.manager_log().splitlines() if "EdgeNodes listed:" in ln]
    assert len(relists) >= 2 and " 0 event(s) appended" in relists[1], \
        f"the relist after 410 must append nothing it already holds: {relists}"
    assert obs.manager.view


def test_manager_data_dir_wiped_gives_new_log_and_one_snapshot_each(world):
    system, w = world
    old_log = system.observe().manager.log_id
    before = system.snapshot_counts()
    system.kill_manager()
    changes(w)
    system.wipe_manager()
    obs = system.wait_converged(context="manager data dir wiped")
    assert obs.manager.log_id != old_log
    assert system.snapshot_counts() == {n: c + 1 for n, c in before.items()}, "one snapshot per agent: new log_id"


def test_log_compacted_past_an_agent_forces_exactly_that_snapshot(world):
    system, w = world
    before = system.snapshot_counts()
    system.partition("edge01")
    changes(w)
    w.put(w.namespaces[0], "edge01", [pod("web", "alpine:3.20", revision=7)])
    wait_recorded(system)
    # the others are at their heads; edge01 is behind: compact away everything
    for n in ("edge02", "edge03"):
        wait_for(lambda n=n: not checker.check_agent(system.observe().agents[n], system.observe().manager),
                 timeout=60, max_interval=1.0, what=f"{n} to catch up", on_timeout=system.log_tails)
    first = system.compact_manager_log(keep_last=0)
    assert first > 1
    system.heal("edge01")
    system.wait_converged(context="after compaction past edge01")
    after = system.snapshot_counts()
    assert after["edge01"] == before["edge01"] + 1, "edge01's position was compacted: exactly one snapshot"
    assert {n: after[n] for n in ("edge02", "edge03")} == {n: before[n] for n in ("edge02", "edge03")}
