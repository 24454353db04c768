"""The manager's disk fills up: recording stops whole, /readyz says why, agents are still served, nothing is lost.

A real tmpfs of 4 MiB made by the test holds the manager's --data-dir; a ballast file fills it.
The real API server and a real edge-agent take part.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from eventlog import LogStore
from tests.kit.agents import AgentProc
from tests.kit.manager import sample
from tests.kit.manifests import expected_files, managed_files
from tests.kit.waits import http_get, wait_for

EDGE_EVENTLOG = Path(sys.executable).parent / "edge-eventlog"
PADDING = "x" * 6000  # big manifests, so a few changes need pages the full disk cannot give


def _edgenode(name: str, namespace: str, *, version: int, pods: int = 6) -> str:
    return json.dumps({
        "apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pods": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}"},
                           "spec": {"containers": [{"name": "main", "image": f"nginx:1.{version}",
                                                    "args": [f"--pad={PADDING}"]}]}}
                          for i in range(pods)]},
    })


def _fill(path: Path) -> None:
    """Write a ballast file until the filesystem is full."""
    with open(path, "wb", buffering=0) as f:
        for size in (65536, 4096, 512):
            chunk = b"\0" * size
            try:
                while True:
                    f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


@pytest.fixture
def small_disk(tmpfs, tmp_path) -> Path:
    return tmpfs(tmp_path / "data", size="4m")


def test_a_full_disk_stops_recording_and_space_returning_records_every_change(
        control_plane, edgenode_crd, namespace, manager_factory, small_disk, tmp_path):
    cp, data = control_plane, small_disk
    for node in ("edge01", "edge02", "edge03"):
        cp.kubectl("apply", "-f", "-", input=_edgenode(node, namespace, version=0, pods=2))
    mgr = manager_factory(kubeconfig=cp.kubeconfig, data_dir=data, namespace=namespace)
    agent = AgentProc(tmp_path, "agent1", node="edge01", servers=[f"127.0.0.1:{mgr.sync_port}"])
    late = AgentProc(tmp_path, "agent2", node="edge02", servers=[f"127.0.0.1:{mgr.sync_port}"])
    try:
        agent.start()

        def log_pods(node: str) -> dict:
            with LogStore(data / "eventlog", readonly=True) as s:
                return {k: p.manifest for k, p in s.pods(node).items()}

        agent.wait_files(expected_files(log_pods("edge01")), timeout=90)
        assert http_get(mgr.metrics_port, "/readyz")[0] == 200

        _fill(data / "ballast")
        version = 0
        while http_get(mgr.metrics_port, "/readyz")[0] == 200:  # free pages of the store absorb the first changes
            version += 1
            assert version <= 40, "the disk never filled up for the store"
            cp.kubectl("apply", "-f", "-", input=_edgenode("edge01", namespace, version=version))

            def settled(v: int = version) -> bool:
                pods = log_pods("edge01").values()
                return http_get(mgr.metrics_port, "/readyz")[0] == 503 or any(f"nginx:1.{v}".encode() in m for m in pods)
            wait_for(settled, 30, f"change {version} recorded or refused")
        code, body = http_get(mgr.metrics_port, "/readyz")
        assert code == 503 and "No space left on device" in body, body
        head_when_full = LogStore(data / "eventlog", readonly=True).head_offset

        # changes made while the disk is full: a new version, a deleted EdgeNode
        final = version + 1
        cp.kubectl("apply", "-f", "-", input=_edgenode("edge01", namespace, version=final))
        cp.kubectl("delete", "edgenode", "edge03", "-n", namespace)
        wait_for(lambda: sample(mgr.metrics(), 'k8s_edge_manager_watch_restarts_total{reason="handler_unavailable",'
                                               'resource="edgenodes"}') >= 3, 90, "three tries to record")
        m = mgr.metrics()
        assert sample(m, "k8s_edge_manager_recording") == 0
        assert mgr.log().count("cannot record EdgeNode changes") == 1  # one line per distinct error
        assert LogStore(data / "eventlog", readonly=True).head_offset == head_when_full

        late.start()  # agents are still served what the log holds
        late.wait_files(expected_files(log_pods("edge02")), timeout=90)

        (data / "ballast").unlink()  # space returns
        wait_for(lambda: http_get(mgr.metrics_port, "/readyz")[0] == 200, 90, "/readyz to turn ok again")
        assert "recording resumed" in mgr.log()
        assert log_pods("edge03") == {}
        assert all(f"nginx:1.{final}".encode() in m for m in log_pods("edge01").values())
        agent.wait_files(expected_files(log_pods("edge01")), timeout=90)
        with LogStore(data / "eventlog", readonly=True) as log, agent.replica() as rep:
            st = log.node_state("edge01")
            assert rep.cursor().applied_offset == st.head_offset and rep.state().digest == st.digest
        assert managed_files(agent.manifests) == expected_files(log_pods("edge01"))
        assert sample(mgr.metrics(), "k8s_edge_manager_recording") == 1
    finally:
        agent.kill()
        late.kill()
        mgr.kill()
    res = subprocess.run([str(EDGE_EVENTLOG), "verify", str(data)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("ok: manager store"), res.stdout + res.stderr
