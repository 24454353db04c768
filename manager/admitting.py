"""What a namespace admits onto the edge: its Pod Security level and the edge nodes it may use.

Owns the per-namespace rules the recorder's `pod_check` applies to each pod of an EdgeNode:
- Pod Security: the namespace's `pod-security.kubernetes.io/enforce` (and `enforce-version`)
  labels, read as PodSecurity admission reads them (manager.podsecurity); an unlabelled
  namespace gets the manager's default (`--default-pod-security-level`, baseline or restricted).
- Tenancy: the namespace's `edge.k8s.io/allowed-nodes` annotation, a comma-separated list of
  edge node names (`*`: any) the namespace may place pods on; absent: any node. The
  ValidatingAdmissionPolicy in crd/tenancy.yaml applies the same rule when an EdgeNode is
  written; the manager applies it to objects that already exist, and again when the
  annotation changes.
Fed Namespace objects (dicts) by the daemon's namespace watch; called from the EdgeNode watch
thread, so its state is swapped whole under a lock. Must not import grpc or the kubernetes client.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import xxhash

from manager.podsecurity import Level, Policy, policy_of, refusal

ALLOWED_NODES_ANNOTATION = "edge.k8s.io/allowed-nodes"
VERDICT_CACHE_SIZE = 16384
"""Pod Security verdicts remembered by (policy, pod digest): a relist or an EdgeNode change re-judges
mostly unchanged pods, and a verdict costs ~60 us a pod against ~5 us to digest it (~200 bytes an entry)."""


@dataclass(frozen=True, slots=True)
class NamespaceRules:
    """What one namespace admits: its enforce policy and the nodes it may use (None: any)."""

    policy: Policy
    allowed_nodes: frozenset[str] | None = None


def allowed_nodes_of(annotations: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The allowed-nodes annotation as a set of names (None: no restriction)."""
    value = (annotations or {}).get(ALLOWED_NODES_ANNOTATION)
    if not isinstance(value, str):
        return None
    return frozenset(n.strip() for n in value.split(",") if n.strip())


def node_allowed(allowed: frozenset[str] | None, node: str) -> bool:
    """Whether a namespace with this allow-list may place pods on `node` (same rule as the CEL policy)."""
    return allowed is None or node in allowed or "*" in allowed


def tenancy_refusal(namespace: str, node: str) -> str:
    """The refusal of a pod on a node its namespace may not use (the admission policy's message too)."""
    return (f'namespace "{namespace}" may not place pods on edge node "{node}": '
            f"not in its {ALLOWED_NODES_ANNOTATION} annotation")


def rules_of(namespace: Mapping[str, Any], *, default: Policy) -> NamespaceRules:
    """The rules a Namespace object's labels and annotations set."""
    meta = namespace.get("metadata") or {}
    return NamespaceRules(policy_of(meta.get("labels"), default=default),
                          allowed_nodes_of(meta.get("annotations")))


class NamespaceAdmission:
    """The recorder's PodCheck: tenancy, then Pod Security, by the EdgeNode's namespace."""

    def __init__(self, *, default_policy: Policy = Policy(Level.BASELINE)) -> None:
        if default_policy.level is Level.PRIVILEGED:
            raise ValueError("the default Pod Security level must be baseline or restricted")
        self.default_policy = default_policy
        self._rules: dict[str, NamespaceRules] = {}
        self._lock = threading.Lock()
        self._verdicts: dict[tuple[Policy, bytes], str | None] = {}  # insertion order: oldest evicted first

    def rules(self, namespace: str) -> NamespaceRules:
        """The rules of a namespace (the defaults for one not seen yet)."""
        with self._lock:
            return self._rules.get(namespace) or NamespaceRules(self.default_policy)

    def __call__(self, pod: Mapping[str, Any], *, namespace: str, node: str) -> str | None:
        """Why this pod of an EdgeNode in `namespace` for `node` must not run (None: it may)."""
        rules = self.rules(namespace)
        if not node_allowed(rules.allowed_nodes, node):
            return tenancy_refusal(namespace, node)
        try:
            key = (rules.policy, xxhash.xxh3_128_digest(orjson.dumps(pod, option=orjson.OPT_SORT_KEYS)))
        except TypeError:  # not JSON (non-str keys, huge ints): judge without the cache
            return refusal(pod, rules.policy)
        with self._lock:
            if key in self._verdicts:
                return self._verdicts[key]
        verdict = refusal(pod, rules.policy)
        with self._lock:
            if len(self._verdicts) >= VERDICT_CACHE_SIZE:
                del self._verdicts[next(iter(self._verdicts))]
            self._verdicts[key] = verdict
        return verdict

    def listed(self, namespaces: Iterable[Mapping[str, Any]]) -> set[str]:
        """A full list of namespaces: returns the names whose rules changed (gone ones included)."""
        new = {(ns.get("metadata") or {}).get("name") or "": rules_of(ns, default=self.default_policy)
               for ns in namespaces}
        with self._lock:
            old, self._rules = self._rules, new
        default = NamespaceRules(self.default_policy)
        return {n for n in old.keys() | new.keys() if old.get(n, default) != new.get(n, default)}

    def changed(self, namespace: Mapping[str, Any]) -> bool:
        """A namespace was added or modified: whether its rules changed."""
        name = (namespace.get("metadata") or {}).get("name") or ""
        new = rules_of(namespace, default=self.default_policy)
        with self._lock:
            old = self._rules.get(name, NamespaceRules(self.default_policy))
            self._rules[name] = new
        return old != new

    def deleted(self, namespace: Mapping[str, Any]) -> None:
        """A namespace is gone (its EdgeNodes go with it)."""
        with self._lock:
            self._rules.pop((namespace.get("metadata") or {}).get("name") or "", None)
