"""deploy/manager.yaml is accepted by the apiserver, and crd/rbac.yaml grants the manager all it needs.

deploy/manager.yaml runs the managers as a StatefulSet with leader election (docs/ha.md): its args
are edge-manager's flags, and its names agree with crd/rbac.yaml's (the Lease, the Pods labelled).

The RBAC test runs edge-manager with a token of the edge-manager ServiceAccount (no other
rights): it must list and watch EdgeNodes and mirror pods, write EdgeNode status, and create
and patch Events.
"""

from __future__ import annotations

import json
import re

import yaml

from tests.kit.builders import apply, sa_kubeconfig
from tests.kit.fake_agents import FakeAgent
from tests.kit.manager import events
from tests.kit.processes import REPO
from tests.kit.waits import wait_for


def test_deploy_manifests_pass_server_side_validation(control_plane, edgenode_crd):
    control_plane.kubectl("apply", "-f", REPO / "crd" / "rbac.yaml")
    out = control_plane.kubectl("apply", "--dry-run=server", "-f", REPO / "deploy" / "manager.yaml").stdout
    for kind in ("statefulset.apps/edge-manager", "service/edge-manager", "service/edge-manager-peers",
                 "poddisruptionbudget.policy/edge-manager"):
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


def _docs(path) -> list[dict]:  # noqa: ANN001
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _expanded(args: list[str], env: dict[str, str]) -> list[str]:
    """The args as kubelet passes them: $(VAR) replaced by the container's env."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


def test_the_statefulset_args_are_edge_manager_flags_and_expose_their_ports():
    """A flag renamed in main.py but not in deploy/manager.yaml would crash the pods at start."""
    from manager.main import build_parser

    docs = _docs(REPO / "deploy" / "manager.yaml")
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert fields == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP"}
    namespace = sts["metadata"]["namespace"]
    env = {"POD_NAME": "edge-manager-0", "POD_NAMESPACE": namespace, "POD_IP": "10.1.2.3"}
    a = build_parser().parse_args(_expanded(container["args"], env))  # argparse exits 2 on an unknown flag
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert a.sync_server.endswith(f":{ports['sync']}") and a.join_server.endswith(f":{ports['join']}")
    assert a.metrics_addr.endswith(f":{ports['metrics']}") and a.agent_ca_secret == "k8s-edge/edge-agent-ca"

    # two managers, each its own data dir, all started at once, one leading
    assert sts["spec"]["replicas"] == 2 and sts["spec"]["podManagementPolicy"] == "Parallel"
    claims = [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert claims == ["data"] and mounts["data"] == str(a.data_dir)
    assert a.leader_elect is True
    # advertised at its name in the headless Service, the sync port: what agents and standbys dial
    assert a.advertise_address == f"edge-manager-0.{sts['spec']['serviceName']}.{namespace}.svc:{ports['sync']}"
    # the peer certificate is minted from the agent CA (joining is on): no peer Secret; the leader's
    # serving certificate is checked with the agent CA's certificates, mounted without the CA's key
    assert a.peer_cert_file is None and a.peer_key_file is None
    volume = next(v for v in pod["volumes"] if str(a.peer_ca_file).startswith(mounts[v["name"]] + "/"))
    assert volume["secret"]["secretName"] == a.agent_ca_secret.split("/")[1]
    assert [i["key"] for i in volume["secret"]["items"]] == ["tls.crt"]

    services = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Service"}
    labels = sts["spec"]["template"]["metadata"]["labels"]
    agents = services["edge-manager"]  # the agents' Service: the leader only
    assert agents["selector"] == {**sts["spec"]["selector"]["matchLabels"], "edge.k8s.io/manager-role": "leader"}
    assert "edge.k8s.io/manager-role" not in labels  # the manager labels itself
    assert {p["targetPort"] for p in agents["ports"]} == {"sync", "join"}
    peers = services[sts["spec"]["serviceName"]]  # every manager by name, not-ready ones included
    assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"] is True
    assert peers["selector"].items() <= labels.items() and {p["targetPort"] for p in peers["ports"]} == set(ports)


def test_the_rbac_names_the_lease_and_the_pods_of_the_statefulset():
    """Roles limited by resourceNames must name what deploy/manager.yaml runs, or the managers are refused."""
    sts = next(d for d in _docs(REPO / "deploy" / "manager.yaml") if d["kind"] == "StatefulSet")
    namespace, replicas = sts["metadata"]["namespace"], sts["spec"]["replicas"]
    roles = {d["metadata"]["name"]: d for d in _docs(REPO / "crd" / "rbac.yaml") if d["kind"] == "Role"}
    pods = roles["edge-manager-pod-role"]
    assert pods["metadata"]["namespace"] == namespace
    assert pods["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"],
                              "resourceNames": [f"edge-manager-{i}" for i in range(replicas)]}]
    leases = roles["edge-manager-leader-election"]
    assert leases["metadata"]["namespace"] == namespace  # --leader-elect-resource-namespace: $POD_NAMESPACE
    assert leases["rules"] == [  # --leader-elect-resource-name's default
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["edge-manager"],
         "verbs": ["get", "update"]},
    ]
