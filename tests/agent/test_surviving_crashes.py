"""SIGKILL at each step of applying a batch (test-only K8S_EDGE_FAULT), then restart: nothing lost, nothing twice."""

from __future__ import annotations

import signal

import pytest

from tests.kit.agents import journal_kinds
from tests.kit.builders import delete, put
from tests.kit.manifests import expected_files, foreign_files, managed_files
from tests.kit.waits import wait_for


def wait_killed(a) -> None:
    wait_for(lambda: a.proc.poll() is not None, timeout=60, what=f"{a.name} to die at its fault point",
             on_timeout=a.log_tail)
    assert a.proc.returncode == -signal.SIGKILL, a.log_tail()
    assert "TEST FAULT: SIGKILL" in a.log()


@pytest.mark.parametrize("point", ["crash-after-commit", "crash-after-files"])
def test_crash_while_applying_events(logserver, agents, point):
    srv = logserver
    srv.append([put("edge01", f"p{i}", ns="ns") for i in range(5)] + [put("edge02", "x", ns="ns")])
    a = agents(node="edge01", servers=[srv.address])
    foreign = a.foreign
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    a.stop()
    before = managed_files(a.manifests)

    a.set_env(K8S_EDGE_FAULT=point)
    a.start()
    a.wait_ready()
    srv.append([put("edge01", "p1", ns="ns", image="nginx:2"), delete("edge01", "p2", ns="ns"), put("edge01", "p9", ns="ns"),
                put("edge02", "y", ns="ns")])
    wait_killed(a)
    with a.replica() as r:  # the batch committed in either case
        assert r.cursor().applied_offset == srv.store.node_state("edge01").head_offset
    acked = [off for n, off in srv.observer.acks if n == "edge01"]
    assert acked and max(acked) < srv.head("edge01")  # the batch was never acknowledged
    if point == "crash-after-commit":
        assert managed_files(a.manifests) == before  # killed before any file was written
    else:
        assert managed_files(a.manifests) == expected_files(srv.desired("edge01"))  # killed before the Ack

    srv.append([put("edge01", "p3", ns="ns", image="nginx:3"), put("edge01", "p0", ns="other")])  # while it is down
    a.set_env(K8S_EDGE_FAULT=None)
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    a.wait_applied(srv.head("edge01"))
    with a.replica() as r:
        snaps, events = journal_kinds(r)
        assert len(snaps) == 1, "a crash must not force a snapshot"
        assert events == srv.node_events("edge01", after=snaps[0])  # every event of the node once, in order
        assert r.state().digest == srv.store.node_state("edge01").digest
    assert a.metrics()["k8s_edge_agent_snapshots_installed_total"] == 0
    assert foreign_files(a.manifests) == foreign


@pytest.mark.parametrize("point", ["crash-after-commit", "crash-after-files"])
def test_crash_while_installing_the_first_snapshot(logserver, agents, point):
    srv = logserver
    srv.append([put("edge01", f"p{i}", ns="ns") for i in range(3)])
    a = agents(node="edge01", servers=[srv.address], env={"K8S_EDGE_FAULT": point})
    a.start()
    wait_killed(a)
    srv.append([delete("edge01", "p0", ns="ns"), put("edge01", "p7", ns="ns")])
    a.set_env(K8S_EDGE_FAULT=None)
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    a.wait_applied(srv.head("edge01"))
    with a.replica() as r:
        snaps, events = journal_kinds(r)
        assert snaps == [3], "the committed snapshot is resumed from, not fetched again"
        assert events == srv.node_events("edge01", after=3)
