"""What tests feed the system: pod manifests, log changes (one `put` and one `delete` signature), EdgeNodes.

- ``pod_manifest(ns, name, image=..., node=None)``: canonical JSON of a small static pod.
- ``put(node, name, rev=0, *, ns="default", image=None)`` / ``delete(node, name, *, ns="default")``:
  log changes as the recorder makes them (a put carries a Source whose resourceVersion is `rev`).
- ``big_manifest`` / ``fill_node``: nodes of many large pods (stream bounds).
- ``edgenode_yaml`` / ``apply``: an EdgeNode through kubectl; ``mirror_pod``: what kubelet would publish;
  ``edgenode_status``: the status the manager wrote; ``spec_pod``: a pod of an EdgeNode's spec.
- ``sa_kubeconfig``: a kubeconfig with only a ServiceAccount's token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eventlog import Change, LogStore, Source, canonical_manifest

POD_BYTES = 5 * 1024  # the stream-bounds issue's reproduction: 256 pods of 5 KB each


def pod_manifest(ns: str, name: str, image: str = "nginx:1.25", *, node: str | None = None) -> bytes:
    """Canonical JSON of a small static pod (bound to `node` when given)."""
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": image}]}
    if node is not None:
        spec = {"nodeName": node, **spec}
    return canonical_manifest({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                               "spec": spec})


def put(node: str, name: str, rev: int = 0, *, ns: str = "default", image: str | None = None) -> Change:
    """A put of a small pod with a source, as the recorder makes them; `rev` (or `image`) makes it differ."""
    return Change(node, "put", ns, name, pod_manifest(ns, name, image or f"nginx:1.{rev}", node=node),
                  Source(f"uid-{node}", str(rev), 1))


def delete(node: str, name: str, *, ns: str = "default") -> Change:
    """A delete of a pod."""
    return Change(node, "delete", ns, name)


def big_manifest(node: str, name: str, size: int = POD_BYTES, rev: int = 0) -> bytes:
    """A pod manifest of about `size` bytes."""
    pad = "x" * max(0, size - 100)
    return (f'{{"kind":"Pod","metadata":{{"name":"{name}","namespace":"default"}},'
            f'"spec":{{"nodeName":"{node}","pad":"{pad}"}},"rev":{rev}}}').encode()


def fill_node(store: LogStore, node: str, *, pods: int = 256, size: int = POD_BYTES) -> None:
    """A node of `pods` pods of about `size` bytes each."""
    store.append([Change(node, "put", "default", f"app{i:04d}", big_manifest(node, f"app{i:04d}", size))
                  for i in range(pods)])


def edgenode_yaml(name: str, namespace: str, pods: dict[str, str]) -> str:
    """An EdgeNode manifest (JSON, which kubectl reads as YAML) with pods name -> image."""
    return json.dumps({
        "apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pods": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": p},
                           "spec": {"containers": [{"name": "main", "image": image}]}}
                          for p, image in pods.items()]},
    })


def apply(cp: Any, name: str, namespace: str, pods: dict[str, str]) -> None:
    """kubectl apply an EdgeNode."""
    cp.kubectl("apply", "-f", "-", input=edgenode_yaml(name, namespace, pods))


def edgenode_status(cp: Any, ns: str, name: str) -> dict:
    """The status of an EdgeNode as kubectl shows it ({} before the manager writes one)."""
    return json.loads(cp.kubectl("get", "edgenode", name, "-n", ns, "-o", "json").stdout).get("status") or {}


def mirror_pod(cp: Any, ns: str, name: str, node: str, phase: str) -> None:
    """A mirror pod of `node` in `phase`, created and its status patched as kubelet would."""
    cp.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"app.kubernetes.io/managed-by": "k8s-edge", "edge.k8s.io/node": node}},
        "spec": {"containers": [{"name": "main", "image": "nginx"}], "automountServiceAccountToken": False},
    }))
    cp.kubectl("patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": {"phase": phase}}))


def spec_pod(name: str, image: str = "nginx", **spec: Any) -> dict:
    """A pod as it stands in an EdgeNode's spec.pods (no namespace: the manager sets it)."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": image}], **spec}}


def sa_kubeconfig(cp: Any, path: Path, *, account: str = "edge-manager", namespace: str = "k8s-edge") -> Path:
    """A kubeconfig holding only a token of a ServiceAccount (crd/rbac.yaml's edge-manager by default)."""
    token = cp.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    ca = cp.kubectl("config", "view", "--raw", "--minify", "-o",
                    "jsonpath={.clusters[0].cluster.certificate-authority-data}").stdout.strip()
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {"server": cp.server, "certificate-authority-data": ca}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }))
    return path
