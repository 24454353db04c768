"""Manager HA (issue #14): one scenario per failover, with EdgeNode changes flowing throughout.

One system for the whole module (to keep it within about four minutes of CI): two managers
with --leader-elect (lease 4 s, renew deadline 3 s, retry 1 s), three agents that know both
(one proxy to each), no kubelets (the last hop is test_faults'). Each scenario starts from a
converged system, injects its fault while a thread keeps changing EdgeNodes with kubectl, and
ends with:
- every agent converged exactly to the API (the convergence checker, statuses included);
- no agent took a snapshot after its first sync (its journal);
- one history: every running manager's store holds the same bytes at every offset
  (eventlog.history.compare_histories), each running standby the leader's whole log, each
  agent's journal the leader's events.
`--long` / K8S_EDGE_LONG=1 repeats each failover three times.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest

from eventlog import LogStore
from tests.kit import checker
from tests.kit.harness import EdgeSystem, delete_all_edgenodes
from tests.kit.waits import http_get, wait_for
from tests.kit.workload import Workload, edgenode, flowing, pod


pytestmark = pytest.mark.timeout(300)

APPEND_LINE = re.compile(r" DEBUG +recorded ")  # manager.recording: one line per event it appends (--log-level DEBUG)


@dataclass
class Ha:
    """The module's system, its workload and how many rounds each failover runs."""

    system: EdgeSystem
    w: Workload
    rounds: int
    first_sync: dict[str, int]  # snapshots each agent took to sync the first time


@pytest.fixture(scope="module")
def ha_module(e2e_control_plane, toxiproxy, tmp_path_factory, long_run) -> Iterator[Ha]:
    seed = int(os.environ.get("K8S_EDGE_SEED") or random.SystemRandom().randrange(1, 2**31))
    print(f"\n[e2e] failover seed: {seed} (reproduce with K8S_EDGE_SEED={seed})", flush=True)
    namespaces = [f"ha-{c}-{uuid.uuid4().hex[:5]}" for c in "ab"]
    for n in namespaces:
        e2e_control_plane.kubectl("create", "namespace", n)
    workdir = tmp_path_factory.mktemp("ha")
    system = EdgeSystem(control_plane=e2e_control_plane, toxiproxy=toxiproxy, workdir=workdir,
                        nodes=("edge01", "edge02", "edge03"), seed=seed, managers=2, kubelets=False)
    try:
        system.start()
        w = Workload(e2e_control_plane.kubectl, namespaces, list(system.agents), random.Random(seed))
        w.apply([edgenode(namespaces[0], n, [pod("web", "nginx:1.27"), pod("cache", "redis:7")])
                 for n in system.agents])
        system.wait_converged(context="initial sync")
        yield Ha(system, w, 3 if long_run else 1, system.snapshot_counts())
    finally:
        system.close()
        for proxy in system.proxies():
            toxiproxy.delete_proxy(proxy.name)
        print(f"[e2e] logs of the failover module: {system.logs}")
        delete_all_edgenodes(e2e_control_plane)


@pytest.fixture
def ha(ha_module: Ha) -> Ha:
    """The module's system, healed and converged (whatever the previous scenario left)."""
    ha_module.system.heal_all()
    ha_module.system.wait_converged(context="before the scenario")
    return ha_module


def other(system: EdgeSystem, i: int) -> int:
    """The other manager of two."""
    return 1 - i


def assert_clean(ha: Ha, context: str, *, standbys: bool = True) -> checker.Observation:
    """Converged to the API, one history, and not one snapshot since the first sync."""
    obs = ha.system.wait_converged(context=context, standbys=standbys)
    unexplained = [p for a in obs.agents.values() for p in checker.unexplained_snapshots(a)]
    assert not unexplained, checker.format_failure(unexplained, seed=ha.system.seed, context=context)
    assert ha.system.snapshot_counts() == ha.first_sync, f"{context}: an agent took a snapshot after its first sync"
    assert obs.history is not None and len(obs.replicas) == 2
    return obs


def wait_batches(flow, n: int) -> None:
    """Until the flow applied n more batches (changes made during the fault)."""
    target = len(flow.batches) + n
    wait_for(lambda: len(flow.batches) >= target or flow.error, timeout=60, what=f"{n} more EdgeNode batches")


def test_leader_kill9_the_standby_takes_over(ha):
    system = ha.system
    for r in range(ha.rounds):
        old = system.wait_standbys_in_sync()  # else an agent may be ahead of the next leader
        with flowing(ha.w) as flow:
            wait_batches(flow, 2)
            started = time.monotonic()
            system.kill_manager(old)
            new = system.wait_leader(not_=old)
            took = time.monotonic() - started
            wait_batches(flow, 4)  # changes made after the takeover
        print(f"[e2e] leader kill -9: {system.managers[new].name} led after {took:.1f}s")
        assert took <= system.lease.takeover + 2, f"takeover took {took:.1f}s"
        assert_clean(ha, f"round {r}: leader killed, the old leader still down")
        system.start_manager(old)  # as kubelet restarts the pod
        assert_clean(ha, f"round {r}: the old leader back as a standby")
        assert system.leader() == new and system.lease_holder() == new


@pytest.mark.parametrize("cut", ["closed", "delayed"])
def test_leader_cut_from_the_api_stops_serving_and_appending(ha, cut):
    """Split brain: the leader loses the API while every agent still reaches it.

    closed: its API connections are closed and refused. delayed: every byte of its API link
    is delayed past its renew deadline, so the watch events of changes made right after the
    cut still reach it, late, when only the fence stops it from appending them. The
    standby's advertised address is cut at the same moment, so once deposed the old leader
    cannot follow the new one: its store can only change by its own appends, and it must not
    make any after its renew deadline, nor keep serving agents.
    """
    system = ha.system
    renew = system.lease.renew_deadline
    for r in range(ha.rounds):
        old = system.wait_standbys_in_sync()
        new_i = other(system, old)
        m = system.managers[old]
        heads: list[tuple[float, int]] = []  # (wall time, old leader's store head)
        serving: list[tuple[float, float]] = []  # (wall time, agent streams it has open)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with LogStore(m.store, readonly=True) as s:
                    heads.append((time.time(), s.head_offset))
                serving.append((time.time(), m.metric("k8s_edge_manager_connected_agents") or 0))
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, name="head-sampler", daemon=True)
        with flowing(ha.w) as flow:
            wait_batches(flow, 2)
            sampler.start()
            wait_for(lambda: len(serving) >= 2, timeout=30, what="the samples before the cut")
            system.cut_from_standbys(new_i)
            delay = 0.0 if cut == "closed" else renew + system.lease.lease_duration + 3
            if cut == "closed":
                system.cut_from_api(old)
            else:
                system.delay_api(old, latency_ms=int(delay * 1000))
            cut_at = time.time()  # no renew sent after this succeeds (closed, or late: the standby took the Lease)
            wait_for(lambda: m.metric("k8s_edge_manager_leader") == 0, timeout=renew + 10, max_interval=0.2,
                     what=f"{m.name} to stop leading once cut off the API", on_timeout=system.log_tails)
            stepped_down = time.time() - cut_at
            new = system.wait_leader(not_=old)
            wait_batches(flow, 6)  # the new leader appends them; the old one must not
            # an observation window, not a synchronisation: the late watch events of the changes made
            # just after the cut reach the old leader `delay` s later, and it must not append them
            time.sleep(max(0.0, cut_at + delay + 2 - time.time()))
        stop.set()
        sampler.join(timeout=10)
        print(f"[e2e] leader cut off the API: stepped down after {stepped_down:.1f}s, "
              f"{system.managers[new].name} leads")
        assert new == new_i
        assert stepped_down <= renew + system.lease.retry_period + 1.5, \
            f"{m.name} still said it led {stepped_down:.1f}s after losing the API (renew deadline {renew}s)"
        fence = cut_at + renew + 0.5  # its last renew started before the cut at best
        late = sorted({h for t, h in heads if t > fence})
        at_fence = [h for t, h in heads if t <= fence]
        assert late and at_fence and late == [at_fence[-1]], \
            f"{m.name}'s store grew after its renew deadline: heads {at_fence[-1:]} -> {late}"
        appended_late = [ln for ln in m.log().splitlines() if APPEND_LINE.search(ln) and _log_time(ln) > fence]
        assert not appended_late, f"{m.name} appended after its renew deadline:\n" + "\n".join(appended_late[:10])
        assert any(n for t, n in serving if t <= cut_at), f"{m.name} served no agent before the cut: {serving[:5]}"
        still = [(round(t - cut_at, 1), n) for t, n in serving if t > fence + 1.0 and n]  # 1 s to close its streams
        assert not still, f"{m.name} kept agent streams open past its renew deadline (s after cut, streams): {still}"
        # agents still reach the old leader, yet converge through the new one (the old one serves no one)
        assert_clean(ha, f"round {r}: old leader still cut off", standbys=False)
        system.heal()
        obs = assert_clean(ha, f"round {r}: healed, the old leader follows")
        assert system.leader() == new, "the healed old leader must not take the lease back"
        assert obs.replicas[m.name].head_offset == obs.manager.head_offset


def _log_time(line: str) -> float:
    """The wall time of an edge-manager log line (its text format's first field); 0 if it has none."""
    try:
        return datetime.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        return 0.0


def test_standby_kill9_changes_keep_flowing(ha):
    system = ha.system
    for r in range(ha.rounds):
        lead = system.wait_leader()
        sb = other(system, lead)
        with flowing(ha.w) as flow:
            wait_batches(flow, 2)
            system.kill_manager(sb)
            wait_batches(flow, 6)
        # the leader stops waiting for a standby that is gone: agents get every change without it
        assert_clean(ha, f"round {r}: standby down")
        assert system.leader() == lead
        system.start_manager(sb)
        obs = assert_clean(ha, f"round {r}: standby back and caught up")
        assert obs.replicas[system.managers[sb].name].head_offset == obs.manager.head_offset
        assert system.leader() == lead


def test_both_killed_the_first_up_leads_nothing_lost(ha):
    system = ha.system
    for r in range(ha.rounds):
        lead = system.wait_standbys_in_sync()
        sb = other(system, lead)
        with flowing(ha.w) as flow:
            wait_batches(flow, 2)
            system.kill_manager(lead)
            system.kill_manager(sb)
            wait_batches(flow, 4)  # changes while no manager runs: the first up must record them
            system.start_manager(sb)  # the old standby first: its log may lack the leader's newest records
            first = system.wait_leader()
            wait_batches(flow, 2)
            system.start_manager(lead)
            wait_batches(flow, 2)
        assert first == sb, "the first manager up must lead"
        assert_clean(ha, f"round {r}: both killed and restarted")
        assert system.leader() == sb


def test_rolling_update(ha):
    """Restart the standby, wait until it is in sync, then restart the leader (SIGTERM, as a StatefulSet does)."""
    system = ha.system
    for r in range(ha.rounds):
        lead = system.wait_leader()
        sb = other(system, lead)
        leader = system.managers[lead]
        with flowing(ha.w) as flow:
            wait_batches(flow, 2)
            system.stop_manager(sb)
            system.start_manager(sb)
            standby = system.managers[sb]
            # as the StatefulSet does: the next pod only once this one is Ready (a standby: caught up)
            wait_for(lambda: standby.running and http_get(standby.metrics_port, "/readyz", timeout=3)[0] == 200,
                     timeout=60, max_interval=0.5, what=f"{standby.name} to be Ready", on_timeout=system.log_tails)
            wait_for(lambda: leader.metric("k8s_edge_manager_standbys_in_sync") == 1, timeout=60, max_interval=0.5,
                     what=f"{standby.name} to be back in sync", on_timeout=system.log_tails)
            wait_batches(flow, 2)
            started = time.monotonic()
            system.stop_manager(lead)  # releases the Lease: the standby takes over without waiting it out
            new = system.wait_leader(not_=lead)
            took = time.monotonic() - started
            system.start_manager(lead)
            wait_batches(flow, 4)
        print(f"[e2e] rolling update: {system.managers[new].name} led {took:.1f}s after the leader's SIGTERM")
        assert new == sb
        assert_clean(ha, f"round {r}: rolling update done")
        assert system.leader() == sb
