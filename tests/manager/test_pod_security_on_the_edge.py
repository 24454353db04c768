"""The real manager applies its namespace's Pod Security level to static pods and follows relabelling.

A privileged pod in a namespace labelled baseline is refused with PodSecurity's wording in the
EdgeNode's status and never reaches the log; relabelled privileged, it is sent; relabelled back,
it is deleted. An unlabelled namespace gets --default-pod-security-level; privileged is refused as
that default.
"""

from __future__ import annotations

import json
import subprocess

from tests.kit.manager import events
from tests.kit.processes import EDGE_MANAGER
from tests.kit.waits import wait_for


PRIVILEGED_REFUSAL = ('violates PodSecurity "baseline:latest": privileged '
                      '(container "app" must not set securityContext.privileged=true)')


def edgenode(name: str, namespace: str) -> str:
    return json.dumps({
        "apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pods": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
             "spec": {"containers": [{"name": "app", "image": "nginx"}]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "node-agent"},
             "spec": {"containers": [{"name": "app", "image": "agent", "securityContext": {"privileged": True}}]}},
        ]},
    })


def rejected(cp, namespace: str, name: str) -> list[dict]:
    obj = json.loads(cp.kubectl("get", "edgenode", name, "-n", namespace, "-o", "json").stdout)
    return (obj.get("status") or {}).get("rejected") or []


def pod_ops(data_dir) -> list[tuple[str, str]]:
    return [(e.op, e.name) for e in events(data_dir)]


def test_relabelling_the_namespace_sends_and_removes_a_privileged_pod(control_plane, edgenode_crd, namespace,
                                                                      manager_factory, tmp_path):
    cp, data = control_plane, tmp_path / "data"
    cp.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=baseline")
    mgr = manager_factory(kubeconfig=cp.kubeconfig, data_dir=data, namespace=namespace)
    cp.kubectl("apply", "-f", "-", input=edgenode("edge01", namespace))

    wait_for(lambda: rejected(cp, namespace, "edge01"), 60, "the refusal in status")
    assert rejected(cp, namespace, "edge01") == [{"name": "node-agent", "reason": PRIVILEGED_REFUSAL}]
    assert pod_ops(data) == [("put", "web")]
    assert PRIVILEGED_REFUSAL in mgr.log()

    cp.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=privileged", "--overwrite")
    wait_for(lambda: ("put", "node-agent") in pod_ops(data), 60, "the privileged pod to be sent")
    wait_for(lambda: not rejected(cp, namespace, "edge01"), 60, "the refusal to leave status")

    cp.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=baseline", "--overwrite")
    wait_for(lambda: pod_ops(data)[-1:] == [("delete", "node-agent")], 60, "the privileged pod to be removed")
    wait_for(lambda: rejected(cp, namespace, "edge01"), 60, "the refusal back in status")
    assert pod_ops(data) == [("put", "web"), ("put", "node-agent"), ("delete", "node-agent")]

    # a restart judges by the same labels: nothing to catch up
    assert mgr.stop() == 0
    mark = len(events(data))
    manager_factory(kubeconfig=cp.kubeconfig, data_dir=data, namespace=namespace)
    assert len(events(data)) == mark


def test_an_unlabelled_namespace_gets_the_default_level(control_plane, edgenode_crd, namespace, manager_factory,
                                                        tmp_path):
    cp = control_plane
    manager_factory(kubeconfig=cp.kubeconfig, data_dir=tmp_path / "base", namespace=namespace)
    cp.kubectl("apply", "-f", "-", input=edgenode("edge01", namespace))
    wait_for(lambda: pod_ops(tmp_path / "base") == [("put", "web")], 60, "web sent under the baseline default")
    wait_for(lambda: rejected(cp, namespace, "edge01"), 60, "the refusal in status")
    assert rejected(cp, namespace, "edge01") == [{"name": "node-agent", "reason": PRIVILEGED_REFUSAL}]

    strict = manager_factory(kubeconfig=cp.kubeconfig, data_dir=tmp_path / "strict", namespace=namespace,
                             args=["--default-pod-security-level", "restricted"])
    assert pod_ops(tmp_path / "strict") == []  # web breaks restricted (no runAsNonRoot, no seccomp, ...)
    assert 'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "app" must ' \
           'set securityContext.allowPrivilegeEscalation=false)' in strict.log()


def test_privileged_or_unknown_defaults_are_refused(tmp_path):
    for args, words in [(["--default-pod-security-level", "privileged"], "privileged is refused"),
                        (["--default-pod-security-level", "lax"], "not baseline or restricted"),
                        (["--default-pod-security-version", "1.30"], "not 'latest' or v1.N")]:
        res = subprocess.run([str(EDGE_MANAGER), "--insecure", "--data-dir", str(tmp_path / "data"),
                              "--metrics-addr", "", *args], capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, res.stderr
        errors = [line for line in res.stderr.splitlines() if line.startswith("edge-manager: error: ")]
        assert len(errors) == 1 and words in errors[0] and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "data").exists()
