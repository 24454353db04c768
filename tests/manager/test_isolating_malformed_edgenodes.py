"""A malformed EdgeNode in another namespace is its own problem: the fleet syncs on, across restarts.

The real manager process against a private control plane whose CRD is the old, loose one
(no typed pod spec), so the API stores each of issue 11's ten malformed pods: they stand
for EdgeNodes stored before the schema tightened. Each is refused in its status with the
field path; every other EdgeNode keeps syncing within seconds, also after a restart.
"""

from __future__ import annotations

import json

from tests.kit.builders import apply, edgenode_status
from tests.kit.crd import wait_established
from tests.kit.malformed import MALFORMED_PODS, loose_crd
from tests.kit.manager import events
from tests.kit.waits import wait_for


SECONDS = 30  # "within seconds", with room for a loaded CI machine


def recorded(data, node: str, pod: str, image: str) -> bool:
    """Whether the newest event of node/pod puts this image."""
    last = [e for e in events(data) if e.node == node and e.name == pod]
    return bool(last) and last[-1].op == "put" and image.encode() in last[-1].manifest


def malformed_edgenode(i: int, bad: dict) -> str:
    return json.dumps({"apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode",
                       "metadata": {"name": f"bad{i}", "namespace": "tenant"},
                       "spec": {"pods": [bad, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fine"},
                                               "spec": {"containers": [{"name": "main", "image": "pause"}]}}]}})


def test_malformed_edgenodes_are_refused_alone_across_a_restart(control_plane_factory, manager_factory, tmp_path):
    cp = control_plane_factory()
    cp.kubectl("apply", "-f", "-", input=loose_crd())
    wait_established(cp)
    for ns in ("tenant", "fleet"):
        cp.kubectl("create", "namespace", ns)
    data = tmp_path / "data"

    # the manager sees the fleet, then the ten malformed EdgeNodes arrive while it watches
    mgr = manager_factory(kubeconfig=cp.kubeconfig, data_dir=data)
    apply(cp, "edge01", "fleet", {"web": "nginx:1"})
    wait_for(lambda: recorded(data, "edge01", "web", "nginx:1"), SECONDS, "edge01 recorded")
    for i, (_, bad, _) in enumerate(MALFORMED_PODS):
        cp.kubectl("apply", "-f", "-", input=malformed_edgenode(i, bad))  # the loose CRD accepts it
    apply(cp, "edge01", "fleet", {"web": "nginx:2"})
    wait_for(lambda: recorded(data, "edge01", "web", "nginx:2"), SECONDS, "edge01 syncing on while watching")

    def refused_in_status() -> bool:
        for i, (_, _, path) in enumerate(MALFORMED_PODS):
            st = edgenode_status(cp, "tenant", f"bad{i}")
            if st.get("rejected") != [{"name": "bad", "reason": st.get("rejected", [{}])[0].get("reason", "")}] \
                    or not st["rejected"][0]["reason"].startswith(f"{path}: ") or st.get("desiredPods") != 1:
                return False
        return True

    wait_for(refused_in_status, SECONDS, "each malformed EdgeNode's status to name its rejection")
    for i in range(len(MALFORMED_PODS)):  # the well-formed pod beside each malformed one is sent
        assert recorded(data, f"bad{i}", "fine", "pause")
        assert not [e for e in events(data) if e.node == f"bad{i}" and e.name == "bad"]
    assert "k8s_edge_manager_object_errors_total 0.0" in mgr.metrics()  # refused by validation, no exception
    assert mgr.stop() == 0

    # a restarted manager lists all of them, becomes ready, and the fleet syncs on
    mgr = manager_factory(kubeconfig=cp.kubeconfig, data_dir=data)
    assert mgr.get("/readyz") == 200
    apply(cp, "edge01", "fleet", {"web": "nginx:3"})
    apply(cp, "edge02", "fleet", {"db": "redis:7"})
    wait_for(lambda: recorded(data, "edge01", "web", "nginx:3") and recorded(data, "edge02", "db", "redis:7"),
             SECONDS, "the fleet syncing on after a restart")
    assert refused_in_status()
    assert "EdgeNode tenant/bad0: pod 'bad' rejected: spec.containers[0]: must be an object, got string" in mgr.log()
    assert mgr.stop() == 0
