"""The snapshot path (unknown log_id, compacted offset): the replica is replaced; pods the node should not run go."""

from __future__ import annotations

import shutil

from tests.kit.agents import journal_kinds
from tests.kit.builders import delete, put
from tests.kit.manifests import expected_files, foreign_files, managed_files
from tests.kit.servers import LogServer
from tests.kit.waits import wait_for


def test_unknown_log_id_replaces_the_replica(logserver, agents, tmp_path):
    old = logserver
    old.append([put("edge01", f"p{i}", ns="ns") for i in range(5)] + [put("edge01", "keep", ns="other")])
    a = agents(node="edge01", servers=[old.address])
    foreign = a.foreign
    a.start()
    a.wait_files(expected_files(old.desired("edge01")))
    old.stop()

    # the manager's data dir was lost and rebuilt from Kubernetes: a new log_id, and p0..p3 were deleted meanwhile
    new = LogServer(tmp_path / "new-manager-log", port=old.port)
    try:
        new.append([put("edge01", "p4", ns="ns"), put("edge01", "keep", ns="other", image="keep:2"), put("edge01", "fresh", ns="ns")])
        new.start()
        a.wait_files(expected_files(new.desired("edge01")))
        a.wait_applied(new.head("edge01"))
        with a.replica() as r:
            snaps, _ = journal_kinds(r)
            assert len(snaps) == 2 and r.cursor().log_id == new.store.log_id
            assert r.state().digest == new.store.node_state("edge01").digest
        assert ("edge01", "unknown log_id") in new.observer.snapshots
        assert foreign_files(a.manifests) == foreign
    finally:
        new.close()


def test_compacted_offset_gets_a_snapshot_that_removes_pods(logserver, agents):
    srv = logserver
    srv.append([put("edge01", f"p{i}", ns="ns") for i in range(6)])
    a = agents(node="edge01", servers=[srv.address])
    foreign = a.foreign
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    a.stop()

    srv.append([delete("edge01", f"p{i}", ns="ns") for i in range(4)] + [put("edge01", "q", ns="ns", image="q:1")])
    srv.append([put("edge02", f"x{i}", ns="ns") for i in range(3)])
    srv.store.compact(keep_last=2)  # the agent's position is gone from the log
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    a.wait_applied(srv.head("edge01"))
    assert any(n == "edge01" and "compacted" in why for n, why in srv.observer.snapshots), srv.observer.snapshots
    assert a.metrics()["k8s_edge_agent_snapshots_installed_total"] == 1
    assert sorted(srv.desired("edge01")) == [("ns", "p4"), ("ns", "p5"), ("ns", "q")]
    assert foreign_files(a.manifests) == foreign


def test_wiped_replica_keeps_pods_until_a_snapshot_then_prunes(logserver, agents):
    srv = logserver
    srv.append([put("edge01", f"p{i}", ns="ns") for i in range(3)])
    a = agents(node="edge01", servers=[srv.address])
    foreign = a.foreign
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    a.stop()
    shutil.rmtree(a.data_dir)  # the data dir was wiped; the manifests stayed
    before = managed_files(a.manifests)
    srv.stop()
    a.start()  # knowing nothing is not "run nothing": the pods keep running while the manager is away
    a.wait_log("retrying in", count=2)
    wait_for(lambda: a.metrics()["k8s_edge_agent_reconciles_total{kind=\"full\"}"] == 0 and
             managed_files(a.manifests) == before, timeout=5, what="the folder to stay as it was")
    assert a.http("/readyz")[0] == 503
    srv.append([delete("edge01", "p1", ns="ns")])
    srv.start()
    a.wait_files(expected_files(srv.desired("edge01")))  # p1's file, which the new replica never knew, is gone
    assert a.http("/readyz")[0] == 200
    assert foreign_files(a.manifests) == foreign
