"""An agent process follows a real sync server: first a snapshot, then only events; files equal the replica."""

from __future__ import annotations

from tests.kit.agents import journal_kinds
from tests.kit.builders import delete, put
from tests.kit.manifests import expected_files, foreign_files
from tests.kit.waits import wait_for


def test_new_agent_gets_its_pods_then_changes_arrive_as_events(logserver, agents):
    srv = logserver
    srv.append([put("edge01", "nginx", ns="default"), put("edge01", "nginx", ns="team-a"),
                put("edge01", "web", ns="team-a"), put("edge02", "other", ns="default")])
    a = agents(node="edge01", servers=[srv.address])
    foreign = a.foreign
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    assert len(srv.desired("edge01")) == 3

    later = srv.append([put("edge01", "web", ns="team-a", image="web:2"), delete("edge01", "nginx", ns="default"),
                        put("edge01", "api", ns="default"), put("edge02", "more", ns="default")])
    a.wait_files(expected_files(srv.desired("edge01")))
    a.wait_applied(srv.head("edge01"))
    m = a.metrics()
    assert m["k8s_edge_agent_snapshots_installed_total"] == 1
    assert m["k8s_edge_agent_events_applied_total"] == 3
    assert m["k8s_edge_agent_connected"] == 1 and m["k8s_edge_agent_lag_events"] == 0
    assert a.http("/readyz")[0] == 200 and a.http("/healthz")[0] == 200
    with a.replica() as r:
        snaps, events = journal_kinds(r)
        assert len(snaps) == 1  # the first contact only
        assert events == [e.offset for e in later if e.node == "edge01"]
        assert r.state().digest == srv.store.node_state("edge01").digest
    assert foreign_files(a.manifests) == foreign
    for line in ("Starting edge agent", "Starting sync agent", "Starting sync edge spec"):
        assert line in a.log()
    a.stop()
    assert a.proc.returncode == 0, a.log_tail()


def test_journal_is_trimmed_to_its_retention(logserver, agents):
    srv = logserver
    srv.append([put("edge01", f"p{i}", ns="ns") for i in range(3)])
    a = agents(node="edge01", servers=[srv.address], extra=["--retain-journal", "5"])
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    for i in range(12):
        srv.append([put("edge01", f"p{i % 3}", ns="ns", image=f"img:{i}")])
    a.wait_applied(srv.head("edge01"))
    a.wait_log("journal: dropped")

    def trimmed() -> bool:
        with a.replica() as r:
            return len(r.journal()) == 5
    wait_for(trimmed, timeout=30, what="the journal to keep 5 lines")
    with a.replica() as r:
        assert [j.event.offset for j in r.journal()] == list(range(srv.head("edge01") - 4, srv.head("edge01") + 1))
