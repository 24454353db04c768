"""Operating edge-manager: metrics and probes, JSON logs, retention on a timer, TLS flags, signals."""

from __future__ import annotations

import json
import signal

import pytest

from eventlog import LogStore
from tests.kit.builders import apply
from tests.kit.fake_agents import FakeAgent
from tests.kit.manager import events, sample
from tests.kit.waits import wait_for


def test_metrics_report_log_agents_lag_and_snapshots(control_plane, edgenode_crd, namespace, manager_factory,
                                                     tmp_path):
    data = tmp_path / "data"
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=data, namespace=namespace)
    apply(control_plane, "edge01", namespace, {"a": "nginx", "b": "nginx"})
    wait_for(lambda: len(events(data)) == 2, 60, "2 events")
    agent = FakeAgent(mgr.sync_port, "edge01", data)
    try:
        wait_for(lambda: agent.acked == 2, 60, "the agent's ack")
        m = wait_for(lambda: (t := mgr.metrics()) and 'k8s_edge_manager_node_lag_events{node="edge01"} 0.0' in t and t,
                     30, "lag 0 for edge01")
        assert sample(m, "k8s_edge_manager_head_offset") == 2
        assert sample(m, "k8s_edge_manager_connected_agents") == 1
        assert sample(m, 'k8s_edge_manager_events_appended_total{op="put"}') == 2
        assert sample(m, 'k8s_edge_manager_snapshots_sent_total{reason="empty_replica"}') == 1
        assert "k8s_edge_manager_watch_restarts_total" in m or "k8s_edge_manager_watch_restarts" in m
        assert sample(m, "k8s_edge_manager_sync_streams_open") == 1
        assert sample(m, "k8s_edge_manager_sync_streams_refused_total") == 0
        assert sample(m, "k8s_edge_manager_sync_streams_replaced_total") == 0
    finally:
        agent.close()
    wait_for(lambda: sample(mgr.metrics(), "k8s_edge_manager_connected_agents") == 0, 30, "the disconnect")
    assert mgr.get("/healthz") == 200 and mgr.get("/readyz") == 200 and mgr.get("/nope") == 404
    assert mgr.stop() == 0


def test_json_logs_and_sigint(control_plane, edgenode_crd, namespace, manager_factory, tmp_path):
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, namespace=namespace, args=["--log-format", "json"])
    lines = [json.loads(line) for line in mgr.log().splitlines() if line.strip()]
    messages = [rec["record"]["message"] for rec in lines]
    assert "Starting sync service" in messages and "Waiting for the informer cache to sync" in messages
    mgr.signal(signal.SIGINT)
    assert mgr.proc.wait(30) == 0


def test_retention_compacts_on_a_timer(control_plane, edgenode_crd, namespace, manager_factory, tmp_path):
    data = tmp_path / "data"
    manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=data, namespace=namespace,
                    args=["--retain-events", "2", "--compaction-interval", "1s"])
    apply(control_plane, "edge01", namespace, {f"p{i}": "nginx" for i in range(6)})
    wait_for(lambda: len(events(data)) and events(data)[-1].offset == 6, 60, "6 events")

    def first_offset() -> int:
        with LogStore(data / "eventlog", readonly=True) as s:
            return s.first_offset
    wait_for(lambda: first_offset() == 5, 30, "compaction to keep the newest 2 events")
    with LogStore(data / "eventlog", readonly=True) as s:
        assert len(s.pods("edge01")) == 6  # the view stays whole


def test_tls_flags_serve_mtls_without_the_insecure_warning(control_plane, edgenode_crd, namespace,
                                                           manager_factory, tmp_path):
    pki = getattr(control_plane, "state_dir", None)
    if pki is None:
        pytest.skip("needs the local control plane's PKI")
    pki = pki / "pki"
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, namespace=namespace, insecure=False, args=[
        "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
        "--client-ca-file", str(pki / "ca.crt")])
    assert "(mTLS)" in mgr.log() and "--insecure" not in mgr.log()
    assert mgr.stop() == 0
