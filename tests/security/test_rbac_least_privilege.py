"""Least privilege: crd/rbac.yaml grants exactly the API calls the manager makes, and the TLS Secret is mounted 0400.

Attack: the manager's ServiceAccount token is stolen (or the manager is subverted); it must
be worth no more than what the manager needs. Proof by the apiserver itself: a private
control plane with an audit log runs the real edge-manager as that ServiceAccount (a token
from `kubectl create token`, no other rights) through every API path it has, and the
(group, resource, verb) triples the audit log shows must equal the ClusterRole's rules,
none missing (no request was forbidden) and none unused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from tests.kit.builders import apply, mirror_pod, sa_kubeconfig
from tests.kit.crd import audited_control_plane
from tests.kit.fake_agents import FakeAgent
from tests.kit.processes import REPO
from tests.kit.waits import wait_for


RBAC_FILE = REPO / "crd" / "rbac.yaml"
DEPLOY_FILE = REPO / "deploy" / "manager.yaml"
SERVICE_ACCOUNT = "system:serviceaccount:k8s-edge:edge-manager"

# Every API call of the manager, one line each: (API group, resource[/subresource], verb). The
# ClusterRole must grant exactly these and the run below must make each of them; a feature that
# calls a new API adds its line here, its rule to crd/rbac.yaml and, if need be, a step below.
USED = {
    ("edge.k8s.io", "edgenodes", "list"),  # the start-up probe, then list-and-watch
    ("edge.k8s.io", "edgenodes", "watch"),
    ("edge.k8s.io", "edgenodes/status", "patch"),  # the status writer (merge patch, never update)
    ("", "pods", "list"),  # mirror pods (<pod>-<node>) decide the Running phase
    ("", "pods", "watch"),
    ("", "namespaces", "list"),  # Pod Security labels and edge.k8s.io/allowed-nodes (manager/admitting.py)
    ("", "namespaces", "watch"),
    ("events.k8s.io", "events", "create"),  # Events on EdgeNodes (manager/events.py)
    ("events.k8s.io", "events", "patch"),  # a repeated Event counts up its series
}

def granted(rbac_text: str) -> set[tuple[str, str, str]]:
    """(group, resource, verb) triples of the edge-manager ClusterRole."""
    role = next(d for d in yaml.safe_load_all(rbac_text) if d and d["kind"] == "ClusterRole"
                and d["metadata"]["name"] == "edge-manager")
    return {(g, r, v) for rule in role["rules"] for g in rule.get("apiGroups", [""])
            for r in rule.get("resources", []) for v in rule.get("verbs", [])}


def audited(audit_log: Path, user: str) -> tuple[set[tuple[str, str, str]], list[dict]]:
    """(group, resource, verb) triples of a user's requests, and those the apiserver refused."""
    used, refused = set(), []
    for line in audit_log.read_text().splitlines():
        e = json.loads(line)
        if e.get("user", {}).get("username") != user:
            continue
        ref = e.get("objectRef") or {}
        resource = ref.get("resource", e.get("requestURI", ""))
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        used.add((ref.get("apiGroup", ""), resource, e["verb"]))
        if (e.get("responseStatus") or {}).get("code") in (401, 403):
            refused.append(e)
    return used, refused


def test_the_cluster_role_grants_exactly_what_the_manager_calls(control_plane_factory, manager_factory, tmp_path):
    cp, audit_log = audited_control_plane(control_plane_factory, tmp_path)
    cp.kubectl("apply", "-f", RBAC_FILE)
    cp.kubectl("create", "serviceaccount", "default", "-n", "default", check=False)
    ns, data = "default", tmp_path / "data"
    # cluster-wide, as deploy/manager.yaml runs it
    mgr = manager_factory(kubeconfig=sa_kubeconfig(cp, tmp_path / "sa.kubeconfig"), data_dir=data,
                          args=["--status-refresh-interval", "2s", "--heartbeat-interval", "1s"])
    apply(cp, "edge01", ns, {"web": "nginx"})
    mirror_pod(cp, ns, "web-edge01", "edge01", "Running")  # a pod event through the pod watch
    agent = FakeAgent(mgr.sync_port, "edge01", data)  # an agent's ack and report: status patches
    try:
        wait_for(lambda: json.loads(cp.kubectl("get", "edgenode", "edge01", "-n", ns, "-o", "json").stdout)
                 .get("status", {}).get("phase") == "Running", 60, "the status written as the ServiceAccount")
    finally:
        agent.close()
    # the same disconnect twice: the second AgentDisconnected Event patches the first's series
    wait_for(lambda: _disconnected(cp, ns) == [1], 60, "the first AgentDisconnected Event")
    again = FakeAgent(mgr.sync_port, "edge01", data)
    wait_for(lambda: again.acked > 0, 60, "the agent back")
    again.close()
    wait_for(lambda: _disconnected(cp, ns) == [2], 60, "a repeated Event patched")
    time.sleep(2)  # the audit log is written asynchronously
    assert mgr.stop() == 0
    used, refused = audited(audit_log, SERVICE_ACCOUNT)
    assert refused == [], [(e["verb"], e.get("objectRef"), e["responseStatus"]) for e in refused]
    assert used == USED, f"the manager made {sorted(used - USED)} beyond the table, not {sorted(USED - used)}"
    rules = granted(RBAC_FILE.read_text())
    assert rules == USED, f"crd/rbac.yaml grants unused {sorted(rules - USED)}, lacks {sorted(USED - rules)}"
    assert "forbidden" not in mgr.log().lower()


def _disconnected(cp, ns: str) -> list[dict]:
    out = cp.kubectl("get", "events.events.k8s.io", "-n", ns, "-o", "json").stdout
    return [(e.get("series") or {}).get("count", 1) for e in json.loads(out)["items"]
            if e.get("reason") == "AgentDisconnected"]


def test_the_tls_secret_is_mounted_0400(control_plane, edgenode_crd):
    docs = [d for d in yaml.safe_load_all(DEPLOY_FILE.read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    secrets = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert secrets and all(v["secret"].get("defaultMode") == 0o400 for v in secrets), secrets
    # and the apiserver reads it so (YAML 1.1 octal, as kubectl sends it): 256, not 400 or a string
    control_plane.kubectl("apply", "-f", RBAC_FILE)
    out = control_plane.kubectl("apply", "--dry-run=server", "-o", "json", "-f", DEPLOY_FILE).stdout
    items = json.loads(out)
    items = items.get("items", [items])
    served = next(i for i in items if i["kind"] == "Deployment")
    modes = [v["secret"]["defaultMode"] for v in served["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert modes and all(m == 0o400 for m in modes), modes
