"""Tenancy: a namespace places pods only on the edge nodes its edge.k8s.io/allowed-nodes annotation names.

At the door, crd/tenancy.yaml's ValidatingAdmissionPolicy refuses the EdgeNode (kubectl apply as a
user runs it); for EdgeNodes that already exist, the real manager refuses their pods and follows
changes of the annotation. The example is example/tenancy.yaml's: two teams sharing one edge node.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from tests.kit.manager import events
from tests.kit.processes import REPO
from tests.kit.waits import wait_for


REFUSAL = 'namespace "{ns}" may not place pods on edge node "{node}": not in its edge.k8s.io/allowed-nodes annotation'


def edgenode(name: str, namespace: str) -> str:
    return json.dumps({"apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode",
                       "metadata": {"name": name, "namespace": namespace},
                       "spec": {"pods": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                                          "spec": {"containers": [{"name": "app", "image": "nginx"}]}}]}})


@pytest.fixture
def tenancy_policy(control_plane, edgenode_crd):
    control_plane.kubectl("apply", "-f", REPO / "crd" / "tenancy.yaml")
    yield
    control_plane.kubectl("delete", "-f", REPO / "crd" / "tenancy.yaml", "--wait=false", check=False)


def example(names: dict[str, str], kind: str) -> str:
    """The objects of a kind in example/tenancy.yaml, its namespaces renamed to this test's."""
    docs = [d for d in yaml.safe_load_all((REPO / "example" / "tenancy.yaml").read_text()) if d["kind"] == kind]
    for d in docs:
        meta = d["metadata"]
        key = "name" if kind == "Namespace" else "namespace"
        meta[key] = names.get(meta[key], meta[key])
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


@pytest.fixture
def teams(control_plane, namespace):
    """team-a and team-b of example/tenancy.yaml, renamed to this test's namespaces."""
    names = {"team-a": f"{namespace[:50]}-a", "team-b": f"{namespace[:50]}-b"}
    control_plane.kubectl("apply", "-f", "-", input=example(names, "Namespace"))
    yield names
    for ns in names.values():
        control_plane.kubectl("delete", "edgenodes", "--all", "-n", ns, "--wait=false", check=False)
        control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def apply(cp, name: str, namespace: str) -> subprocess.CompletedProcess:
    return cp.kubectl("apply", "-f", "-", input=edgenode(name, namespace), check=False)


def test_the_admission_policy_refuses_a_node_the_namespace_may_not_use(control_plane, tenancy_policy, teams,
                                                                       namespace):
    cp, a, b = control_plane, teams["team-a"], teams["team-b"]
    # the policy takes effect once the apiserver has compiled it: wait for the first refusal
    deadline = time.monotonic() + 60
    while (res := apply(cp, "edge-b", a)).returncode == 0 and time.monotonic() < deadline:
        cp.kubectl("delete", "edgenode", "edge-b", "-n", a, check=False)
        time.sleep(1)
    assert res.returncode != 0
    assert REFUSAL.format(ns=a, node="edge-b") in res.stderr
    assert "ValidatingAdmissionPolicy 'edgenode-allowed-nodes'" in res.stderr

    cp.kubectl("apply", "-f", "-", input=example(teams, "EdgeNode"))  # both teams on edge-shared
    for ns, node in [(a, "edge-a"), (b, "edge-b")]:
        assert apply(cp, node, ns).returncode == 0, (ns, node)
    res = apply(cp, "edge-a", b)  # team-b may not use team-a's node
    assert res.returncode != 0 and REFUSAL.format(ns=b, node="edge-a") in res.stderr
    assert apply(cp, "edge-a", namespace).returncode == 0  # an unannotated namespace is not restricted


def test_the_manager_refuses_existing_edgenodes_when_the_annotation_excludes_their_node(
        control_plane, edgenode_crd, teams, manager_factory, tmp_path):
    cp, b, data = control_plane, teams["team-b"], tmp_path / "data"
    # written before the operator restricted team-b (and without the admission policy): the API accepted them
    cp.kubectl("annotate", "namespace", b, "edge.k8s.io/allowed-nodes-")
    cp.kubectl("apply", "-f", "-", input=edgenode("edge-a", b))
    cp.kubectl("apply", "-f", "-", input=edgenode("edge-shared", b))
    cp.kubectl("annotate", "namespace", b, "edge.k8s.io/allowed-nodes=edge-shared,edge-b")
    manager_factory(kubeconfig=cp.kubeconfig, data_dir=data, namespace=b)
    assert [(e.node, e.op) for e in events(data)] == [("edge-shared", "put")]  # edge-a refused at the first list

    def status_rejected(node: str) -> list:
        obj = json.loads(cp.kubectl("get", "edgenode", node, "-n", b, "-o", "json").stdout)
        return (obj.get("status") or {}).get("rejected") or []

    wait_for(lambda: status_rejected("edge-a"), 60, "the refusal in edge-a's status")
    assert status_rejected("edge-a") == [{"name": "web", "reason": REFUSAL.format(ns=b, node="edge-a")}]

    cp.kubectl("annotate", "namespace", b, "edge.k8s.io/allowed-nodes=edge-a,edge-b", "--overwrite")
    wait_for(lambda: [(e.node, e.op) for e in events(data)][1:] in ([("edge-a", "put"), ("edge-shared", "delete")],
                                                                  [("edge-shared", "delete"), ("edge-a", "put")]),
             60, "edge-a sent and edge-shared removed")
    wait_for(lambda: status_rejected("edge-shared"), 60, "the refusal in edge-shared's status")
    assert not status_rejected("edge-a")
