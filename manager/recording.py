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
  is deleted) and reported in the EdgeNode's status (manager.validating: shape, kubelet's
  rules, static-pod rules, then the optional PodCheck). Each pod is judged on its own; an
  EdgeNode whose own shape is wrong (`spec` not an object, `spec.pods` not an array) sends
  nothing and shows one rejection named `(EdgeNode)`; a pod without a usable name is named
  by its index (`spec.pods[3]`), as is a second pod of the same name.
- An unexpected exception while handling one object is logged, counted (`on_error`) and
  retried for that object alone (a StoreFullError is not one object's: it propagates, and
  manager.intake stops recording until a relist succeeds) with exponential backoff (manager.retrying); the others
  are handled as usual. During a relist, an object that raises keeps its last recorded pods
  (its view entries are neither diffed nor deleted) until a retry or a newer event succeeds:
  a bug triggered by one object must not empty that node.
- A `pod_check` (manager.admitting: Pod Security and tenancy of the EdgeNode's namespace) may
  refuse more pods, with the same effect. Its verdict depends on the namespace, not only on the
  object, so the recorder keeps the last seen object of each EdgeNode and `reevaluate(namespace)`
  renders them again when a namespace's labels change. Memory: the parsed objects of every
  EdgeNode, which the watch has parsed anyway. Relisting the namespace instead would cost no
  memory but race the EdgeNode watch: a list newer than an event still in the watch stream
  would be recorded first and then regress to the older event's spec.
- Every handler (listed, changed, deleted, reevaluate, retry_due) runs under one re-entrant
  lock, status callbacks included, so a re-evaluation's verdict is never overtaken by an older one.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from loguru import logger

from eventlog import Appended, Change, Event, LogStore, PodEntry, PodKey, Source, StoreFullError, canonical_manifest
from manager.validating import (
    EDGENODE_SELF,
    MAX_MANIFEST_BYTES,
    PodCheck,
    edgenode_problem,
    known_fields,
    pod_name_of,
    pod_problem,
)
from manager.retrying import RetryOp, RetryQueue

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "k8s-edge"
NODE_LABEL = "edge.k8s.io/node"

EdgeNodeKey = tuple[str, str]  # (namespace, node): one EdgeNode object
View = dict[str, dict[PodKey, PodEntry]]  # node -> (namespace, name) -> entry, as LogStore.all_pods()

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


def render_pod(pod: Mapping[str, Any], *, namespace: str, node: str) -> bytes:
    """The canonical manifest the agent writes for this (admitted) pod (see the module docstring)."""
    out = known_fields({k: v for k, v in pod.items() if k != "status"})
    meta = dict(out.get("metadata") or {})
    meta["namespace"] = namespace
    meta["labels"] = {**(meta.get("labels") or {}), MANAGED_BY_LABEL: MANAGED_BY_VALUE, NODE_LABEL: node}
    out["metadata"] = meta
    return canonical_manifest(out)


def source_of(obj: Mapping[str, Any]) -> Source:
    """The eventlog Source of an EdgeNode object."""
    meta = obj.get("metadata") or {}
    uid, rv, gen = meta.get("uid"), meta.get("resourceVersion"), meta.get("generation")
    return Source(uid=uid if isinstance(uid, str) else "", resource_version=rv if isinstance(rv, str) else "",
                  generation=gen if isinstance(gen, int) and not isinstance(gen, bool) and gen >= 0 else 0)


def key_of(obj: Any) -> EdgeNodeKey | None:
    """The EdgeNode an object is, if it says so in strings (the API always does)."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        return None
    ns = meta.get("namespace")
    return (ns if isinstance(ns, str) and ns else "default", meta["name"])


def _admit(pod: Any, namespace: str, node: str) -> tuple[str | None, bytes]:
    """(refusal, b"") or (None, manifest) for one pod, policy aside."""
    problem = pod_problem(pod, namespace=namespace, node=node)
    if problem is not None:
        return problem, b""
    try:
        manifest = render_pod(pod, namespace=namespace, node=node)
    except (TypeError, ValueError) as exc:  # not encodable as JSON (orjson's errors are TypeErrors)
        return f"cannot be encoded: {exc}", b""
    if len(manifest) > MAX_MANIFEST_BYTES:
        return f"the manifest is {len(manifest)} bytes, more than the {MAX_MANIFEST_BYTES} allowed", b""
    return None, manifest


_CACHED_POD_BYTES = 16 * 1024  # 4096 entries of at most twice this: under 150 MiB in the worst case


@functools.lru_cache(maxsize=4096)
def _admit_cached(raw: bytes, namespace: str, node: str) -> tuple[str | None, bytes]:
    return _admit(orjson.loads(raw), namespace, node)


def _admitted(pod: Any, *, namespace: str, node: str) -> tuple[str | None, bytes]:
    """_admit, remembered by the pod's content: a change to one pod of an EdgeNode re-checks only that pod."""
    try:
        raw = orjson.dumps(pod, option=orjson.OPT_SORT_KEYS)
    except (TypeError, ValueError):  # not JSON-encodable as it stands: judged uncached
        return _admit(pod, namespace, node)
    if len(raw) > _CACHED_POD_BYTES:  # the cache stays small: big pods are rare and judged each time
        return _admit(pod, namespace, node)
    return _admit_cached(raw, namespace, node)


def desired_node(obj: Mapping[str, Any], *, pod_check: PodCheck | None = None) -> DesiredNode:
    """Render one EdgeNode object into its accepted pods and rejections, each pod judged on its own."""
    key = key_of(obj)
    if key is None:
        raise ValueError("the object has no metadata.name string")
    namespace, node = key
    status = obj.get("status")
    base = {"namespace": namespace, "node": node, "source": source_of(obj),
            "status": status if isinstance(status, Mapping) else {}}
    if problem := edgenode_problem(obj):
        return DesiredNode(**base, rejected=(Rejection(name=EDGENODE_SELF, reason=problem),))
    pods: dict[PodKey, bytes] = {}
    rejected: list[Rejection] = []
    taken: set[str] = set()  # names accepted or rejected: status lists rejections by name
    for i, pod in enumerate((obj.get("spec") or {}).get("pods") or []):
        name = pod_name_of(pod)
        label = name if name and name not in taken else f"spec.pods[{i}]"
        if name in taken:
            problem, manifest = f"metadata.name: Duplicate value: {name!r} (the first pod of that name is used)", b""
        else:
            problem, manifest = _admitted(pod, namespace=namespace, node=node)
            if problem is None and pod_check is not None:
                problem = pod_check(pod, namespace=namespace, node=node)
        taken.add(label)
        if problem is not None:
            rejected.append(Rejection(name=label, reason=problem))
            continue
        pods[(namespace, name)] = manifest
    return DesiredNode(**base, pods=pods, rejected=tuple(rejected))


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


def diff_listed(listed: Iterable[DesiredNode], view: View, *, namespace: str | None = None,
                keep: Iterable[EdgeNodeKey] = ()) -> list[Change]:
    """Changes that make the whole view equal a full list (deletions of vanished EdgeNodes included).

    With `namespace`, only view entries of that namespace are in scope (--namespace). View
    entries of the EdgeNodes in `keep` (listed, but failed to render) are left as they are.
    """
    by_key = {d.key: d for d in listed}
    kept = set(keep)
    changes: list[Change] = []
    for key in sorted(by_key):
        changes += diff_node(by_key[key], view)
    for node in sorted(view):
        owners = {ns for ns, _ in view[node]}
        for ns in sorted(owners):
            if (ns, node) in by_key or (ns, node) in kept or (namespace is not None and ns != namespace):
                continue
            changes += deletions(ns, node, view, source=Source())
    return changes


class FencedError(Exception):
    """The manager lost its Lease (--leader-elect): it must not append, whatever the watch says."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Recorded:
    """What one recorder step did: new events and the nodes they touched."""

    events: Sequence[Event]  # an eventlog.Appended: Events are built only if someone reads them
    nodes: frozenset[str]


class Recorder:
    """Appends EdgeNode changes to the LogStore and tells the sync service which nodes moved.

    Called from the watch thread, and from the intake's retry thread (`retry_due`): one
    handling lock orders them, so a retry never overtakes a newer event of its object.
    `close()` from the shutdown path waits for an in-flight append.
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
        on_rejected: Callable[[DesiredNode], None] | None = None,
        on_error: Callable[[EdgeNodeKey | None, Exception], None] | None = None,
        pod_check: PodCheck | None = None,
        retries: RetryQueue | None = None,
        fenced: Callable[[], bool] | None = None,
    ) -> None:
        self._store = store
        self._notify = notify
        self._namespace = namespace
        self._on_desired = on_desired
        self._on_deleted = on_deleted
        self._on_listed = on_listed
        self._on_appended = on_appended
        self._on_rejected = on_rejected
        self._on_error = on_error
        self._pod_check = pod_check
        self._fenced = fenced if fenced is not None else (lambda: False)
        self._objects: dict[EdgeNodeKey, Mapping[str, Any]] = {}  # last seen, for reevaluate()
        self.retries = retries if retries is not None else RetryQueue()
        self._lock = threading.Lock()
        self._handling = threading.RLock()
        self._closed = False
        self._rejections: dict[EdgeNodeKey, tuple[Rejection, ...]] = {}  # last logged, to warn once per change

    def listed(self, objects: Iterable[Mapping[str, Any]]) -> Recorded:
        """A full list: append exactly the differences from the view, deletions included."""
        with self._handling:
            desired: list[DesiredNode] = []
            keep: set[EdgeNodeKey] = set()
            objects = list(objects)
            self._objects = {key: o for o in objects if (key := key_of(o)) is not None}
            for o in objects:
                key = key_of(o)
                try:
                    desired.append(desired_node(o, pod_check=self._pod_check))
                except Exception as exc:  # this object's problem only: keep its last recorded pods
                    self._failed(key, "changed", o, exc)
                    if key is not None:
                        keep.add(key)
            for d in desired:
                self._log_rejections(d)
            for key in self.retries.pending() - keep:  # handled now, or gone from the list
                self.retries.forget(key)
            with self._lock:
                if self._closed:
                    return Recorded(events=(), nodes=frozenset())
                changes = diff_listed(desired, self._store.all_pods(), namespace=self._namespace, keep=keep)
                rec = self._append(changes)
            if self._on_listed:
                self._on_listed(desired)
            return rec

    def changed(self, obj: Mapping[str, Any]) -> Recorded:
        """An EdgeNode was added or modified: diff its pods against its part of the view."""
        with self._handling:
            key = key_of(obj)
            if key is not None:
                self._objects[key] = obj
            try:
                d = desired_node(obj, pod_check=self._pod_check)
                self._log_rejections(d)
                with self._lock:
                    if self._closed:
                        return Recorded(events=(), nodes=frozenset())
                    rec = self._append(diff_node(d, {d.node: self._store.pods(d.node)}))
            except (StoreFullError, FencedError):  # the store's or the Lease's problem, not this object's
                raise
            except Exception as exc:
                self._failed(key, "changed", obj, exc)
                return Recorded(events=(), nodes=frozenset())
            self.retries.forget(d.key)
            if self._on_desired:
                self._on_desired(d)
            return rec

    def reevaluate(self, namespace: str) -> Recorded:
        """The namespace's policy changed: render its EdgeNodes again (newly refused pods deleted, allowed sent)."""
        with self._handling:
            events: list[Event] = []
            nodes: set[str] = set()
            for key in sorted(k for k in self._objects if k[0] == namespace):
                rec = self.changed(self._objects[key])
                events.extend(rec.events)
                nodes |= rec.nodes
            return Recorded(events=events, nodes=frozenset(nodes))

    def deleted(self, obj: Mapping[str, Any]) -> Recorded:
        """An EdgeNode was deleted: a delete event for each of its pods."""
        with self._handling:
            key = key_of(obj)
            try:
                if key is None:
                    raise ValueError("the object has no metadata.name string")
                namespace, node = key
                with self._lock:
                    if self._closed:
                        return Recorded(events=(), nodes=frozenset())
                    rec = self._append(deletions(namespace, node, {node: self._store.pods(node)},
                                                 source=source_of(obj)))
            except (StoreFullError, FencedError):  # the store's or the Lease's problem, not this object's
                raise
            except Exception as exc:
                self._failed(key, "deleted", obj, exc)
                return Recorded(events=(), nodes=frozenset())
            self.retries.forget(key)
            self._objects.pop(key, None)
            self._rejections.pop(key, None)
            if self._on_deleted:
                self._on_deleted(key)
            return rec

    def retry_due(self) -> int:
        """Handle again every failed object whose backoff has passed; return how many were tried."""
        with self._handling:  # taken and handled under the lock: no newer event slips in between
            due = self.retries.take_due()
            full: StoreFullError | None = None
            for r in due:
                logger.info("retrying EdgeNode {}/{} (attempt {})", *r.key, r.failures + 1)
                try:
                    (self.deleted if r.op == "deleted" else self.changed)(r.obj)
                except StoreFullError as exc:  # kept for a later try; the caller hears of the full store
                    self.retries.failed(r.key, r.op, r.obj)
                    full = exc
            if full is not None:
                raise full
            return len(due)

    def close(self) -> None:
        """Refuse further appends once any in-flight one has committed (before the store closes)."""
        with self._lock:
            self._closed = True

    def _append(self, changes: list[Change]) -> Recorded:
        if not changes:
            return Recorded(events=(), nodes=frozenset())
        if self._fenced():  # checked last, under the lock close() takes: the Lease is ours at this moment
            raise FencedError("not appending: this manager's Lease expired (another manager may lead now)")
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

    def _failed(self, key: EdgeNodeKey | None, op: RetryOp, obj: Any, exc: Exception) -> None:
        """Log and count an unexpected failure of one object; retry it alone with backoff."""
        if key is None:
            logger.opt(exception=exc).error("an EdgeNode without a usable name could not be handled; skipped")
        else:
            delay = self.retries.failed(key, op, obj)
            logger.opt(exception=exc).error("EdgeNode {}/{} could not be handled ({}: {}); retrying in {:.1f}s",
                                            key[0], key[1], type(exc).__name__,
                                            " ".join(str(exc).split())[:200], delay)
        if self._on_error:
            self._on_error(key, exc)

    def _log_rejections(self, d: DesiredNode) -> None:
        """Warn about rejected pods when they change, not on every event of the EdgeNode."""
        if self._rejections.get(d.key, ()) == d.rejected:
            return
        self._rejections[d.key] = d.rejected
        for r in d.rejected:
            logger.warning("EdgeNode {}/{}: pod {!r} rejected: {}", d.namespace, d.node, r.name, r.reason)
        if d.rejected and self._on_rejected:
            self._on_rejected(d)
