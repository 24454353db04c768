"""Two real edge-managers with --leader-elect on one API server: one leads, the other follows its log byte for byte.

The quick, whole-process check of the HA wiring (manager/standing.py with the real elector,
follower, high-water mark and refusals); the fault scenarios with agents and kubelets are in
tests/e2e/test_failover.py.
"""

from __future__ import annotations

import signal

from eventlog import LogStore
from eventlog.history import compare_histories
from tests.kit.builders import apply
from tests.kit.manager import ManagerProcess, sample
from tests.kit.processes import free_port
from tests.kit.waits import wait_for

TIMINGS = ["--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s",
           "--leader-elect-retry-period", "1s"]


def start_pair(tmp_path, control_plane, namespace) -> list[ManagerProcess]:
    managers = []
    for i in range(2):
        port = free_port()
        mp = ManagerProcess(kubeconfig=control_plane.kubeconfig, data_dir=tmp_path / f"m{i}",
                            log_path=tmp_path / f"m{i}.log", namespace=namespace, sync_address=f"127.0.0.1:{port}",
                            args=["--leader-elect", *TIMINGS, "--advertise-address", f"127.0.0.1:{port}",
                                  "--leader-elect-resource-namespace", namespace, "--heartbeat-interval", "1s"])
        mp.start()
        managers.append(mp)
    return managers


def leading(mp: ManagerProcess) -> bool:
    try:
        return sample(mp.metrics(), "k8s_edge_manager_leader") == 1
    except Exception:  # not serving metrics yet, or killed
        return False


def records(mp: ManagerProcess) -> list[bytes]:
    with LogStore(mp.data_dir / "eventlog", readonly=True) as s, s.reader() as r:
        return [bytes(v) for _, v in r.records()]


def test_one_leads_the_other_follows_then_takes_over_the_same_log(tmp_path, control_plane, edgenode_crd, namespace):
    managers = start_pair(tmp_path, control_plane, namespace)
    try:
        for mp in managers:
            mp.wait_ready()
        leader = wait_for(lambda: next((m for m in managers if leading(m)), None), 30, "a leader")
        standby = next(m for m in managers if m is not leader)
        assert not leading(standby)
        for i in range(5):
            apply(control_plane, f"edge{i:02d}", namespace, {"web": f"nginx:1.{i}", "db": "postgres:16"})
        wait_for(lambda: len(records(leader)) >= 10, 30, "the leader to record")
        wait_for(lambda: records(standby) == records(leader), 30, "the standby to hold the same records")
        assert compare_histories([leader.data_dir / "eventlog", standby.data_dir / "eventlog"]).one_history
        with leader.store() as s:
            log_id, head = s.log_id, s.head_offset

        leader.signal(signal.SIGKILL)
        leader.proc.wait(10)
        wait_for(lambda: leading(standby), 30, "the standby to take over")
        standby.wait_ready()
        apply(control_plane, "edge00", namespace, {"web": "nginx:2.0", "db": "postgres:16"})
        wait_for(lambda: standby.head("edge00") > head, 30, "the new leader to append")
        with standby.store() as s:
            assert s.log_id == log_id, "the new leader continues the same log"
            assert [e.offset for e in s.iter_events(after=head)] == [head + 1], \
                "it appended only what its log lacked: one changed pod"

        leader.start()  # comes back as a standby and follows the new leader
        wait_for(lambda: records(leader) == records(standby), 60, "the old leader to follow the new one")
        assert not leading(leader)
    finally:
        for mp in managers:
            mp.kill()
