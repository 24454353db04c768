"""The ten malformed pods of issue 11, shared by the CRD, manager and e2e tests.

Each is (id, pod, the field path the manager's and the API's refusal names).
"""

from __future__ import annotations

from typing import Any


def _pod(name: str, spec: Any = None, **container: Any) -> dict[str, Any]:
    c = {"name": "main", "image": "busybox", **container}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [c]} if spec is None else spec}


MALFORMED_PODS: list[tuple[str, dict[str, Any], str]] = [
    ("string-container", _pod("bad", {"containers": ["oops"]}), "spec.containers[0]"),
    ("volume-number", _pod("bad", {"containers": [{"name": "main", "image": "busybox"}], "volumes": [5]}),
     "spec.volumes[0]"),
    ("env-number", _pod("bad", env=5), "spec.containers[0].env"),
    ("env-string-item", _pod("bad", env=["A=1"]), "spec.containers[0].env[0]"),
    ("security-context-string", _pod("bad", securityContext="root"), "spec.containers[0].securityContext"),
    ("port-word", _pod("bad", ports=[{"containerPort": "eighty"}]), "spec.containers[0].ports[0].containerPort"),
    ("spec-array", _pod("bad", []), "spec"),
    ("containers-null", _pod("bad", {"containers": None}), "spec.containers"),
    ("image-number", _pod("bad", image=5), "spec.containers[0].image"),
    ("resources-garbage", _pod("bad", resources={"limits": {"cpu": {"nested": [{"garbage": True}]}}}),
     "spec.containers[0].resources.limits.cpu"),
]


def loose_crd() -> str:
    """crd/edgenode.yaml without the generated pod spec (as before issue 11): the API takes any pod spec.

    Stands for EdgeNodes stored before the schema was tightened, which the manager must still refuse.
    """
    import json
    from pathlib import Path

    import yaml

    crd = yaml.safe_load((Path(__file__).resolve().parents[2] / "crd" / "edgenode.yaml").read_text())
    items = (crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
             ["properties"]["pods"]["items"])
    del items["properties"]["spec"]
    items["required"].remove("spec")
    return json.dumps(crd)
