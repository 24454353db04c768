"""An agent process follows a real sync server: first a snapshot, then only events; files equal the replica."""

from __future__ import annotations

from tests.agent.agentproc import expected_files, foreign_files, journal_kinds
from tests.agent.syncserver import delete, put
from tests.e2e.processes import wait_for


def test_new_agent_gets_its_pods_then_changes_arrive_as_events(logserver, agents):
    srv = logserver
    srv.append([put("edge01", "default", "nginx"), put("edge01", "team-a", "nginx"),
                put("edge01", "team-a", "web"), put("edge02", "default", "other")])
    a = agents(node="edge01", servers=[srv.address])
    foreign = a.foreign
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    assert len(srv.desired("edge01")) == 3

    later = srv.append([put("edge01", "team-a", "web", "web:2"), delete("edge01", "default", "nginx"),
                        put("edge01", "default", "api"), put("edge02", "default", "more")])
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
    srv.append([put("edge01", "ns", f"p{i}") for i in range(3)])
    a = agents(node="edge01", servers=[srv.address], extra=["--retain-journal", "5"])
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    for i in range(12):
        srv.append([put("edge01", "ns", f"p{i % 3}", f"img:{i}")])
    a.wait_applied(srv.head("edge01"))
    a.wait_log("journal: dropped")

    def trimmed() -> bool:
        with a.replica() as r:
            return len(r.journal()) == 5
    wait_for(trimmed, timeout=30, what="the journal to keep 5 lines")
    with a.replica() as r:
        assert [j.event.offset for j in r.journal()] == list(range(srv.head("edge01") - 4, srv.head("edge01") + 1))
