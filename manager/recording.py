"""The recorder: EdgeNode desired state to pod-level put/delete events in the LogStore.

Owns the translation of EdgeNode objects (plain dicts as the API returns them) into
eventlog Changes, the static-pod admission rules, and the diff against the log's view.
Must not import grpc or the kubernetes client: it is fed dicts by manager.watching.

Decisions:
- A pod's identity is (EdgeNode namespace, pod name) on node = EdgeNode name. EdgeNodes
  of the same name in several namespaces all place pods on that node; EdgeNode (ns, node)
  owns exactly the view entries of `node` whose namespace is `ns`.
- The manifest sent is canonical JSON (eventlog.canonical_manifest) of the pod with
  metadata.namespace set to the EdgeNode's namespace, `status` dropped (not desired state),
  and two labels added (overriding user values of the same keys):
  `app.kubernetes.io/managed-by: k8s-edge` and `edge.k8s.io/node: <node>`. Kubelet copies
  them to the mirror pod, so the status writer finds every mirror pod with ONE
  label-selected pod watch instead of a read per node.
- Pods kubelet cannot run as static pods are rejected (not sent; a previously sent version
  is deleted) and reported in the EdgeNode's status (see `static_pod_problem`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from eventlog import Appended, Change, Event, LogStore, PodEntry, PodKey, Source, canonical_manifest

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "k8s-edge"
NODE_LABEL = "edge.k8s.io/node"

EdgeNodeKey = tuple[str, str]  # (namespace, node): one EdgeNode object
View = dict[str, dict[PodKey, PodEntry]]  # node -> (namespace, name) -> entry, as LogStore.all_pods()

# Volume sources that name other API objects, which a static pod cannot use.
_FORBIDDEN_VOLUMES = {
    "secret": "a Secret volume",
    "configMap": "a ConfigMap volume",
    "projected": "a projected volume (service-account token, Secret, ConfigMap or downward API)",
    "persistentVolumeClaim": "a PersistentVolumeClaim volume",
    "ephemeral": "an ephemeral (PVC-backed) volume",
    "csi": "a CSI volume",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """A pod the manager refuses to send, and why (shown in the EdgeNode's status)."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredNode:
    """What one EdgeNode object asks for, rendered: pod key -> canonical manifest."""

    namespace: str
    node: str
    source: Source
    pods: dict[PodKey, bytes] = field(default_factory=dict)
    rejected: tuple[Rejection, ...] = ()
    status: Mapping[str, Any] = field(default_factory=dict)  # the status the object carried when seen

    @property
    def key(self) -> EdgeNodeKey:
        """The EdgeNode this is."""
        return (self.namespace, self.node)

    @property
    def pod_names(self) -> tuple[str, ...]:
        """Names of the accepted pods, in name order."""
        return tuple(sorted(name for _, name in self.pods))


def static_pod_problem(pod: Mapping[str, Any], *, namespace: str, node: str) -> str | None:
    """Why kubelet cannot run this pod as a static pod (None: it can)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return "pod has no spec"
    containers = spec.get("containers") or []
    if not containers:
        return "pod has no containers"
    pod_ns = meta.get("namespace")
    if pod_ns and pod_ns != namespace:
        return f"metadata.namespace {pod_ns!r} differs from the EdgeNode's namespace {namespace!r}"
    node_name = spec.get("nodeName")
    if node_name and node_name != node:
        return f"spec.nodeName {node_name!r} is another node than {node!r}"
    for sa_field in ("serviceAccountName", "serviceAccount"):
        sa = spec.get(sa_field)
        if sa:
            return f"spec.{sa_field} {sa!r}: static pods cannot use service accounts"
    if spec.get("imagePullSecrets"):
        return "spec.imagePullSecrets: static pods cannot reference Secrets"
    for vol in spec.get("volumes") or []:
        for src, what in _FORBIDDEN_VOLUMES.items():
            if src in vol:
                return f"volume {vol.get('name', '?')!r} is {what}, which static pods cannot use"
    for c in [*containers, *(spec.get("initContainers") or [])]:
        for ef in c.get("envFrom") or []:
            if "configMapRef" in ef or "secretRef" in ef:
                return f"container {c.get('name', '?')!r} takes envFrom a ConfigMap or Secret"
        for env in c.get("env") or []:
            vf = env.get("valueFrom") or {}
            if "configMapKeyRef" in vf or "secretKeyRef" in vf:
                return f"container {c.get('name', '?')!r} env {env.get('name', '?')!r} refers to a ConfigMap or Secret"
    return None


def render_pod(pod: Mapping[str, Any], *, namespace: str, node: str) -> bytes:
    """The canonical manifest the agent writes for this pod (see the module docstring)."""
    out = {k: v for k, v in pod.items() if k != "status"}
    meta = dict(out.get("metadata") or {})
    meta["namespace"] = namespace
    meta["labels"] = {**(meta.get("labels") or {}), MANAGED_BY_LABEL: MANAGED_BY_VALUE, NODE_LABEL: node}
    out["metadata"] = meta
    return canonical_manifest(out)


def source_of(obj: Mapping[str, Any]) -> Source:
    """The eventlog Source of an EdgeNode object."""
    meta = obj.get("metadata") or {}
    return Source(uid=meta.get("uid") or "", resource_version=meta.get("resourceVersion") or "",
                  generation=int(meta.get("generation") or 0))


def desired_node(obj: Mapping[str, Any]) -> DesiredNode:
    """Render one EdgeNode object into its accepted pods and rejections."""
    meta = obj.get("metadata") or {}
    namespace, node = meta.get("namespace") or "default", meta["name"]
    pods: dict[PodKey, bytes] = {}
    rejected: list[Rejection] = []
    for pod in (obj.get("spec") or {}).get("pods") or []:
        name = ((pod or {}).get("metadata") or {}).get("name")
        if not name:
            rejected.append(Rejection(name="", reason="pod has no metadata.name"))
            continue
        problem = static_pod_problem(pod, namespace=namespace, node=node)
        if problem:
            rejected.append(Rejection(name=name, reason=problem))
            continue
        pods[(namespace, name)] = render_pod(pod, namespace=namespace, node=node)
    return DesiredNode(namespace=namespace, node=node, source=source_of(obj), pods=pods,
                       rejected=tuple(rejected), status=obj.get("status") or {})


def diff_node(desired: DesiredNode, view: View) -> list[Change]:
    """Changes that make the view's entries owned by this EdgeNode equal its desired pods."""
    have = {k: e for k, e in view.get(desired.node, {}).items() if k[0] == desired.namespace}
    changes = [
        Change(desired.node, "put", ns, name, manifest, desired.source)
        for (ns, name), manifest in sorted(desired.pods.items())
        if (e := have.get((ns, name))) is None or e.manifest != manifest
    ]
    changes += [
        Change(desired.node, "delete", ns, name, None, desired.source)
        for (ns, name) in sorted(have) if (ns, name) not in desired.pods
    ]
    return changes


def deletions(namespace: str, node: str, view: View, *, source: Source) -> list[Change]:
    """Delete events for every pod EdgeNode (namespace, node) owns in the view."""
    return [Change(node, "delete", ns, name, None, source)
            for (ns, name) in sorted(view.get(node, {})) if ns == namespace]


def diff_listed(listed: Iterable[DesiredNode], view: View, *, namespace: str | None = None) -> list[Change]:
    """Changes that make the whole view equal a full list (deletions of vanished EdgeNodes included).

    With `namespace`, only view entries of that namespace are in scope (--namespace).
    """
    by_key = {d.key: d for d in listed}
    changes: list[Change] = []
    for key in sorted(by_key):
        changes += diff_node(by_key[key], view)
    for node in sorted(view):
        owners = {ns for ns, _ in view[node]}
        for ns in sorted(owners):
            if (ns, node) in by_key or (namespace is not None and ns != namespace):
                continue
            changes += deletions(ns, node, view, source=Source())
    return changes


@dataclass(frozen=True, slots=True, kw_only=True)
class Recorded:
    """What one recorder step did: new events and the nodes they touched."""

    events: Sequence[Event]  # an eventlog.Appended: Events are built only if someone reads them
    nodes: frozenset[str]


class Recorder:
    """Appends EdgeNode changes to the LogStore and tells the sync service which nodes moved.

    Called from the watch thread; `close()` from the shutdown path waits for an in-flight append.
    """

    def __init__(
        self,
        store: LogStore,
        *,
        notify: Callable[[Iterable[str]], None],
        namespace: str | None = None,
        on_desired: Callable[[DesiredNode], None] | None = None,
        on_deleted: Callable[[EdgeNodeKey], None] | None = None,
        on_listed: Callable[[list[DesiredNode]], None] | None = None,
        on_appended: Callable[[Appended], None] | None = None,
    ) -> None:
        self._store = store
        self._notify = notify
        self._namespace = namespace
        self._on_desired = on_desired
        self._on_deleted = on_deleted
        self._on_listed = on_listed
        self._on_appended = on_appended
        self._lock = threading.Lock()
        self._closed = False
        self._rejections: dict[EdgeNodeKey, tuple[Rejection, ...]] = {}  # last logged, to warn once per change

    def listed(self, objects: Iterable[Mapping[str, Any]]) -> Recorded:
        """A full list: append exactly the differences from the view, deletions included."""
        desired = [desired_node(o) for o in objects]
        for d in desired:
            self._log_rejections(d)
        with self._lock:
            if self._closed:
                return Recorded(events=(), nodes=frozenset())
            changes = diff_listed(desired, self._store.all_pods(), namespace=self._namespace)
            rec = self._append(changes)
        if self._on_listed:
            self._on_listed(desired)
        return rec

    def changed(self, obj: Mapping[str, Any]) -> Recorded:
        """An EdgeNode was added or modified: diff its pods against its part of the view."""
        d = desired_node(obj)
        self._log_rejections(d)
        with self._lock:
            if self._closed:
                return Recorded(events=(), nodes=frozenset())
            rec = self._append(diff_node(d, {d.node: self._store.pods(d.node)}))
        if self._on_desired:
            self._on_desired(d)
        return rec

    def deleted(self, obj: Mapping[str, Any]) -> Recorded:
        """An EdgeNode was deleted: a delete event for each of its pods."""
        meta = obj.get("metadata") or {}
        namespace, node = meta.get("namespace") or "default", meta["name"]
        with self._lock:
            if self._closed:
                return Recorded(events=(), nodes=frozenset())
            rec = self._append(deletions(namespace, node, {node: self._store.pods(node)}, source=source_of(obj)))
        self._rejections.pop((namespace, node), None)
        if self._on_deleted:
            self._on_deleted((namespace, node))
        return rec

    def close(self) -> None:
        """Refuse further appends once any in-flight one has committed (before the store closes)."""
        with self._lock:
            self._closed = True

    def _append(self, changes: list[Change]) -> Recorded:
        if not changes:
            return Recorded(events=(), nodes=frozenset())
        appended = self._store.append(changes)
        nodes = appended.nodes
        for offset, c in enumerate(appended.changes, appended.first_offset):
            logger.debug("recorded {} {} {}/{} at offset {}", c.node, c.op, c.namespace, c.name, offset)
        if appended:
            names = sorted(nodes)
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            # per change: DEBUG, like the line per event above (INFO is for state changes)
            logger.debug("recorded {} event(s) for node(s) {} (head offset {})", len(appended), shown,
                         appended.head_offset)
            if self._on_appended:
                self._on_appended(appended)
            self._notify(nodes)
        return Recorded(events=appended, nodes=nodes)

    def _log_rejections(self, d: DesiredNode) -> None:
        """Warn about rejected pods when they change, not on every event of the EdgeNode."""
        if self._rejections.get(d.key, ()) == d.rejected:
            return
        self._rejections[d.key] = d.rejected
        for r in d.rejected:
            logger.warning("EdgeNode {}/{}: pod {!r} rejected: {}", d.namespace, d.node, r.name, r.reason)
