"""`kubectl get edgenodes` shows phase, offsets and last-seen written by the manager.

A raw gRPC test agent stands in for the edge; mirror pods are created with kubectl and
their status patched to Running, as kubelet would.
"""

from __future__ import annotations

import json

from tests.kit.builders import apply, edgenode_status, mirror_pod
from tests.kit.fake_agents import FakeAgent
from tests.kit.waits import wait_for


def conditions(st: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in st.get("conditions", [])}


def test_phase_offsets_and_last_seen(control_plane, edgenode_crd, namespace, manager_factory, tmp_path):
    cp, ns, data = control_plane, namespace, tmp_path / "data"
    mgr = manager_factory(kubeconfig=cp.kubeconfig, data_dir=data, namespace=ns)
    apply(cp, "edge01", ns, {"web": "nginx"})
    st = wait_for(lambda: (s := edgenode_status(cp, ns, "edge01")).get("headOffset") == 1 and s, 60, "Offline status")
    assert st["phase"] == "Offline" and st["desiredPods"] == 1 and st["observedGeneration"] == 1
    assert conditions(st)["Connected"] == ("False", "AgentNotConnected")

    agent = FakeAgent(mgr.sync_port, "edge01", data)
    try:
        st = wait_for(lambda: (s := edgenode_status(cp, ns, "edge01")).get("phase") == "Synced" and s, 60, "Synced")
        assert st["syncedOffset"] == st["headOffset"] == 1 and st["lastSeen"]
        assert conditions(st)["Synced"] == ("True", "UpToDate")
        assert conditions(st)["PodsRunning"] == ("False", "MirrorPodsNotRunning")
        table = cp.kubectl("get", "edgenodes", "-n", ns).stdout
        header, row = table.splitlines()[:2]
        assert header.split()[:6] == ["NAME", "PHASE", "PODS", "SYNCED", "HEAD", "LAST-SEEN"]
        assert row.split()[:5] == ["edge01", "Synced", "1", "1", "1"]

        mirror_pod(cp, ns, "web-edge01", "edge01", "Running")  # kubelet's mirror pod <pod>-<node>
        st = wait_for(lambda: (s := edgenode_status(cp, ns, "edge01")).get("phase") == "Running" and s, 60, "Running")
        assert st["runningPods"] == 1 and conditions(st)["PodsRunning"] == ("True", "AllRunning")

        # a new pod and a pod kubelet cannot run statically: generation 2, one rejection, not Running
        cp.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode", "metadata": {"name": "edge01", "namespace": ns},
            "spec": {"pods": [
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                 "spec": {"containers": [{"name": "main", "image": "nginx"}]}},
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db"},
                 "spec": {"containers": [{"name": "main", "image": "redis"}]}},
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "secretive"},
                 "spec": {"containers": [{"name": "main", "image": "x"}],
                          "volumes": [{"name": "s", "secret": {"secretName": "creds"}}]}},
            ]}}))
        st = wait_for(lambda: (s := edgenode_status(cp, ns, "edge01")).get("observedGeneration") == 2
                      and s.get("syncedOffset") == 2 and s, 60, "generation 2 synced")
        assert st["headOffset"] == 2 and st["desiredPods"] == 2 and st["runningPods"] == 1
        assert st["phase"] == "Synced" and st["rejectedPods"] == 1
        assert st["rejected"][0]["name"] == "secretive" and "Secret" in st["rejected"][0]["reason"]
    finally:
        agent.close()
    st = wait_for(lambda: (s := edgenode_status(cp, ns, "edge01")).get("phase") == "Offline" and s, 60, "Offline again")
    assert conditions(st)["Connected"][0] == "False" and st["lastSeen"] and st["syncedOffset"] == 2
    assert mgr.stop() == 0
