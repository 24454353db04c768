"""Without a reachable manager the agent restores its pods from the replica and retries, clearly and quietly."""

from __future__ import annotations

import http.server
import threading

from tests.kit.agents import journal_kinds
from tests.kit.builders import delete, put
from tests.kit.manifests import expected_files, foreign_files, managed_files
from tests.kit.processes import free_port


def test_restart_while_manager_down_restores_then_catches_up(logserver, agents):
    srv = logserver
    srv.append([put("edge01", f"p{i}", ns="ns") for i in range(4)])
    a = agents(node="edge01", servers=[srv.address])
    foreign = a.foreign
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    a.stop()
    srv.stop()  # the manager goes down
    before = srv.desired("edge01")
    for f in managed_files(a.manifests):  # e.g. the node was re-imaged; the data dir survived
        (a.manifests / f).unlink()
    (a.manifests / "k8s-edge_ns_stale.json").write_bytes(b"{}")  # a pod it should no longer run

    a.start()
    a.wait_files(expected_files(before))  # restored from the replica, before any connection
    a.wait_log("retrying in", count=2)
    assert a.http("/readyz")[0] == 200
    assert a.metrics()["k8s_edge_agent_connected"] == 0
    assert "Traceback" not in a.log()

    srv.append([delete("edge01", "p0", ns="ns"), put("edge01", "p1", ns="ns", image="nginx:2"), put("edge01", "new", ns="ns")])
    srv.start()  # the manager is back: the changes made meanwhile arrive as events
    a.wait_files(expected_files(srv.desired("edge01")))
    a.wait_applied(srv.head("edge01"))
    with a.replica() as r:
        snaps, events = journal_kinds(r)
    assert len(snaps) == 1 and events == srv.node_events("edge01", after=snaps[0])
    assert foreign_files(a.manifests) == foreign


def test_unreachable_server_is_retried_with_one_line_per_attempt(agents, tmp_path):
    port = free_port()  # nobody listens
    a = agents(node="edge01", servers=[f"127.0.0.1:{port}"], extra=["--sync-timeout", "1s"])
    a.start()
    a.wait_log("retrying in", count=3)
    log = a.log()
    assert "Traceback" not in log
    retry_lines = [l for l in log.splitlines() if "retrying in" in l]
    assert all(f"127.0.0.1:{port}" in l for l in retry_lines)
    assert a.http("/healthz")[0] == 200 and a.metrics()["k8s_edge_agent_reconnects_total"] >= 3
    a.stop()
    assert a.proc.returncode == 0


class _NotGrpc(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *a):
        pass


def test_wrong_server_is_retried_and_the_next_address_is_used(logserver, agents):
    srv = logserver
    srv.append([put("edge01", "a", ns="ns")])
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotGrpc)  # something that is not a manager
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        wrong = f"127.0.0.1:{httpd.server_address[1]}"
        a = agents(node="edge01", servers=[f"{wrong},{srv.address}"], extra=["--sync-timeout", "2s"])
        a.start()
        a.wait_files(expected_files(srv.desired("edge01")))
        a.wait_log(f"sync with {wrong} ended")
        assert "Traceback" not in a.log()
    finally:
        httpd.shutdown()
        httpd.server_close()
