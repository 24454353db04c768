"""deploy/manager.yaml is accepted by the apiserver, and crd/rbac.yaml grants the manager all it needs.

The RBAC test runs edge-manager with a token of the edge-manager ServiceAccount (no other
rights): it must list and watch EdgeNodes and mirror pods, write EdgeNode status, and create
and patch Events.
"""

from __future__ import annotations

import json

from tests.kit.builders import apply, sa_kubeconfig
from tests.kit.fake_agents import FakeAgent
from tests.kit.manager import events
from tests.kit.processes import REPO
from tests.kit.waits import wait_for


def test_deploy_manifests_pass_server_side_validation(control_plane, edgenode_crd):
    control_plane.kubectl("apply", "-f", REPO / "crd" / "rbac.yaml")
    out = control_plane.kubectl("apply", "--dry-run=server", "-f", REPO / "deploy" / "manager.yaml").stdout
    for kind in ("persistentvolumeclaim/edge-manager-data", "deployment.apps/edge-manager", "service/edge-manager"):
        assert kind in out


def test_the_service_account_of_crd_rbac_is_enough(control_plane, edgenode_crd, namespace, manager_factory,
                                                    tmp_path):
    cp = control_plane
    cp.kubectl("apply", "-f", REPO / "crd" / "rbac.yaml")
    kubeconfig = sa_kubeconfig(cp, tmp_path / "sa.kubeconfig")
    data = tmp_path / "data"
    mgr = manager_factory(kubeconfig=kubeconfig, data_dir=data, namespace=namespace)
    apply(cp, "edge01", namespace, {"web": "nginx"})
    wait_for(lambda: len(events(data)) == 1, 60, "the event")
    wait_for(lambda: (json.loads(cp.kubectl("get", "edgenode", "edge01", "-n", namespace, "-o", "json").stdout)
                      .get("status") or {}).get("phase") == "Offline", 60, "the status written as the SA")
    for flap in range(2):  # the second disconnect patches the first one's Event (its series)
        agent = FakeAgent(mgr.sync_port, "edge01", data)
        wait_for(lambda: agent.acked >= 1, 60, "the agent in sync")
        agent.close()
        wait_for(lambda: mgr.log().count("agent of node edge01 disconnected") == flap + 1, 60, "the disconnect")

    def disconnects() -> list[dict]:
        out = cp.kubectl("get", "events.v1.events.k8s.io", "-n", namespace, "-o", "json").stdout
        return [e for e in json.loads(out)["items"] if e["reason"] == "AgentDisconnected"]
    wait_for(lambda: [(e.get("series") or {}).get("count") for e in disconnects()] == [2], 60,
             "an AgentDisconnected Event created and patched as the SA")
    assert "HTTP 403" not in mgr.log() and "forbidden" not in mgr.log().lower()
    assert mgr.stop() == 0


def test_the_deployment_args_are_edge_manager_flags_and_expose_their_ports():
    """A flag renamed in main.py but not in deploy/manager.yaml would crash the pod at start."""
    import yaml

    from manager.main import build_parser

    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "manager.yaml").read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    a = build_parser().parse_args(container["args"])  # argparse exits 2 on an unknown flag
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert a.sync_server.endswith(f":{ports['sync']}") and a.join_server.endswith(f":{ports['join']}")
    assert a.metrics_addr.endswith(f":{ports['metrics']}") and a.agent_ca_secret == "k8s-edge/edge-agent-ca"
    service = next(d for d in docs if d["kind"] == "Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
