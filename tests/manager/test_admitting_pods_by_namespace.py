"""Pure logic of Pod Security and tenancy for static pods: check wording (PodSecurity's own test tables),
label parsing, the recorder re-evaluating an EdgeNode when its namespace's rules change, and no
exception on arbitrary JSON (a field of the wrong type reads as unset).

That the verdicts equal the API server's is shown against the real one in
test_pod_security_matches_the_apiserver.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manager.admitting import ALLOWED_NODES_ANNOTATION, NamespaceAdmission, allowed_nodes_of, node_allowed
from manager.podsecurity import (
    ENFORCE_LABEL,
    ENFORCE_VERSION_LABEL,
    Level,
    Policy,
    checks_for,
    evaluate,
    host_ports,
    policy_of,
    refusal,
    run_as_non_root,
)
from manager.recording import Recorder


def containers(*cs: dict) -> dict:
    return {"containers": list(cs)}


# Cases of k8s.io/pod-security-admission/policy's *_test.go tables: (check, spec, reason, detail)
WORDING = [
    (host_ports, containers({"name": "a", "ports": [{"hostPort": 0}]}, {"name": "b", "ports": [{"hostPort": 20}]}),
     "hostPort", 'container "b" uses hostPort 20'),
    (host_ports, containers({"name": "a", "ports": [{"hostPort": 0}]},
                            {"name": "b", "ports": [{"hostPort": 0}, {"hostPort": 10}, {"hostPort": 20}]},
                            {"name": "c", "ports": [{"hostPort": 0}, {"hostPort": 10}, {"hostPort": 30}]}),
     "hostPort", 'containers "b", "c" use hostPorts 10, 20, 30'),
    (run_as_non_root, containers({"name": "a"}), "runAsNonRoot != true",
     'pod or container "a" must set securityContext.runAsNonRoot=true'),
    (run_as_non_root, {"securityContext": {"runAsNonRoot": False}, **containers({"name": "a"})},
     "runAsNonRoot != true", "pod must not set securityContext.runAsNonRoot=false"),
    (run_as_non_root, containers({"name": "a"}, {"name": "b"}, {"name": "c", "securityContext": {"runAsNonRoot": False}},
                                 {"name": "d", "securityContext": {"runAsNonRoot": False}}),
     "runAsNonRoot != true", 'containers "c", "d" must not set securityContext.runAsNonRoot=false'),
]


@pytest.mark.parametrize(("check", "spec", "reason", "detail"), WORDING)
def test_checks_word_their_refusals_as_podsecurity_does(check, spec, reason, detail):
    result = check({}, spec)
    assert (result.allowed, result.reason, result.detail) == (False, reason, detail)


def test_the_refusal_joins_reasons_in_podsecurity_order():
    pod = {"metadata": {"name": "p"}, "spec": {
        "hostNetwork": True, "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "containers": [{"name": "app", "image": "x", "securityContext": {"privileged": True}}]}}
    assert refusal(pod, Policy(Level.BASELINE)) == (
        'violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true), '
        'hostPath volumes (volume "root"), privileged (container "app" must not set securityContext.privileged=true)')
    assert refusal(pod, Policy(Level.PRIVILEGED)) is None


def test_check_sets_follow_versions_and_overrides():
    ids = [i for i, _ in checks_for(Policy(Level.RESTRICTED))]
    assert ids[:3] == ["appArmorProfile", "hostNamespaces", "hostPorts"]  # capabilities_baseline overridden
    assert "procMount" not in ids and "procMount_restricted" in ids and "hostPathVolumes" not in ids
    old = [i for i, _ in checks_for(Policy(Level.RESTRICTED, 18))]
    assert "seccompProfile_baseline" in old and "runAsUser" not in old and "procMount" in old
    assert checks_for(Policy(Level.BASELINE, 99)) == checks_for(Policy(Level.BASELINE))  # newer: as the newest
    assert checks_for(Policy(Level.PRIVILEGED)) == ()


@pytest.mark.parametrize(("labels", "expected"), [
    ({}, "baseline:latest"),
    ({ENFORCE_LABEL: "restricted"}, "restricted:latest"),
    ({ENFORCE_LABEL: "privileged", ENFORCE_VERSION_LABEL: "v1.25"}, "privileged:v1.25"),
    ({ENFORCE_VERSION_LABEL: "v1.30"}, "baseline:v1.30"),
    ({ENFORCE_LABEL: "nonsense"}, "restricted:latest"),  # fails closed, as PodSecurity does
    ({ENFORCE_LABEL: "baseline", ENFORCE_VERSION_LABEL: "1.30"}, "baseline:latest"),
])
def test_namespace_labels_give_the_enforce_policy(labels, expected):
    assert str(policy_of(labels, default=Policy(Level.BASELINE))) == expected


def test_allowed_nodes_annotation():
    assert allowed_nodes_of({}) is None and node_allowed(None, "edge01")
    allowed = allowed_nodes_of({ALLOWED_NODES_ANNOTATION: " edge01, shared ,"})
    assert allowed == {"edge01", "shared"} and node_allowed(allowed, "shared") and not node_allowed(allowed, "x")
    assert not node_allowed(allowed_nodes_of({ALLOWED_NODES_ANNOTATION: ""}), "edge01")
    assert node_allowed(allowed_nodes_of({ALLOWED_NODES_ANNOTATION: "*"}), "edge01")


def test_the_default_level_is_never_privileged():
    with pytest.raises(ValueError):
        NamespaceAdmission(default_policy=Policy(Level.PRIVILEGED))


def namespace(name: str, *, labels: dict | None = None, annotations: dict | None = None) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}}}


def edgenode(name: str, ns: str, *pods: dict) -> dict:
    return {"metadata": {"name": name, "namespace": ns, "uid": "u", "resourceVersion": "1", "generation": 1},
            "spec": {"pods": list(pods)}}


def pod(name: str, **security_context) -> dict:
    return {"metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "x", "securityContext": security_context}]}}


def test_relabelling_a_namespace_sends_newly_allowed_and_deletes_newly_refused_pods(store):
    admission = NamespaceAdmission()
    seen = []
    rec = Recorder(store, notify=lambda nodes: None, pod_check=admission, on_desired=seen.append)
    admission.listed([namespace("team", labels={ENFORCE_LABEL: "baseline"})])
    rec.listed([edgenode("edge01", "team", pod("web"), pod("agent", privileged=True))])
    assert [(e.op, e.name) for e in store.iter_events()] == [("put", "web")]

    assert admission.changed(namespace("team", labels={ENFORCE_LABEL: "privileged"}))
    assert [(e.op, e.name) for e in rec.reevaluate("team").events] == [("put", "agent")]
    assert seen[-1].rejected == ()

    assert admission.changed(namespace("team", labels={ENFORCE_LABEL: "baseline"}))
    assert [(e.op, e.name) for e in rec.reevaluate("team").events] == [("delete", "agent")]
    assert [(r.name, r.reason) for r in seen[-1].rejected] == [("agent", (
        'violates PodSecurity "baseline:latest": privileged (container "app" must not set '
        'securityContext.privileged=true)'))]
    assert not admission.changed(namespace("team", labels={ENFORCE_LABEL: "baseline"}))  # nothing moved

    assert admission.changed(namespace("team", labels={ENFORCE_LABEL: "baseline"},
                                       annotations={ALLOWED_NODES_ANNOTATION: "edge02"}))
    assert [(e.op, e.name) for e in rec.reevaluate("team").events] == [("delete", "web")]
    assert seen[-1].rejected[0].reason == ('namespace "team" may not place pods on edge node "edge01": '
                                           "not in its edge.k8s.io/allowed-nodes annotation")
    assert rec.reevaluate("other").events == []


_KEYS = st.sampled_from(["spec", "metadata", "containers", "initContainers", "securityContext", "volumes", "ports",
                         "hostPort", "containerPort", "hostPath", "capabilities", "add", "drop", "annotations", "name",
                         "seccompProfile", "type", "appArmorProfile", "seLinuxOptions", "sysctls", "windowsOptions",
                         "hostProcess", "livenessProbe", "httpGet", "host", "lifecycle", "postStart", "os",
                         "hostNetwork", "hostUsers", "runAsUser", "runAsNonRoot", "procMount", "privileged",
                         "allowPrivilegeEscalation"]) | st.text(max_size=3)
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
                     max_leaves=40)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.fixed_dictionaries({"metadata": _JSON, "spec": _JSON}))
def test_checks_never_raise_on_arbitrary_json(pod):
    admission = NamespaceAdmission()
    for level in Level:
        for minor in (None, 0, 24):
            evaluate(pod, Policy(level, minor))
    verdict = admission(pod, namespace="ns", node="edge01")
    assert verdict is None or verdict.startswith('violates PodSecurity "baseline:latest": ')
    assert admission(pod, namespace="ns", node="edge01") == verdict  # the cached verdict is the same
