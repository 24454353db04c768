"""What kubelet would refuse in a static-pod manifest: the test kit's own checker.

Derived from the core/v1 Pod schema of the pinned Kubernetes, read straight from the
OpenAPI document in the Go module cache (not from the manager's generated copy, so the
manager's validator is checked against an independent walk), plus the rules of kubelet's
pod validation the tests rely on: metadata.name an RFC 1123 subdomain, at least one
container, container names RFC 1123 labels and unique, images non-empty strings, valid
label keys and values, no nulls, integers within their format's range.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from tools.gen_crd_schema import default_openapi

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@cache
def _schemas() -> dict[str, Any]:
    return json.loads(default_openapi().read_text())["components"]["schemas"]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while True:
        ref = node.get("$ref") or next((s["$ref"] for s in node.get("allOf", ()) if "$ref" in s), None)
        if ref is None:
            return node
        node = _schemas()[ref.rsplit("/", 1)[-1]]


def _typed(value: Any, kind: str) -> bool:
    return {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]


def _shape(value: Any, node: dict[str, Any], path: str) -> str | None:
    node = _resolve(node)
    if value is None:
        return f"{path}: null"
    if "oneOf" in node:
        ok = any(_typed(value, s["type"]) for s in node["oneOf"])
        return None if ok else f"{path}: not {node['oneOf']}"
    kind = node.get("type")
    if kind is None:
        return None
    if not _typed(value, kind):
        return f"{path}: not a {kind}"
    if kind == "integer":
        bound = 2 ** 31 if node.get("format") == "int32" else 2 ** 63
        if not -bound <= value < bound:
            return f"{path}: out of range"
    if kind == "array":
        return next((p for i, v in enumerate(value) if (p := _shape(v, node["items"], f"{path}[{i}]"))), None)
    if kind == "object":
        for key in node.get("required", ()):
            if key not in value:
                return f"{path}.{key}: required"
        props = node.get("properties")
        if props is not None:
            return next((p for k, v in value.items() if k in props and (p := _shape(v, props[k], f"{path}.{k}"))),
                        None)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            return next((p for k, v in value.items() if (p := _shape(v, extra, f"{path}.{k}"))), None)
    return None


def kubelet_refusal(manifest: bytes) -> str | None:
    """Why kubelet would refuse this static-pod manifest (None: it would accept it)."""
    try:
        pod = json.loads(manifest)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(pod, dict) or pod.get("apiVersion") != "v1" or pod.get("kind") != "Pod":
        return "not a v1 Pod"
    if problem := _shape(pod, _schemas()["io.k8s.api.core.v1.Pod"], "pod"):
        return problem
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _SUBDOMAIN.match(name):
        return f"metadata.name {name!r}"
    for key, value in (meta.get("labels") or {}).items():
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            return f"label {key}={value!r}"
    containers = spec.get("containers") or []
    if not containers:
        return "no containers"
    names = [c.get("name") for c in [*containers, *(spec.get("initContainers") or [])]]
    if len(set(names)) != len(names):
        return "duplicate container names"
    for c in [*containers, *(spec.get("initContainers") or [])]:
        if not isinstance(c.get("name"), str) or len(c["name"]) > 63 or not _LABEL.match(c["name"]):
            return f"container name {c.get('name')!r}"
        if not isinstance(c.get("image"), str) or not c["image"] or c["image"] != c["image"].strip():
            return f"container {c['name']!r} image {c.get('image')!r}"
    for v in spec.get("volumes") or []:
        if not isinstance(v.get("name"), str) or len(v["name"]) > 63 or not _LABEL.match(v["name"]):
            return f"volume name {v.get('name')!r}"
    return None
