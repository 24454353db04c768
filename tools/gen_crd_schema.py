"""Generate the typed pod schema of the EdgeNode CRD from the core/v1 OpenAPI of the pinned Kubernetes.

Reads `api/openapi-spec/v3/api__v1_openapi.json` of the k8s.io/kubernetes module pinned in
tools/kube/go.mod (from the Go module cache the control-plane build fills) and writes:

- `manager/pod_schema.json`: every definition the Pod reaches, types only (no descriptions),
  refs kept. The manager validates each pod against it before using any field.
- `crd/edgenode.yaml`, between the `BEGIN/END generated pod spec` markers: the structural
  schema of `spec.pods[].spec`, inlined from the same definitions down to `CRD_DEPTH` levels
  below the PodSpec; deeper objects keep their type and preserve unknown fields (the manager
  still validates them fully). Quantity and IntOrString become int-or-string, as
  controller-gen renders them. The cut keeps the CRD small enough for client-side
  `kubectl apply` (its last-applied annotation must stay under 256 KiB).

`--check` exits 1 when either file differs from what would be generated (a stale CRD).
Usage: python -m tools.gen_crd_schema [--openapi FILE] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CRD_FILE = REPO / "crd" / "edgenode.yaml"
POD_SCHEMA_FILE = REPO / "manager" / "pod_schema.json"
GO_MOD = REPO / "tools" / "kube" / "go.mod"
ROOT = "io.k8s.api.core.v1.Pod"
POD_SPEC = "io.k8s.api.core.v1.PodSpec"
CRD_DEPTH = 8  # object levels typed below the PodSpec: 8 reaches every leaf of the v1.35 PodSpec (56 KB as JSON)
BEGIN = "# BEGIN generated pod spec (tools/gen_crd_schema.py; do not edit)"
END = "# END generated pod spec"
_INT_OR_STRING = {"io.k8s.apimachinery.pkg.util.intstr.IntOrString", "io.k8s.apimachinery.pkg.api.resource.Quantity"}
_KEEP = ("type", "format", "enum", "required", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
         "x-kubernetes-map-type")


class GenerateError(Exception):
    """The OpenAPI document cannot be found or read."""


def kubernetes_version() -> str:
    """The k8s.io/kubernetes version the project builds (tools/kube/go.mod)."""
    m = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", GO_MOD.read_text(), re.M)
    if not m:
        raise GenerateError(f"{GO_MOD}: no k8s.io/kubernetes requirement")
    return m.group(1)


def default_openapi() -> Path:
    """api__v1_openapi.json of the pinned k8s.io/kubernetes in the Go module cache."""
    cache = os.environ.get("GOMODCACHE")
    if not cache:
        try:
            cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True,
                                   check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError) as exc:
            raise GenerateError(f"cannot ask go for GOMODCACHE ({exc}); pass --openapi") from None
    path = Path(cache) / f"k8s.io/kubernetes@{kubernetes_version()}" / "api/openapi-spec/v3/api__v1_openapi.json"
    if not path.is_file():
        raise GenerateError(f"{path}: not found (build the control plane first: scripts/controlplane build)")
    return path


def _ref_name(node: dict[str, Any]) -> str | None:
    if "$ref" in node:
        return node["$ref"].rsplit("/", 1)[-1]
    for sub in node.get("allOf") or ():
        if "$ref" in sub:
            return sub["$ref"].rsplit("/", 1)[-1]
    return None


def _slim(node: dict[str, Any], reached: set[str], schemas: dict[str, Any]) -> dict[str, Any]:
    """A schema node with types only; refs kept as {"$ref": name} and followed into `reached`."""
    ref = _ref_name(node)
    if ref is not None:
        if ref not in reached:
            reached.add(ref)
            _slim(schemas[ref], reached, schemas)  # reach its refs too
        return {"$ref": ref}
    if "oneOf" in node:  # Quantity (string|number), IntOrString (integer|string)
        return {"oneOf": sorted((_slim(s, reached, schemas) for s in node["oneOf"]), key=json.dumps)}
    out = {k: node[k] for k in _KEEP if k in node}
    if "properties" in node:
        out["properties"] = {k: _slim(v, reached, schemas) for k, v in sorted(node["properties"].items())}
    if "items" in node:
        out["items"] = _slim(node["items"], reached, schemas)
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _slim(node["additionalProperties"], reached, schemas)
    return out


def pod_definitions(openapi: dict[str, Any]) -> dict[str, Any]:
    """{"root": Pod, "definitions": {name: slim schema}} for every definition the Pod reaches."""
    schemas = openapi["components"]["schemas"]
    reached = {ROOT}
    _slim(schemas[ROOT], reached, schemas)
    return {"root": ROOT, "definitions": {name: _slim(schemas[name], set(reached), schemas) for name in sorted(reached)}}


def _structural(node: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any]:
    """A structural CRD schema node: types always, properties down to `depth` object levels."""
    if "$ref" in node:
        if node["$ref"] in _INT_OR_STRING:
            return {"x-kubernetes-int-or-string": True}
        return _structural(defs[node["$ref"]], defs, depth)
    if "oneOf" in node:
        return {"x-kubernetes-int-or-string": True}
    out: dict[str, Any] = {k: node[k] for k in ("type", "format", "enum") if k in node}
    if out.get("format") not in (None, "int32", "int64", "double", "byte", "date-time"):
        del out["format"]
    kind = node.get("type")
    if kind == "array":
        out["items"] = _structural(node["items"], defs, depth)
        for k in ("x-kubernetes-list-type", "x-kubernetes-list-map-keys"):
            if k in node and depth >= 0:
                out[k] = node[k]
        if out.get("x-kubernetes-list-type") == "map":  # map keys must be required (or defaulted) there
            keys = out["x-kubernetes-list-map-keys"]
            if not set(keys) <= set(out["items"].get("required", ())):
                del out["x-kubernetes-list-type"], out["x-kubernetes-list-map-keys"]
    elif kind == "object" and "properties" in node:
        if depth <= 0:
            out["x-kubernetes-preserve-unknown-fields"] = True
        else:
            out["properties"] = {k: _structural(v, defs, depth - 1) for k, v in node["properties"].items()}
            if node.get("required"):
                out["required"] = list(node["required"])
    elif kind == "object" and "additionalProperties" in node:
        out["additionalProperties"] = _structural(node["additionalProperties"], defs, depth)
    elif kind == "object":
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def crd_pod_spec(defs: dict[str, Any]) -> dict[str, Any]:
    """The structural schema of spec.pods[].spec."""
    return _structural(defs["definitions"][POD_SPEC], defs["definitions"], CRD_DEPTH + 1)


def _yaml_block(schema: dict[str, Any], indent: int) -> str:
    import yaml

    text = yaml.safe_dump(schema, sort_keys=True, default_flow_style=False, width=1000)
    return "".join(" " * indent + line + "\n" for line in text.splitlines())


def render_crd(crd_text: str, defs: dict[str, Any]) -> str:
    """crd_text with the generated block between the markers replaced."""
    lines = crd_text.splitlines(keepends=True)
    try:
        begin = next(i for i, ln in enumerate(lines) if ln.strip() == BEGIN)
        end = next(i for i, ln in enumerate(lines) if ln.strip() == END)
    except StopIteration:
        raise GenerateError(f"{CRD_FILE}: the markers {BEGIN!r} / {END!r} are missing") from None
    indent = len(lines[begin]) - len(lines[begin].lstrip())
    return "".join(lines[:begin + 1]) + _yaml_block(crd_pod_spec(defs), indent) + "".join(lines[end:])


def render_pod_schema(defs: dict[str, Any]) -> str:
    """manager/pod_schema.json's text: one definition a line, so diffs stay readable."""
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True, separators=(',', ':'))}"
                      for k, v in defs["definitions"].items())
    return f'{{"root": {json.dumps(defs["root"])}, "definitions": {{\n{body}\n}}}}\n'


def generate(openapi_path: Path) -> dict[Path, str]:
    """The generated files' contents, by path."""
    try:
        openapi = json.loads(openapi_path.read_text())
    except (OSError, ValueError) as exc:
        raise GenerateError(f"{openapi_path}: {exc}") from None
    defs = pod_definitions(openapi)
    return {POD_SCHEMA_FILE: render_pod_schema(defs), CRD_FILE: render_crd(CRD_FILE.read_text(), defs)}


def main(argv: list[str] | None = None) -> int:
    """Write (or --check) the generated files."""
    ap = argparse.ArgumentParser(prog="gen_crd_schema", description=__doc__.splitlines()[0])
    ap.add_argument("--openapi", type=Path, help="api__v1_openapi.json (default: the pinned module's, from GOMODCACHE)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    args = ap.parse_args(argv)
    try:
        files = generate(args.openapi or default_openapi())
    except GenerateError as exc:
        print(f"gen_crd_schema: {exc}", file=sys.stderr)
        return 2
    stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"gen_crd_schema: {p.relative_to(REPO)} is stale; run python -m tools.gen_crd_schema", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(files[p])
        print(f"wrote {p.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
