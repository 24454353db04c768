"""EdgeNode changes made through the built kubectl: creates, updates (patches) and deletes.

Owns the test's model of which EdgeNodes exist, only to choose sensible next operations;
the checker never trusts it: it reads the desired state back from the API.
Every changed object counts as one operation, also when several go in one kubectl call.
`flowing(workload)` keeps changes coming from a thread while a test injects a fault.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

IMAGES = ("busybox:1.36", "busybox:1.37", "nginx:1.27", "nginx:1.28", "redis:7", "alpine:3.20")
POD_NAMES = ("web", "cache", "ticker", "db", "agent", "proxy", "log", "metrics")

Kubectl = Callable[..., Any]  # ControlPlane.kubectl(*args, check=True, input=None, timeout=60)

# Malformed pods the shipped (generated) CRD still admits, because only kubelet's validation
# or the static-pod rules refuse them: the manager must refuse each, alone. The e2e control
# plane keeps the real CRD; the type-malformed pods of issue 11, which it now refuses at the
# door, are covered with the old loose CRD in tests/manager/test_isolating_malformed_edgenodes.py.
# Policy-violating pods (a privileged container, host namespaces, a hostPath volume) are valid
# Pods that Pod Security refuses: the e2e namespaces are unlabelled, so the manager's default
# level, baseline, applies (README "Pod Security and tenancy on the edge").
MALFORMED_LABEL = "e2e.k8s-edge.io/malformed"  # the checker expects every pod with it refused
MALFORMED = ("container-name", "empty-image", "image-whitespace", "port-range", "secret-volume",
             "privileged", "host-network", "host-path")
MALFORMED_SHARE = 0.08  # of pod changes: a handful per CI run, without changing its length


def pod(name: str, image: str, *, revision: int = 0) -> dict:
    """A Pod kubelet can run as a static pod."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name, "revision": str(revision)}},
            "spec": {"containers": [{"name": "main", "image": image,
                                     "command": ["sh", "-c", f"echo {name} r{revision}; sleep 3600"]}]}}


def malformed_pod(name: str, kind: str, *, revision: int = 0) -> dict:
    """A pod the API stores but the manager must refuse (see MALFORMED), labelled as such."""
    p = pod(name, "busybox:1.36", revision=revision)
    p["metadata"]["labels"][MALFORMED_LABEL] = kind
    c = p["spec"]["containers"][0]
    if kind == "container-name":
        c["name"] = "Main_1"
    elif kind == "empty-image":
        c["image"] = ""
    elif kind == "port-range":
        c["ports"] = [{"containerPort": 70000}]
    elif kind == "image-whitespace":
        c["image"] = "busybox:1.36 "
    elif kind == "secret-volume":
        p["spec"]["volumes"] = [{"name": "creds", "secret": {"secretName": "creds"}}]
    elif kind == "privileged":
        c["securityContext"] = {"privileged": True}
    elif kind == "host-network":
        p["spec"]["hostNetwork"] = True
    elif kind == "host-path":
        p["spec"]["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
        c["volumeMounts"] = [{"name": "root", "mountPath": "/host"}]
    return p


def edgenode(namespace: str, node: str, pods: Sequence[dict]) -> dict:
    """An EdgeNode object."""
    return {"apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode",
            "metadata": {"namespace": namespace, "name": node}, "spec": {"pods": list(pods)}}


@dataclass
class Workload:
    """A seeded generator of EdgeNode changes over a few namespaces and nodes, applied with kubectl."""

    kubectl: Kubectl
    namespaces: Sequence[str]
    nodes: Sequence[str]
    rng: random.Random
    objects: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # (ns, node) -> pods
    operations: int = 0
    kubectl_calls: int = 0
    revision: int = 0
    verbose: bool = False  # print each batch (the randomised test's schedule)
    held: set[tuple[str, str]] = field(default_factory=set)  # left alone until released (see random_batch)
    malformed: int = 0  # pods made malformed (each must end up refused, see MALFORMED)

    # -- single operations --------------------------------------------------------------

    def put(self, namespace: str, node: str, pods: Sequence[dict]) -> None:
        """Create or replace one EdgeNode (kubectl apply)."""
        self.apply([edgenode(namespace, node, pods)])

    def delete(self, namespace: str, node: str) -> None:
        """Delete one EdgeNode."""
        self.delete_many([(namespace, node)])

    def patch_image(self, namespace: str, node: str, index: int, image: str) -> None:
        """A JSON patch of one pod's image (kubectl patch --type=json)."""
        p = [{"op": "replace", "path": f"/spec/pods/{index}/spec/containers/0/image", "value": image}]
        self._kubectl("patch", "edgenode", "-n", namespace, node, "--type=json", "-p", json.dumps(p))
        self.objects[(namespace, node)][index]["spec"]["containers"][0]["image"] = image
        self.operations += 1

    # -- batches ------------------------------------------------------------------------

    def apply(self, objs: Sequence[dict]) -> None:
        """Create or update several EdgeNodes in one kubectl call (server-side apply of a List)."""
        if not objs:
            return
        doc = {"apiVersion": "v1", "kind": "List", "items": list(objs)}
        self._kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=e2e", "-f", "-",
                      input=json.dumps(doc))
        for o in objs:
            self.objects[(o["metadata"]["namespace"], o["metadata"]["name"])] = o["spec"]["pods"]
        self.operations += len(objs)

    def delete_many(self, keys: Sequence[tuple[str, str]]) -> None:
        """Delete several EdgeNodes, one kubectl call per namespace."""
        by_ns: dict[str, list[str]] = {}
        for ns, node in keys:
            by_ns.setdefault(ns, []).append(node)
        for ns, nodes in sorted(by_ns.items()):
            self._kubectl("delete", "edgenode", "-n", ns, "--ignore-not-found", "--wait=false", *nodes)
        for k in keys:
            self.objects.pop(k, None)
        self.operations += len(keys)

    def random_batch(self, size: int, *, min_deletes: int = 0) -> int:
        """`size` random creates, updates and deletes (distinct objects), in at most three kubectl calls.

        `min_deletes`: delete at least that many existing EdgeNodes (a fault that blinds the
        manager must see deletions: they are the changes a relist has to infer).
        """
        puts: dict[tuple[str, str], dict] = {}
        candidates = sorted(set(self.objects) - self.held)
        deletes: list[tuple[str, str]] = self.rng.sample(candidates, min(min_deletes, len(candidates)))
        # a deletion the manager must infer stays deleted until released: re-creating the EdgeNode
        # would let the watch repair what the relist should have (and hide a relist bug)
        self.held.update(deletes)
        for _ in range(size):
            key = (self.rng.choice(self.namespaces), self.rng.choice(self.nodes))
            if key in puts or key in deletes or key in self.held:
                continue
            if key in self.objects and self.rng.random() < 0.25:
                deletes.append(key)
            else:
                puts[key] = edgenode(*key, self._mutate(self.objects.get(key)))
        if puts and self.rng.random() < 0.2 and any(k in self.objects for k in puts):
            # one real `kubectl patch` in the mix, the way an operator edits one image
            k = next(k for k in puts if k in self.objects)
            fine = [i for i, p in enumerate(self.objects[k]) if MALFORMED_LABEL not in p["metadata"]["labels"]]
            if fine:  # a malformed pod stays malformed: its label tells the checker so
                del puts[k]
                self.patch_image(*k, self.rng.choice(fine), self.rng.choice(IMAGES))
        self.apply(list(puts.values()))
        self.delete_many(deletes)
        if self.verbose:
            print(f"[e2e ops] apply {sorted(puts)} delete {sorted(deletes)}", flush=True)
        return len(puts) + len(deletes)

    def _mutate(self, pods: list[dict] | None) -> list[dict]:
        """A new pod list: create a fresh one, or change an image, add a pod or remove one."""
        self.revision += 1
        if not pods:
            names = self.rng.sample(POD_NAMES, self.rng.randint(1, 3))
            return [pod(n, self.rng.choice(IMAGES), revision=self.revision) for n in names]
        out = json.loads(json.dumps(pods))
        r = self.rng.random()
        free = [n for n in POD_NAMES if n not in {p["metadata"]["name"] for p in out}]
        if r < MALFORMED_SHARE:
            i = self.rng.randrange(len(out))
            out[i] = malformed_pod(out[i]["metadata"]["name"], self.rng.choice(MALFORMED), revision=self.revision)
            self.malformed += 1
        elif r < 0.4 or (r < 0.7 and not free):
            i = self.rng.randrange(len(out))
            out[i] = pod(out[i]["metadata"]["name"], self.rng.choice(IMAGES), revision=self.revision)
        elif r < 0.7:
            out.append(pod(self.rng.choice(free), self.rng.choice(IMAGES), revision=self.revision))
        elif len(out) > 1:
            out.pop(self.rng.randrange(len(out)))
        else:
            out = []  # an EdgeNode with no pods: every pod of it is deleted on the node
        return out

    def _kubectl(self, *args: str, input: str | None = None) -> None:
        self.kubectl_calls += 1
        self.kubectl(*args, input=input, timeout=120)


@dataclass
class Flow:
    """What a `flowing` thread did: batches applied, with the time of each (monotonic)."""

    batches: list[float] = field(default_factory=list)
    error: BaseException | None = None


@contextmanager
def flowing(w: Workload, *, every: float = 0.5, size: int = 3) -> Iterator[Flow]:
    """Apply a random batch of EdgeNode changes every `every` seconds in a thread until the block ends.

    The thread owns `w` meanwhile (the test must not change EdgeNodes itself); a kubectl failure
    ends the flow and is raised when the block exits.
    """
    flow, stop = Flow(), threading.Event()

    def run() -> None:
        try:
            while not stop.is_set():
                w.random_batch(size)
                flow.batches.append(time.monotonic())
                stop.wait(every)  # pacing, not synchronisation
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            flow.error = e

    t = threading.Thread(target=run, name="edgenode-flow", daemon=True)
    t.start()
    try:
        yield flow
    finally:
        stop.set()
        t.join(timeout=180)
    if flow.error is not None:
        raise AssertionError(f"the EdgeNode flow failed after {len(flow.batches)} batch(es): {flow.error!r}")
    assert flow.batches, "the EdgeNode flow applied nothing"
