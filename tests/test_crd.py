"""The EdgeNode CRD against a real kube-apiserver, driven with the built kubectl."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.kit.malformed import MALFORMED_PODS
from tests.kit.processes import REPO
from tools import gen_crd_schema

EDGE01 = REPO / "example" / "edge01.yaml"
EDGE02 = REPO / "example" / "edge02-multi.yaml"


def pod(name: str, **extra) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}, **extra}


def edgenode(name: str, pods: list, **extra) -> dict:
    return {"apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode",
            "metadata": {"name": name}, "spec": {"pods": pods}, **extra}


def create(cp, ns: str, obj: dict, check: bool = False):
    return cp.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(obj), check=check)


def get(cp, ns: str, name: str) -> dict:
    return json.loads(cp.kubectl("get", "-n", ns, "edgenode", name, "-o", "json").stdout)


# -- the definition ----------------------------------------------------------------------
class TestDefinition:
    def test_established(self, control_plane, edgenode_crd):
        res = control_plane.kubectl("wait", "--for", "condition=established", "--timeout=30s",
                                    f"crd/{edgenode_crd.name}")
        assert "condition met" in res.stdout

    def test_names_scope_and_approval(self, control_plane, edgenode_crd):
        crd = json.loads(control_plane.kubectl("get", "crd", edgenode_crd.name, "-o", "json").stdout)
        assert crd["metadata"]["annotations"]["api-approved.kubernetes.io"] == "unapproved, experimental-only"
        spec = crd["spec"]
        assert (spec["group"], spec["scope"]) == ("edge.k8s.io", "Namespaced")
        assert spec["names"]["kind"] == "EdgeNode"
        assert spec["names"]["shortNames"] == ["en"]
        (v,) = spec["versions"]
        assert (v["name"], v["served"], v["storage"]) == ("v1alpha1", True, True)
        assert v["subresources"] == {"status": {}}
        conds = {c["type"]: (c["status"], c["reason"]) for c in crd["status"]["conditions"]}
        assert conds["NamesAccepted"][0] == "True"
        # The protected group is accepted with the "unapproved" annotation, and said so.
        assert conds["KubernetesAPIApprovalPolicyConformant"] == ("False", "UnapprovedAnnotation")


# -- the examples ------------------------------------------------------------------------
class TestExamples:
    def test_edge01_is_the_proof_of_concept_example(self):
        assert yaml.safe_load(EDGE01.read_text()) == edgenode("edge01", [{
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nginx"},
            "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]},
        }])

    def test_edge01_creates_unchanged(self, control_plane, edgenode_crd, namespace):
        res = control_plane.kubectl("create", "-n", namespace, "-f", EDGE01)
        assert res.stdout.strip() == "edgenode.edge.k8s.io/edge01 created"
        stored = get(control_plane, namespace, "edge01")
        assert stored["spec"] == yaml.safe_load(EDGE01.read_text())["spec"]  # nothing pruned
        control_plane.kubectl("delete", "-n", namespace, "-f", EDGE01)

    def test_edge02_multi_creates(self, control_plane, edgenode_crd, namespace):
        control_plane.kubectl("apply", "-n", namespace, "-f", EDGE02)
        stored = get(control_plane, namespace, "edge02")
        assert [p["metadata"]["name"] for p in stored["spec"]["pods"]] == ["nginx", "redis", "ticker"]
        assert stored["spec"]["pods"][2]["spec"]["containers"][0]["command"][0] == "sh"

    def test_get_shows_printer_columns(self, control_plane, edgenode_crd, namespace):
        control_plane.kubectl("create", "-n", namespace, "-f", EDGE01)
        for resource in ("edgenodes", "en"):
            lines = control_plane.kubectl("get", resource, "-n", namespace).stdout.splitlines()
            assert lines[0].split() == ["NAME", "PHASE", "PODS", "SYNCED", "HEAD", "LAST-SEEN", "AGE"]
            assert lines[1].split()[0] == "edge01"


# -- validation --------------------------------------------------------------------------
class TestValidation:
    def test_duplicate_pod_names_rejected(self, control_plane, edgenode_crd, namespace):
        res = create(control_plane, namespace, edgenode("dup", [pod("a"), pod("web"), pod("web")]))
        assert res.returncode != 0
        assert "spec.pods: Invalid value: pod names must be unique within an EdgeNode" in res.stderr

    def test_pod_that_is_not_an_object_rejected(self, control_plane, edgenode_crd, namespace):
        res = create(control_plane, namespace, edgenode("str", [pod("a"), "nginx"]))
        assert res.returncode != 0
        assert 'spec.pods[1]: Invalid value: "string": spec.pods[1] in body must be of type object' in res.stderr

    def test_pod_without_kind_or_name_rejected(self, control_plane, edgenode_crd, namespace):
        res = create(control_plane, namespace, edgenode("nokind", [{"apiVersion": "v1", "metadata": {"name": "x"}}]))
        assert res.returncode != 0 and "spec.pods[0].kind: Required value" in res.stderr
        res = create(control_plane, namespace, edgenode("noname", [{"apiVersion": "v1", "kind": "Pod", "metadata": {}}]))
        assert res.returncode != 0 and "spec.pods[0].metadata.name: Required value" in res.stderr

    def test_non_pod_kind_rejected(self, control_plane, edgenode_crd, namespace):
        res = create(control_plane, namespace, edgenode("dep", [pod("a", kind="Deployment")]))
        assert res.returncode != 0
        assert 'spec.pods[0].kind: Unsupported value: "Deployment": supported values: "Pod"' in res.stderr

    def test_invalid_node_name_rejected(self, control_plane, edgenode_crd, namespace):
        res = create(control_plane, namespace, edgenode("Edge_01", [pod("a")]))
        assert res.returncode != 0
        assert "must be a lowercase RFC 1123 subdomain" in res.stderr

    def test_too_many_pods_rejected(self, control_plane, edgenode_crd, namespace):
        res = create(control_plane, namespace, edgenode("big", [pod(f"p{i}") for i in range(257)]))
        assert res.returncode != 0
        assert "spec.pods: Too many: 257: must have at most 256 items" in res.stderr

    def test_maximum_pods_with_longest_names_accepted(self, control_plane, edgenode_crd, namespace):
        # The worst case for the CEL uniqueness rule's runtime cost: 256 pods, 253-character names.
        pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{i:03d}" + "a" * 250},
                 "spec": {"containers": [{"name": "c", "image": "busybox"}]}} for i in range(256)]
        res = create(control_plane, namespace, edgenode("full", pods))
        assert res.returncode == 0, res.stderr


# -- the pod spec, generated from the core/v1 Pod OpenAPI -------------------------------------
RICH_POD = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rich", "labels": {"app": "rich"}},
    "spec": {
        "hostNetwork": False, "restartPolicy": "Always", "terminationGracePeriodSeconds": 5,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}, {"name": "logs", "hostPath": {"path": "/var/log"}}],
        "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}},
        "containers": [{
            "name": "app", "image": "nginx:1.27", "command": ["nginx"], "args": ["-g", "daemon off;"],
            "env": [{"name": "A", "value": "1"}, {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}],
            "resources": {"limits": {"cpu": "500m", "memory": 134217728}, "requests": {"cpu": "250m"}},
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 10},
            "readinessProbe": {"tcpSocket": {"port": 80}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }],
    },
}


class TestGeneratedPodSchema:
    def test_the_crd_is_not_stale(self):
        # regenerated in memory from the pinned k8s.io/kubernetes module's OpenAPI document
        for path, text in gen_crd_schema.generate(gen_crd_schema.default_openapi()).items():
            assert path.read_text() == text, f"{path.name} is stale: run python -m tools.gen_crd_schema"

    def test_the_generator_checks_and_names_a_bad_input(self, tmp_path, capsys):
        assert gen_crd_schema.main(["--check"]) == 0
        assert gen_crd_schema.main(["--check", "--openapi", str(tmp_path / "none.json")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "none.json" in err and "Traceback" not in err

    def test_the_crd_stays_small_enough_for_client_side_apply(self):
        # kubectl apply (client-side) stores the whole object in a 256 KiB annotation
        crd = yaml.safe_load(gen_crd_schema.CRD_FILE.read_text())
        assert len(json.dumps(crd, separators=(",", ":"))) < 200 * 1024

    @pytest.mark.parametrize("case, bad, path", MALFORMED_PODS, ids=[m[0] for m in MALFORMED_PODS])
    def test_the_ten_malformed_pods_are_refused_by_the_api_with_the_field_path(
            self, control_plane, edgenode_crd, namespace, case, bad, path):
        res = control_plane.kubectl("apply", "-n", namespace, "-f", "-", check=False,
                                    input=json.dumps(edgenode("edge01", [pod("good"), bad])))
        assert res.returncode != 0
        assert f"spec.pods[1].{path}" in res.stderr, res.stderr
        assert create(control_plane, namespace, edgenode("edge01", [pod("good")])).returncode == 0

    def test_a_pod_using_many_fields_is_accepted_unchanged(self, control_plane, edgenode_crd, namespace):
        create(control_plane, namespace, edgenode("edge01", [RICH_POD]), check=True)
        assert get(control_plane, namespace, "edge01")["spec"]["pods"] == [RICH_POD]

    def test_the_pod_schema_matches_a_real_pod(self, control_plane, namespace):
        # differential: the API takes the same pod as an ordinary Pod (dry run: no scheduler here)
        res = control_plane.kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-",
                                    input=json.dumps(RICH_POD), check=False)
        assert res.returncode == 0, res.stderr


# -- status ------------------------------------------------------------------------------
class TestStatusSubresource:
    STATUS = {"phase": "Synced", "observedGeneration": 1, "headOffset": 7, "syncedOffset": 7,
              "lastSeen": "2025-01-02T03:04:05Z", "desiredPods": 1, "runningPods": 0, "rejectedPods": 0}

    def test_status_through_main_resource_is_ignored(self, control_plane, edgenode_crd, namespace):
        obj = edgenode("edge01", [pod("nginx")], status=self.STATUS)
        create(control_plane, namespace, obj, check=True)
        assert "status" not in get(control_plane, namespace, "edge01")
        control_plane.kubectl("replace", "-n", namespace, "-f", "-", input=json.dumps(obj))
        assert "status" not in get(control_plane, namespace, "edge01")
        control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(obj))
        assert "status" not in get(control_plane, namespace, "edge01")
        control_plane.kubectl("patch", "-n", namespace, "edgenode", "edge01", "--type=merge",
                              "-p", json.dumps({"status": self.STATUS}))
        assert "status" not in get(control_plane, namespace, "edge01")

    def test_status_subresource_patch_works(self, control_plane, edgenode_crd, namespace):
        create(control_plane, namespace, edgenode("edge01", [pod("nginx")]), check=True)
        status = {**self.STATUS,
                  "rejected": [{"name": "hostnet", "reason": "kubelet cannot run it as a static pod"}],
                  "conditions": [{"type": "Synced", "status": "True", "reason": "AgentCaughtUp",
                                  "message": "agent acknowledged offset 7", "observedGeneration": 1,
                                  "lastTransitionTime": "2025-01-02T03:04:05Z"}]}
        control_plane.kubectl("patch", "-n", namespace, "edgenode", "edge01", "--subresource=status",
                              "--type=merge", "-p", json.dumps({"status": status}))
        stored = get(control_plane, namespace, "edge01")
        assert stored["status"] == status
        assert stored["metadata"]["generation"] == 1  # status writes do not bump generation
        row = control_plane.kubectl("get", "en", "edge01", "-n", namespace, "--no-headers").stdout.split()
        assert row[:5] == ["edge01", "Synced", "1", "7", "7"]

    @pytest.mark.parametrize("bad,message", [
        ({"phase": "Done"}, 'status.phase: Unsupported value: "Done"'),
        ({"headOffset": -1}, "status.headOffset: Invalid value: -1"),
        ({"lastSeen": "yesterday"}, "status.lastSeen"),
        ({"conditions": [{"type": "Synced", "status": "Maybe"}]}, "status.conditions[0].status"),
    ])
    def test_status_is_validated(self, control_plane, edgenode_crd, namespace, bad, message):
        create(control_plane, namespace, edgenode("edge01", [pod("nginx")]), check=True)
        res = control_plane.kubectl("patch", "-n", namespace, "edgenode", "edge01", "--subresource=status",
                                    "--type=merge", "-p", json.dumps({"status": bad}), check=False)
        assert res.returncode != 0
        assert message in res.stderr


# -- RBAC --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def manager_identity(control_plane, edgenode_crd) -> str:
    control_plane.kubectl("apply", "-f", REPO / "crd" / "rbac.yaml")
    return "system:serviceaccount:k8s-edge:edge-manager"


class TestManagerRBAC:
    @pytest.mark.parametrize("verb,resource,allowed", [
        ("watch", "edgenodes.edge.k8s.io", True),
        ("list", "edgenodes.edge.k8s.io", True),
        ("patch", "edgenodes.edge.k8s.io/status", True),
        ("update", "edgenodes.edge.k8s.io/status", False),  # the status is patched, never replaced (issue 12)
        ("get", "edgenodes.edge.k8s.io/status", False),
        ("get", "pods", False),
        ("list", "pods", True),
        ("list", "namespaces", True),
        ("watch", "namespaces", True),
        ("update", "namespaces", False),
        ("update", "edgenodes.edge.k8s.io", False),
        ("delete", "edgenodes.edge.k8s.io", False),
        ("create", "pods", False),
        ("get", "secrets", False),
    ])
    def test_manager_may_do_only_what_it_needs(self, control_plane, manager_identity, verb, resource, allowed):
        resource, _, sub = resource.partition("/")
        extra = [f"--subresource={sub}"] if sub else []
        res = control_plane.kubectl("auth", "can-i", verb, resource, *extra, "--as", manager_identity, "-A", check=False)
        assert res.stdout.strip() == ("yes" if allowed else "no"), res.stderr
