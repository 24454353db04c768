"""Least privilege: crd/rbac.yaml grants exactly the API calls the manager makes, and the TLS Secret is mounted 0400.

Attack: the manager's ServiceAccount token is stolen (or the manager is subverted); it must
be worth no more than what the manager needs. Proof by the apiserver itself: a private
control plane with an audit log runs the real edge-manager as that ServiceAccount (a token
from `kubectl create token`, no other rights) through every API path it has, and the
(group, resource, verb) triples the audit log shows must equal the ClusterRole's rules,
none missing (no request was forbidden) and none unused. The run joins and renews an agent's
certificate with a bootstrap token (docs/joining.md), so the joining rules are proven too, and it
runs with --leader-elect as deploy/manager.yaml does (docs/ha.md): the Lease and its own Pod's label.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from tests.kit.builders import apply, mirror_pod, sa_kubeconfig
from tests.kit.crd import audited_control_plane
from tests.kit.fake_agents import FakeAgent
from tests.kit.joining import (
    JoinClient, issued, join_port, joining_args, make_join_pki, node_csr, put_ca_secret, put_token, sync_credentials,
)
from tests.kit.processes import REPO, free_port
from tests.kit.waits import wait_for


RBAC_FILE = REPO / "crd" / "rbac.yaml"
DEPLOY_FILE = REPO / "deploy" / "manager.yaml"
SERVICE_ACCOUNT = "system:serviceaccount:k8s-edge:edge-manager"
HA_NAMESPACE, LEASE, POD = "k8s-edge", "edge-manager", "edge-manager-0"  # as deploy/manager.yaml runs it

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
    # joining (docs/joining.md, with --agent-ca-secret)
    ("", "secrets", "get"),  # the agent CA Secret at start; a bootstrap-token Secret of kube-system at each join
    ("certificates.k8s.io", "certificatesigningrequests", "create"),  # one CSR per join or renewal
    ("certificates.k8s.io", "certificatesigningrequests", "get"),  # read back to approve; polled for the agent
    ("certificates.k8s.io", "certificatesigningrequests", "list"),  # the signer's list+watch
    ("certificates.k8s.io", "certificatesigningrequests", "watch"),
    ("certificates.k8s.io", "certificatesigningrequests/approval", "update"),  # --join-approval auto, renewals
    ("certificates.k8s.io", "certificatesigningrequests/status", "update"),  # the signer writes the certificate
    # high availability (docs/ha.md, with --leader-elect): the Lease, as client-go's leaderelection uses it
    ("coordination.k8s.io", "leases", "get"),  # every try to acquire or renew reads it first
    ("coordination.k8s.io", "leases", "create"),  # the first manager ever creates it
    ("coordination.k8s.io", "leases", "update"),  # renewed (and released at a clean stop)
    ("", "pods", "patch"),  # the manager's own Pod labelled edge.k8s.io/manager-role (manager/pod_role.py)
}
# Granted but never a request of their own: the API server's CertificateApproval and CertificateSigning
# admission check them on the approval and status updates above (proven below by a join failing without them).
CHECKED_BY_ADMISSION = {
    ("certificates.k8s.io", "signers", "approve"),
    ("certificates.k8s.io", "signers", "sign"),
}

def granted(rbac_text: str) -> set[tuple[str, str, str]]:
    """(group, resource, verb) triples of the edge-manager ClusterRole and of its Roles (edge-manager-*)."""
    roles = [d for d in yaml.safe_load_all(rbac_text) if d and d["kind"] in ("ClusterRole", "Role")
             and d["metadata"]["name"].startswith("edge-manager")]
    return {(g, r, v) for role in roles for rule in role["rules"] for g in rule.get("apiGroups", [""])
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
    pki = make_join_pki(tmp_path / "pki")
    put_ca_secret(cp, pki)
    # cluster-wide, as deploy/manager.yaml runs it, with joining on (the agent joins with a token) and leader
    # election as edge-manager-0 of the StatefulSet (its Pod object is enough: no kubelet runs it)
    _manager_pod(cp)
    mgr = manager_factory(kubeconfig=sa_kubeconfig(cp, tmp_path / "sa.kubeconfig"), data_dir=data, insecure=False,
                          args=joining_args(pki, "--status-refresh-interval", "2s", "--heartbeat-interval", "1s",
                                            *_leader_args(pki, tmp_path)))
    wait_for(lambda: _pod_role(cp) == "leader", 60, "the manager's Pod labelled leader")
    port = join_port(mgr.log())
    client = JoinClient(port, ca_pem=pki.ca_cert)
    token, key = put_token(cp), node_csr("edge01")
    status, body = client.join(token, "edge01", key.csr_pem)
    assert status == 202, body
    cert = issued(client.wait_status(body["name"], token=token)).public_bytes(serialization.Encoding.PEM)
    credentials = sync_credentials(pki, cert, key.key_pem)
    renewing = JoinClient(port, ca_pem=pki.ca_cert, cert_pem=cert, key_pem=key.key_pem)
    status, body = renewing.renew(node_csr("edge01").csr_pem)
    assert status == 202, body
    assert issued(renewing.wait_status(body["name"]))
    apply(cp, "edge01", ns, {"web": "nginx"})
    mirror_pod(cp, ns, "web-edge01", "edge01", "Running")  # a pod event through the pod watch
    agent = FakeAgent(mgr.sync_port, "edge01", data, credentials=credentials)  # an ack and report: status patches
    try:
        wait_for(lambda: json.loads(cp.kubectl("get", "edgenode", "edge01", "-n", ns, "-o", "json").stdout)
                 .get("status", {}).get("phase") == "Running", 60, "the status written as the ServiceAccount")
    finally:
        agent.close()
    # the same disconnect twice: the second AgentDisconnected Event patches the first's series
    wait_for(lambda: _disconnected(cp, ns) == [1], 60, "the first AgentDisconnected Event")
    again = FakeAgent(mgr.sync_port, "edge01", data, credentials=credentials)
    wait_for(lambda: again.acked > 0, 60, "the agent back")
    again.close()
    wait_for(lambda: _disconnected(cp, ns) == [2], 60, "a repeated Event patched")
    wait_for(lambda: _lease_renewed(cp), 60, "the Lease renewed (an update)")
    time.sleep(2)  # the audit log is written asynchronously
    used, refused = audited(audit_log, SERVICE_ACCOUNT)
    assert refused == [], [(e["verb"], e.get("objectRef"), e["responseStatus"]) for e in refused]
    assert used == USED, f"the manager made {sorted(used - USED)} beyond the table, not {sorted(USED - used)}"
    rules = granted(RBAC_FILE.read_text())
    assert rules == USED | CHECKED_BY_ADMISSION, \
        f"crd/rbac.yaml grants unused {sorted(rules - USED - CHECKED_BY_ADMISSION)}, lacks {sorted(USED - rules)}"
    assert "forbidden" not in mgr.log().lower()

    # sign and approve on the signer are each needed: without one, that step is refused (and the join still
    # answered: the CSR exists), and it is retried alone until the verb is granted again, with no new watch event
    for node, verb, step in (("edge02", "sign", "signed"), ("edge03", "approve", "approved")):
        _join_without_signer_verb(cp, mgr, client, node=node, verb=verb, step=step)
    assert mgr.stop() == 0


def _manager_pod(cp: Any) -> None:
    """The Pod object of edge-manager-0, as the StatefulSet's controller would create it."""
    cp.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD, "namespace": HA_NAMESPACE, "labels": {"app.kubernetes.io/name": "edge-manager"}},
        "spec": {"serviceAccountName": "edge-manager", "automountServiceAccountToken": False,
                 "containers": [{"name": "edge-manager", "image": "edge-manager"}]},
    }))


def _leader_args(pki: Any, tmp_path: Path) -> list[str]:
    """--leader-elect and what deploy/manager.yaml's downward API gives, for one manager on 127.0.0.1."""
    port = free_port()
    peer_ca = tmp_path / "peer-ca.crt"
    peer_ca.write_bytes(pki.ca_cert)  # verifies the serving certificate (for 127.0.0.1), as the discovery bundle
    return ["--sync-server", f"127.0.0.1:{port}", "--leader-elect", "--leader-elect-resource-namespace", HA_NAMESPACE,
            "--advertise-address", f"127.0.0.1:{port}", "--peer-ca-file", str(peer_ca),
            "--pod-name", POD, "--pod-namespace", HA_NAMESPACE]


def _pod_role(cp: Any) -> str | None:
    out = cp.kubectl("get", "pod", POD, "-n", HA_NAMESPACE, "-o", "json").stdout
    return (json.loads(out)["metadata"].get("labels") or {}).get("edge.k8s.io/manager-role")


def _lease_renewed(cp: Any) -> bool:
    spec = json.loads(cp.kubectl("get", "lease", LEASE, "-n", HA_NAMESPACE, "-o", "json").stdout)["spec"]
    return spec.get("renewTime") not in (None, spec.get("acquireTime"))


def _join_without_signer_verb(cp, mgr, client: JoinClient, *, node: str, verb: str, step: str) -> None:
    """Withhold one verb on the signer, join, see that step refused and retried, grant it back, see the certificate."""
    role = json.loads(cp.kubectl("get", "clusterrole", "edge-manager", "-o", "json").stdout)
    for rule in role["rules"]:
        if "signers" in rule.get("resources", []):
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    cp.kubectl("replace", "-f", "-", input=json.dumps(role))
    token = put_token(cp)
    status, body = client.join(token, node, node_csr(node).csr_pem)
    assert status == 202, body
    wait_for(lambda: f"CSR {body['name']} not {step} yet (HTTP 403 Forbidden)" in mgr.log(), 30, f"{verb} refused")
    assert client.csr(body["name"], token=token)[1] == {"status": "Pending"}
    cp.kubectl("apply", "-f", RBAC_FILE)
    assert issued(client.wait_status(body["name"], token=token))


def _disconnected(cp, ns: str) -> list[dict]:
    out = cp.kubectl("get", "events.events.k8s.io", "-n", ns, "-o", "json").stdout
    return [(e.get("series") or {}).get("count", 1) for e in json.loads(out)["items"]
            if e.get("reason") == "AgentDisconnected"]


@pytest.fixture(scope="module")
def rbac_applied(control_plane, edgenode_crd) -> None:
    control_plane.kubectl("apply", "-f", RBAC_FILE)


# The HA rules are limited by name (resourceNames); the apiserver's authorizer says what that allows.
@pytest.mark.parametrize("verb,resource,namespace,allowed", [
    ("create", "leases", HA_NAMESPACE, True),  # a create carries no name: RBAC cannot limit it to one
    ("get", f"leases/{LEASE}", HA_NAMESPACE, True),
    ("update", f"leases/{LEASE}", HA_NAMESPACE, True),
    ("get", "leases/kube-scheduler", HA_NAMESPACE, False),  # another Lease
    ("update", f"leases/{LEASE}", "kube-system", False),  # the same name elsewhere
    ("delete", f"leases/{LEASE}", HA_NAMESPACE, False),
    ("list", "leases", HA_NAMESPACE, False),
    ("patch", f"pods/{POD}", HA_NAMESPACE, True),
    ("patch", "pods/edge-manager-1", HA_NAMESPACE, True),
    ("patch", "pods/edge-manager-2", HA_NAMESPACE, False),  # replicas: 3 adds it (deploy/manager.yaml)
    ("patch", "pods/some-app", HA_NAMESPACE, False),
    ("patch", f"pods/{POD}", "default", False),
    ("update", f"pods/{POD}", HA_NAMESPACE, False),
    ("delete", f"pods/{POD}", HA_NAMESPACE, False),
])
def test_the_ha_rules_reach_the_one_lease_and_the_managers_pods_only(control_plane, rbac_applied, verb, resource,
                                                                     namespace, allowed):
    res = control_plane.kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", SERVICE_ACCOUNT,
                                check=False)
    assert res.stdout.strip() == ("yes" if allowed else "no"), (res.stdout, res.stderr)


def test_the_tls_secret_is_mounted_0400(control_plane, edgenode_crd):
    docs = [d for d in yaml.safe_load_all(DEPLOY_FILE.read_text()) if d]
    statefulset = next(d for d in docs if d["kind"] == "StatefulSet")
    secrets = [v for v in statefulset["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert secrets and all(v["secret"].get("defaultMode") == 0o400 for v in secrets), secrets
    # and the apiserver reads it so (YAML 1.1 octal, as kubectl sends it): 256, not 400 or a string
    control_plane.kubectl("apply", "-f", RBAC_FILE)
    out = control_plane.kubectl("apply", "--dry-run=server", "-o", "json", "-f", DEPLOY_FILE).stdout
    items = json.loads(out)
    items = items.get("items", [items])
    served = next(i for i in items if i["kind"] == "StatefulSet")
    modes = [v["secret"]["defaultMode"] for v in served["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert modes and all(m == 0o400 for m in modes), modes
