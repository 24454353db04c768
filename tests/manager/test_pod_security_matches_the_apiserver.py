"""The manager's Pod Security verdicts agree with the API server's own PodSecurity admission, pod for pod.

The corpus is pod-security-admission's own fixtures (tests/manager/data/podsecurity_corpus.json,
made by tools/podsecurity_corpus.py: pods on both sides of every baseline and restricted check at
every version) plus a few pods breaking several rules at once. Each configuration is a real
namespace labelled as an operator would; the same pods are created as ordinary Pods with
`kubectl create --dry-run=server -f -` (one List per namespace) and the refusal message of each,
or its admission, is compared with the manager's NamespaceAdmission fed that Namespace object.

The unlabelled namespace: the API server's default is privileged, the manager's is baseline
(--default-pod-security-level), so the manager's verdict on an unlabelled namespace is compared
with the API server's on a namespace labelled baseline.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from manager.admitting import NamespaceAdmission
from manager.podsecurity import ENFORCE_LABEL, ENFORCE_VERSION_LABEL, Level, Policy

CORPUS = Path(__file__).parent / "data" / "podsecurity_corpus.json"
_REFUSED = re.compile(r'pods "(?P<name>[^"]+)" is forbidden: (?P<message>violates PodSecurity .*)$')
_CREATED = re.compile(r"^pod/(?P<name>\S+)")
_INVALID = re.compile(r'Pod "(?P<name>[^"]+)" is invalid: (?P<message>.*)$')
INVALID = "invalid"  # refused by the API server's validation, before admission: nothing to compare

_C = {"image": "registry.k8s.io/pause", "name": "app"}
# Several rules at once (the joined list and its order), and the API server's defaulting and skew.
EXTRA_PODS = (
    {"metadata": {"name": "x-many"}, "spec": {
        "hostNetwork": True, "hostPID": True,
        "securityContext": {"runAsUser": 0, "sysctls": [{"name": "kernel.msgmax", "value": "1"},
                                                         {"name": "kernel.shm_rmid_forced", "value": "1"}]},
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}, {"name": "plain"}],
        "containers": [{**_C, "ports": [{"containerPort": 8080}],  # hostNetwork: hostPort defaults to 8080
                        "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}}},
                       {**_C, "name": "side", "securityContext": {"privileged": True,
                                                                  "seccompProfile": {"type": "Unconfined"}}}],
        "initContainers": [{**_C, "name": "init", "ports": [{"containerPort": 53, "hostPort": 53}]}]}},
    {"metadata": {"name": "x-apparmor-annotation",
                  "annotations": {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}},
     "spec": {"containers": [_C]}},
    {"metadata": {"name": "x-user-namespace"}, "spec": {
        "hostUsers": False, "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{**_C, "securityContext": {"allowPrivilegeEscalation": False, "procMount": "Unmasked",
                                                  "capabilities": {"drop": ["ALL"]}}}]}},
    {"metadata": {"name": "x-windows"}, "spec": {
        "os": {"name": "windows"}, "securityContext": {"runAsNonRoot": True}, "containers": [_C]}},
    {"metadata": {"name": "x-probe-host"}, "spec": {"containers": [
        {**_C, "livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}},
         "lifecycle": {"preStop": {"tcpSocket": {"host": "example.com", "port": 80}}}}]}},
    {"metadata": {"name": "x-restricted-ok"}, "spec": {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "containers": [{**_C, "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {
            "drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]}},
)

# (label values or None for unlabelled, the API server namespace's labels to compare with)
CONFIGURATIONS = [
    ("privileged", {ENFORCE_LABEL: "privileged"}),
    ("baseline", {ENFORCE_LABEL: "baseline"}),
    ("restricted", {ENFORCE_LABEL: "restricted"}),
    ("restricted-latest", {ENFORCE_LABEL: "restricted", ENFORCE_VERSION_LABEL: "latest"}),
    # one version inside every range where a check changes: baseline at 1.19 (seccomp fields), 1.27, 1.29 and
    # 1.32 (sysctls), 1.31 (SELinux), 1.34 (probe hosts); restricted at those and 1.8 (allowPrivilegeEscalation),
    # 1.22 (capabilities), 1.23 (runAsUser), 1.25 (Windows exempt); both at 1.35 (latest: user namespaces)
    *((f"baseline-{v}", {ENFORCE_LABEL: "baseline", ENFORCE_VERSION_LABEL: v})
      for v in ("v1.0", "v1.19", "v1.27", "v1.29", "v1.31", "v1.32", "v1.34")),
    *((f"restricted-{v}", {ENFORCE_LABEL: "restricted", ENFORCE_VERSION_LABEL: v})
      for v in ("v1.0", "v1.8", "v1.19", "v1.22", "v1.23", "v1.25", "v1.27", "v1.29", "v1.31", "v1.32", "v1.34")),
]


def corpus() -> list[dict]:
    pods = [e["pod"] for e in json.loads(CORPUS.read_text())["pods"]]
    return pods + [{"apiVersion": "v1", "kind": "Pod", **p} for p in EXTRA_PODS]


def api_verdicts(cp, namespace: str, pods: list[dict]) -> dict[str, str | None]:
    """name -> the API server's refusal message (None: admitted; INVALID), from one dry-run create of a List.

    --validate=false: kubectl's client-side schema check would refuse the whole List for one
    fixture the API server then refuses on its own (a few fixtures are not valid Pods).
    """
    res = cp.kubectl("create", "--dry-run=server", "--validate=false", "-n", namespace, "-o", "name", "-f", "-",
                     check=False,
                     input=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}), timeout=180)
    verdicts: dict[str, str | None] = {}
    for line in res.stdout.splitlines():
        if m := _CREATED.match(line):
            verdicts[m["name"]] = None
    for line in res.stderr.splitlines():
        if m := _REFUSED.search(line):
            verdicts[m["name"]] = m["message"]
        elif m := _INVALID.search(line):
            verdicts[m["name"]] = INVALID
    missing = [p["metadata"]["name"] for p in pods if p["metadata"]["name"] not in verdicts]
    assert not missing, f"no verdict for {missing[:5]}; stderr: {res.stderr[-2000:]}"
    return verdicts


def labelled_namespace(cp, base: str, suffix: str, labels: dict[str, str]) -> dict:
    name = f"{base[:40]}-{suffix}"[:63].rstrip("-")
    cp.kubectl("create", "namespace", name)
    cp.kubectl("create", "serviceaccount", "default", "-n", name, check=False)
    if labels:
        cp.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
    return json.loads(cp.kubectl("get", "namespace", name, "-o", "json").stdout)


@pytest.fixture
def namespaces(control_plane, namespace):
    made: list[str] = []
    yield made
    for name in made:
        control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_every_pod_gets_the_apiservers_verdict_at_every_level_and_version(control_plane, namespace, namespaces):
    pods = corpus()
    assert len(pods) > 300
    disagreements = []
    invalid: set[str] = set()
    refused_somewhere = 0
    made = [labelled_namespace(control_plane, namespace, suffix.replace(".", "-"), labels)
            for suffix, labels in CONFIGURATIONS]
    namespaces.extend(ns["metadata"]["name"] for ns in made)
    with ThreadPoolExecutor(4) as pool:  # one kubectl per namespace, a few at a time
        verdicts = list(pool.map(lambda ns: api_verdicts(control_plane, ns["metadata"]["name"], pods), made))
    for (suffix, _), ns, api in zip(CONFIGURATIONS, made, verdicts, strict=True):
        name = ns["metadata"]["name"]
        admission = NamespaceAdmission(default_policy=Policy(Level.BASELINE))
        admission.listed([ns])
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            if api[pod_name] == INVALID:
                invalid.add(pod_name)
                continue
            ours = admission(pod, namespace=name, node="edge01")
            refused_somewhere += ours is not None
            if ours != api[pod_name]:
                disagreements.append((suffix, pod_name, api[pod_name], ours))
    assert not disagreements, "\n".join(f"{s} {p}:\n  apiserver: {a}\n  manager:   {o}" for s, p, a, o in
                                        disagreements[:20]) + f"\n({len(disagreements)} disagreements)"
    assert refused_somewhere > 1000  # the comparison is not vacuous
    print(f"{len(CONFIGURATIONS)} namespaces x {len(pods)} pods; {refused_somewhere} refusals compared; "
          f"{len(invalid)} fixtures are no valid Pod: {sorted(invalid)}")
    assert not invalid - {"psa-54", "psa-55", "psa-359", "psa-360"}, sorted(invalid)  # procMount fixtures of 1.35
    # without hostUsers: false, which the API server's validation requires since 1.35


def test_an_unlabelled_namespace_gets_the_baseline_default_the_apiserver_gives_a_baseline_label(
        control_plane, namespace, namespaces):
    pods = corpus()
    unlabelled = json.loads(control_plane.kubectl("get", "namespace", namespace, "-o", "json").stdout)
    baseline = labelled_namespace(control_plane, namespace, "baseline", {ENFORCE_LABEL: "baseline"})
    namespaces.append(baseline["metadata"]["name"])
    admission = NamespaceAdmission()  # the manager's default: baseline, latest
    admission.listed([unlabelled])
    api_unlabelled = api_verdicts(control_plane, namespace, pods)
    api_baseline = api_verdicts(control_plane, baseline["metadata"]["name"], pods)
    assert all(v in (None, INVALID) for v in api_unlabelled.values())  # the API server's default: privileged
    ours = {p["metadata"]["name"]: admission(p, namespace=namespace, node="edge01") for p in pods
            if api_baseline[p["metadata"]["name"]] != INVALID}
    assert ours == {name: v for name, v in api_baseline.items() if v != INVALID}
    assert sum(v is not None for v in ours.values()) > 30
