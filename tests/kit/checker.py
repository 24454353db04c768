"""The convergence checker: every invariant of docs/architecture.md, checked on what the system holds.

`observe(...)` gathers, read-only, what the API (EdgeNodes, and the mirror pods of nodes
whose hollow kubelet runs), the manager's store, each agent's replica and each manifest folder hold (LMDB MVCC lets it read live stores); the `check_*`
functions are pure: they take observations and return readable problems, so they are
unit-tested on small synthetic stores (tests/e2e/test_checker.py). `assert_converged`
raises one AssertionError listing every problem and the seed of the schedule.

Expected state: the manager's view is compared with `manager.recording.desired_node` of
each EdgeNode read from the API (the manager's own rendering: namespace set, two labels
added, status dropped, static-pod rejections left out). Because that shares code with the
manager, `check_rendering` checks independently that each rendered pod still carries the
user's name and spec, so a rendering bug cannot hide a lost or stale pod.

Imports eventlog, manager.recording, manager.admitting and agent.reconciling's file naming
(pure functions), never a daemon's process state. A pod the workload made malformed or
policy-violating carries a label, so `check_rejections` expects its refusal independently of
the manager's code.

Several managers (HA, issue #14): `manager` is the leader's store, and `replicas` every
manager's. "One history" (`check_one_history`, eventlog.history.compare_histories over every
store): no offset of a log_id was ever written with two contents. Each agent, caught up or
not, must hold a state of the leader's history (`check_replica_consistent`: its digest is the
log's as of its applied offset), and each running standby the leader's whole log
(`check_standbys`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventlog import Event, JournalEntry, LogStore, NodeState, PodEntry, PodKey, ReplicaStore, digest_of
from eventlog.history import HistoryReport, compare_histories

from agent.reconciling import PREFIX, SUFFIX
from manager.admitting import NamespaceAdmission
from manager.recording import desired_node
from tests.kit.manifests import manifest_file_name

# The manager's Pod Security as it applies to the e2e namespaces (unlabelled: the default, baseline).
POD_CHECK = NamespaceAdmission()

# the agent's file naming, k8s-edge_<namespace>_<name>.json: its own constants and function, never a copy
MANAGED_PREFIX, MANAGED_SUFFIX = PREFIX, SUFFIX


# -- observations -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManagerObs:
    """What the manager's store holds."""

    log_id: str
    first_offset: int
    head_offset: int
    nodes: dict[str, NodeState]
    view: dict[str, dict[PodKey, PodEntry]]
    base: dict[str, dict[PodKey, PodEntry]]
    events: tuple[Event, ...]  # every retained event, in offset order


@dataclass(frozen=True, slots=True)
class AgentObs:
    """What one agent's replica and manifest folder hold."""

    node: str
    log_id: str
    applied_offset: int
    digest: int
    pods: dict[PodKey, PodEntry]
    journal: tuple[JournalEntry, ...]
    files: dict[str, bytes]  # every file in the manifest folder, by name
    foreign: dict[str, bytes] = field(default_factory=dict)  # files we planted that the agent must not touch


@dataclass(frozen=True, slots=True)
class MirrorPodObs:
    """A mirror pod a kubelet published for one of its static pods."""

    namespace: str
    name: str  # <pod>-<node>
    node: str
    phase: str
    ready: bool  # every container ready (kubectl's 1/1)
    images: tuple[tuple[str, str], ...]  # (container, image), init containers first
    uid: str = ""  # a new one each time the kubelet recreates the mirror pod


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything the checker looks at, gathered once the system is quiet."""

    edgenodes: tuple[dict, ...]
    manager: ManagerObs
    agents: dict[str, AgentObs]
    verify: dict[str, tuple[int, str]] = field(default_factory=dict)  # store path -> (exit code, output)
    mirror_pods: tuple[MirrorPodObs, ...] = ()
    kubelet_nodes: frozenset[str] = frozenset()  # nodes whose (hollow) kubelet runs
    replicas: dict[str, ManagerObs] = field(default_factory=dict)  # HA: every manager's store, by manager name
    running_replicas: frozenset[str] = frozenset()  # HA: the managers whose process runs
    history: HistoryReport | None = None  # HA: compare_histories over every manager store


def observe_manager(path: Path) -> ManagerObs:
    """Read a manager store (live or stopped) without writing it."""
    with LogStore(path, readonly=True) as s:
        info = s.info()
        nodes = {n.node: n for n in s.nodes()}
        view = s.all_pods()
        base = {n: s.base(n) for n in nodes}
        events = tuple(s.iter_events(after=info.first_offset - 1))
        return ManagerObs(info.log_id, info.first_offset, info.head_offset, nodes, view, base, events)


def observe_agent(node: str, store: Path, manifest_dir: Path, *, foreign: Mapping[str, bytes] = {}) -> AgentObs:
    """Read an agent's replica (live or stopped) and its manifest folder."""
    files = {p.name: p.read_bytes() for p in sorted(manifest_dir.iterdir()) if p.is_file()}
    if not (store / "data.mdb").exists():
        return AgentObs(node, "", 0, 0, {}, (), files, dict(foreign))
    with ReplicaStore(store, readonly=True) as r:
        cur = r.cursor()
        return AgentObs(node, cur.log_id, cur.applied_offset, r.state().digest, r.pods(), tuple(r.journal()),
                        files, dict(foreign))


def pod_images(pod: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """(container, image) of a pod manifest, init containers first."""
    spec = pod.get("spec") or {}
    return tuple((c.get("name", ""), c.get("image", "")) for key in ("initContainers", "containers")
                 for c in spec.get(key) or [])


def mirror_pods_of(pods: Iterable[Mapping[str, Any]], nodes: Collection[str]) -> tuple[MirrorPodObs, ...]:
    """The mirror pods (annotation kubernetes.io/config.mirror) bound to one of nodes, from a pod list."""
    out = []
    for p in pods:
        meta, spec, status = p.get("metadata") or {}, p.get("spec") or {}, p.get("status") or {}
        if "kubernetes.io/config.mirror" not in (meta.get("annotations") or {}) or spec.get("nodeName") not in nodes:
            continue
        statuses = status.get("containerStatuses") or []
        ready = bool(statuses) and all(c.get("ready") for c in statuses)
        out.append(MirrorPodObs(meta.get("namespace", ""), meta["name"], spec["nodeName"], status.get("phase", ""),
                                ready, pod_images(p), meta.get("uid", "")))
    return tuple(sorted(out, key=lambda m: (m.node, m.namespace, m.name)))


def compare_stores(paths: Sequence[Path]) -> HistoryReport:
    """eventlog.history.compare_histories over manager stores (read-only): the "one history" report."""
    return compare_histories(list(paths))


def run_verify(path: Path) -> tuple[int, str]:
    """Run `edge-eventlog verify` (the CLI, as a user would) on one store."""
    exe = Path(sys.executable).with_name("edge-eventlog")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "eventlog.cli"]
    res = subprocess.run([*cmd, "verify", str(path)], capture_output=True, text=True, timeout=120)
    return res.returncode, (res.stdout + res.stderr).strip()


# -- expected state -----------------------------------------------------------------------


def expected_view(edgenodes: Iterable[Mapping[str, Any]]) -> dict[str, dict[PodKey, bytes]]:
    """node -> (namespace, pod) -> manifest the manager must hold, from the API's EdgeNodes."""
    out: dict[str, dict[PodKey, bytes]] = {}
    for obj in edgenodes:
        d = desired_node(obj, pod_check=POD_CHECK)
        out.setdefault(d.node, {}).update(d.pods)
    return {n: pods for n, pods in out.items() if pods}


def check_rendering(edgenodes: Iterable[Mapping[str, Any]], expected: Mapping[str, Mapping[PodKey, bytes]]) -> list[str]:
    """Independent of the manager's code: every rendered pod keeps the user's name and spec."""
    problems = []
    for obj in edgenodes:
        ns, node = obj["metadata"].get("namespace", "default"), obj["metadata"]["name"]
        for pod in (obj.get("spec") or {}).get("pods") or []:
            name = pod["metadata"]["name"]
            raw = expected.get(node, {}).get((ns, name))
            if raw is None:
                continue  # rejected as a static pod; the status reports it
            got = json.loads(raw)
            if got.get("metadata", {}).get("name") != name or got.get("spec") != pod.get("spec"):
                problems.append(f"rendering of {ns}/{name} on {node} lost the user's name or spec: {raw[:200]!r}")
    return problems


# -- the invariants -----------------------------------------------------------------------


def _pod_diff(label: str, want: Mapping[PodKey, bytes], have: Mapping[PodKey, bytes], *, limit: int = 10) -> list[str]:
    """Readable difference of two pod maps: missing, extra, different manifests."""
    out = []
    for k in sorted(set(want) - set(have))[:limit]:
        out.append(f"{label}: missing {k[0]}/{k[1]}")
    for k in sorted(set(have) - set(want))[:limit]:
        out.append(f"{label}: unexpected {k[0]}/{k[1]}")
    for k in sorted(k for k in set(want) & set(have) if want[k] != have[k])[:limit]:
        out.append(f"{label}: {k[0]}/{k[1]} differs:\n      want {_short(want[k])}\n      have {_short(have[k])}")
    return out


def _short(raw: bytes, n: int = 300) -> str:
    s = raw.decode(errors="replace")
    return s if len(s) <= n else s[:n] + "..."


def check_view(expected: Mapping[str, Mapping[PodKey, bytes]], mgr: ManagerObs) -> list[str]:
    """Invariant 3: once caught up, the manager's view equals the desired state of every EdgeNode."""
    problems = []
    for node in sorted(set(expected) | set(mgr.view)):
        have = {k: e.manifest for k, e in mgr.view.get(node, {}).items()}
        problems += _pod_diff(f"manager view of {node}", expected.get(node, {}), have)
    return problems


def check_log(mgr: ManagerObs) -> list[str]:
    """Invariants 1 and 2: offsets gap-free from the first retained one; base + events replay to the view."""
    problems = []
    offsets = [e.offset for e in mgr.events]
    want = list(range(mgr.first_offset, mgr.head_offset + 1))
    if offsets != want:
        gaps = sorted(set(want) - set(offsets))[:10]
        extra = sorted(set(offsets) - set(want))[:10]
        unordered = any(b <= a for a, b in zip(offsets, offsets[1:]))
        problems.append(f"log offsets not gap-free {mgr.first_offset}..{mgr.head_offset}: missing {gaps}, "
                        f"unexpected {extra}, out of order: {unordered}")
    replay: dict[str, dict[PodKey, PodEntry]] = {n: dict(p) for n, p in mgr.base.items()}
    for e in mgr.events:
        pods = replay.setdefault(e.node, {})
        if e.op == "put":
            assert e.manifest is not None
            pods[e.key] = PodEntry(e.namespace, e.name, e.offset, e.manifest)
        else:
            if e.key not in pods:
                problems.append(f"event {e.offset} deletes {e.namespace}/{e.name} on {e.node}, which it did not hold")
            pods.pop(e.key, None)
    for node in sorted(set(replay) | set(mgr.view)):
        a, b = replay.get(node, {}), mgr.view.get(node, {})
        if a != b:
            problems += _pod_diff(f"replay (base + events) vs view of {node}", {k: e.manifest for k, e in a.items()},
                                  {k: e.manifest for k, e in b.items()})
            if {k: e.manifest for k, e in a.items()} == {k: e.manifest for k, e in b.items()}:
                problems.append(f"replay vs view of {node}: same manifests, different offsets")
    for node, st in sorted(mgr.nodes.items()):
        pods = mgr.view.get(node, {})
        if st.digest != digest_of(pods.values()) or st.pod_count != len(pods):
            problems.append(f"node {node}: stored digest/pod count {st.digest:016x}/{st.pod_count} != "
                            f"view's {digest_of(pods.values()):016x}/{len(pods)}")
        mine = [e.offset for e in mgr.events if e.node == node]
        if mine and st.head_offset != mine[-1]:
            problems.append(f"node {node}: head_offset {st.head_offset} is not its newest event {mine[-1]}")
    return problems


def check_agent(a: AgentObs, mgr: ManagerObs) -> list[str]:
    """Invariant 4: the replica is the manager's view of its node at the acknowledged offset, which is the head."""
    problems = []
    st = mgr.nodes.get(a.node)
    head, digest = (st.head_offset, st.digest) if st else (0, 0)
    if a.log_id != mgr.log_id:
        problems.append(f"agent {a.node}: follows log {a.log_id or '(none)'}, manager's is {mgr.log_id}")
    if a.applied_offset != head:
        problems.append(f"agent {a.node}: applied_offset {a.applied_offset} != node head {head}")
    if a.digest != digest:
        problems.append(f"agent {a.node}: replica digest {a.digest:016x} != manager's {digest:016x}")
    if a.digest != digest_of(a.pods.values()):
        problems.append(f"agent {a.node}: stored digest {a.digest:016x} != digest of its pods")
    have = {k: e.manifest for k, e in a.pods.items()}
    want = {k: e.manifest for k, e in mgr.view.get(a.node, {}).items()}
    problems += _pod_diff(f"agent {a.node} replica vs manager view", want, have)
    return problems


def digest_as_of(mgr: ManagerObs, node: str, offset: int) -> int | None:
    """The node's digest after its newest event <= offset, replayed from the retained base; None if compacted away."""
    if offset < mgr.first_offset - 1 or offset > mgr.head_offset:
        return None
    pods = dict(mgr.base.get(node, {}))
    for e in mgr.events:
        if e.offset > offset:
            break
        if e.node != node:
            continue
        if e.op == "put":
            assert e.manifest is not None
            pods[e.key] = PodEntry(e.namespace, e.name, e.offset, e.manifest)
        else:
            pods.pop(e.key, None)
    return digest_of(pods.values())


def check_replica_consistent(a: AgentObs, mgr: ManagerObs) -> list[str]:
    """HA: an agent, caught up or not, holds a state of the leader's history (digest as of its applied offset).

    An agent ahead of the leader, or with a state the leader's log never had at that offset,
    got events a deposed leader appended alone: exactly what the high-water mark and the
    fence must prevent."""
    if not a.log_id:
        return []  # never synced
    if a.log_id != mgr.log_id:
        return [f"agent {a.node}: follows log {a.log_id}, the leader's is {mgr.log_id}"]
    if a.applied_offset > mgr.head_offset:
        return [f"agent {a.node}: applied_offset {a.applied_offset} is ahead of the leader's head {mgr.head_offset}"]
    want = digest_as_of(mgr, a.node, a.applied_offset)
    if want is not None and want != a.digest:
        return [f"agent {a.node}: replica digest {a.digest:016x} at applied_offset {a.applied_offset} is not the "
                f"leader's log's {want:016x} as of that offset: a state the leader's history never had"]
    return []


def check_one_history(report: HistoryReport | None) -> list[str]:
    """HA: every manager store is of one log_id and holds the same bytes at every offset two of them retain."""
    if report is None or report.first_disagreement is None:
        return []
    return [f"one history broken (after {report.offsets_compared} offsets agreed): {report.first_disagreement.text}"]


def check_standbys(leader: ManagerObs, replicas: Mapping[str, ManagerObs], running: Collection[str]) -> list[str]:
    """HA: every running standby holds the leader's log: same log_id and head, so the same view."""
    problems = []
    for name, r in sorted(replicas.items()):
        if name not in running or r is leader:
            continue
        if r.log_id != leader.log_id:
            problems.append(f"standby {name}: log {r.log_id}, the leader's is {leader.log_id}")
        elif r.head_offset != leader.head_offset:
            problems.append(f"standby {name}: head {r.head_offset}, the leader's is {leader.head_offset}")
        elif {n: {k: e.manifest for k, e in v.items()} for n, v in r.view.items() if v} != \
                {n: {k: e.manifest for k, e in v.items()} for n, v in leader.view.items() if v}:
            problems.append(f"standby {name}: same head {r.head_offset} as the leader but another view")
    return problems


def journal_snapshots(journal: Iterable[JournalEntry]) -> list[JournalEntry]:
    """The snapshot installs in a journal, oldest first."""
    return [j for j in journal if j.event is None]


def unexplained_snapshots(
    a: AgentObs, *, wiped_logs: Collection[str] = (), compactions: Sequence[tuple[str, int]] = ()
) -> list[str]:
    """Invariant 5: every snapshot an agent installed has a reason the schedule caused.

    The first one of a fresh replica is explained; one into a new log needs the log the agent
    followed to have been wiped (`wiped_logs`: log_ids of the manager data dirs removed), and
    one within the same log a compaction of that log past the agent's position
    (`compactions`: (log_id, first retained offset)). Identities, not times: an agent may
    still apply events of a log after its manager was killed (they were already on the
    wire, e.g. queued in a bandwidth-limited proxy), so "a wipe since its previous entry"
    would blame it wrongly. Anything else is a partition or restart that did not resume.
    """
    problems = []
    prev: JournalEntry | None = None
    for j in a.journal:
        if j.event is None and not (prev is None and j.seq == 1):
            new_log = prev is None or j.log_id != prev.log_id
            if new_log:
                ok = prev is None or prev.log_id in wiped_logs
            else:
                assert prev is not None
                position = prev.event.offset if prev.event is not None else prev.snapshot_offset
                ok = any(log_id == j.log_id and position < first - 1 for log_id, first in compactions)
            if not ok:
                problems.append(f"agent {a.node} journal #{j.seq}: snapshot at {j.snapshot_offset} "
                                f"{'into a new log' if new_log else 'within the same log'} with no "
                                f"{'wipe of the log it followed' if new_log else 'compaction past its position'}: "
                                "a partition or restart that should have resumed, or a digest mismatch the "
                                "manager healed")
        prev = j
    return problems


def check_journal(a: AgentObs, mgr: ManagerObs) -> list[str]:
    """Invariant 4: each of the node's events applied at most once, in order, none missing between snapshots."""
    problems: list[str] = []
    node_events = [e for e in mgr.events if e.node == a.node]
    by_offset = {e.offset: e for e in node_events}
    node_offsets = [e.offset for e in node_events]
    known_from = mgr.first_offset - 1  # every node event above this offset is retained
    log_id: str | None = None
    last: int | None = None  # newest offset applied or snapshotted in the current log; None: unknown
    if a.journal and a.journal[0].seq == 1:
        log_id, last = "", 0
    for j in a.journal:
        where = f"agent {a.node} journal #{j.seq}"
        if j.event is None:  # a snapshot install
            if j.log_id == log_id and last is not None and j.snapshot_offset < last:
                problems.append(f"{where}: snapshot at {j.snapshot_offset} goes back from {last} in the same log")
            log_id, last = j.log_id, j.snapshot_offset
            continue
        e = j.event
        if e.node != a.node:
            problems.append(f"{where}: event {e.offset} of node {e.node}")
            continue
        if log_id is not None and j.log_id != log_id:
            problems.append(f"{where}: event {e.offset} of log {j.log_id} applied without a snapshot of that log "
                            f"(replica followed {log_id or '(none)'})")
        if last is not None and e.offset <= last:
            problems.append(f"{where}: event {e.offset} applied again or out of order (after {last})")
        elif last is not None and j.log_id == mgr.log_id and last >= known_from:
            nxt = next((o for o in node_offsets if o > last), None)
            if nxt != e.offset:
                missing = [o for o in node_offsets if last < o < e.offset]
                problems.append(f"{where}: event {e.offset} applied after {last}, but the node's next event is "
                                f"{nxt}: missing {missing[:10]}")
        if j.log_id == mgr.log_id and e.offset in by_offset:
            m = by_offset[e.offset]
            if (m.op, m.namespace, m.name, m.manifest) != (e.op, e.namespace, e.name, e.manifest):
                problems.append(f"{where}: event {e.offset} differs from the manager's: "
                                f"{e.op} {e.namespace}/{e.name} vs {m.op} {m.namespace}/{m.name}")
        log_id, last = j.log_id, e.offset
    if a.journal and last is not None and log_id == a.log_id and last != a.applied_offset:
        problems.append(f"agent {a.node}: journal ends at {last}, cursor says applied_offset {a.applied_offset}")
    return problems


def check_manifests(a: AgentObs) -> list[str]:
    """Invariant 6: the managed files equal the replica (content compared); other files untouched."""
    problems = []
    want = {manifest_file_name(ns, name): e.manifest for (ns, name), e in a.pods.items()}
    managed = {f: b for f, b in a.files.items() if f.startswith(MANAGED_PREFIX) and f.endswith(MANAGED_SUFFIX)}
    for f in sorted(set(want) - set(managed)):
        problems.append(f"agent {a.node} manifest folder: missing {f}")
    for f in sorted(set(managed) - set(want)):
        problems.append(f"agent {a.node} manifest folder: stale {f}")
    for f in sorted(f for f in set(want) & set(managed) if want[f] != managed[f]):
        problems.append(f"agent {a.node} manifest folder: {f} differs from the replica:\n"
                        f"      want {_short(want[f])}\n      have {_short(managed[f])}")
    for f in sorted(a.files):
        if f.startswith(f".{MANAGED_PREFIX}") and f.endswith(".tmp"):
            problems.append(f"agent {a.node} manifest folder: temp file {f} left behind")
    for f, content in sorted(a.foreign.items()):
        if a.files.get(f) != content:
            problems.append(f"agent {a.node} manifest folder: foreign file {f} was "
                            f"{'removed' if f not in a.files else 'changed'}")
    return problems


def check_status(edgenodes: Sequence[Mapping[str, Any]], mgr: ManagerObs, nodes: Iterable[str], *,
                 kubelet_nodes: Collection[str] = (),
                 expected: Mapping[str, Mapping[PodKey, bytes]] | None = None) -> list[str]:
    """Promise 7: every EdgeNode of a running agent is at the log's head (syncedOffset == headOffset), and
    `Running` where its node's kubelet runs and it has pods, else `Synced`.

    A node whose kubelet is down may show either: its mirror pods stay in the API as last reported."""
    problems = []
    ours = set(nodes)
    for obj in edgenodes:
        ns, node = obj["metadata"].get("namespace", "default"), obj["metadata"]["name"]
        if node not in ours:
            continue
        st = obj.get("status") or {}
        head = mgr.nodes[node].head_offset if node in mgr.nodes else 0
        has_pods = any(k[0] == ns for k in (expected or {}).get(node, {}))
        if node in kubelet_nodes:
            phases = ("Running",) if has_pods else ("Synced",)
        else:
            phases = ("Synced", "Running") if has_pods and expected is not None else ("Synced",)
        got = (st.get("phase"), st.get("syncedOffset"), st.get("headOffset"))
        if got[0] not in phases or got[1:] != (head, head):
            problems.append(f"EdgeNode {ns}/{node}: phase/syncedOffset/headOffset {got}, want "
                            f"({' or '.join(repr(p) for p in phases)}, {head}, {head}); conditions: "
                            f"{[(c.get('type'), c.get('status'), c.get('reason')) for c in st.get('conditions', [])]}")
    return problems


def check_mirror_pods(expected: Mapping[str, Mapping[PodKey, bytes]], mirror_pods: Iterable[MirrorPodObs],
                      kubelet_nodes: Collection[str]) -> list[str]:
    """Promise 7: where a node's kubelet runs, its mirror pods are exactly the desired pods (`<pod>-<node>`, same
    images), each Running with every container ready."""
    problems = []
    mirror_pods = list(mirror_pods)
    for node in sorted(kubelet_nodes):
        want = {(ns, f"{name}-{node}"): pod_images(json.loads(raw)) for (ns, name), raw in expected.get(node, {}).items()}
        have = {(m.namespace, m.name): m for m in mirror_pods if m.node == node}
        for k in sorted(set(want) - set(have))[:10]:
            problems.append(f"kubelet {node}: no mirror pod {k[0]}/{k[1]}")
        for k in sorted(set(have) - set(want))[:10]:
            problems.append(f"kubelet {node}: unexpected mirror pod {k[0]}/{k[1]}")
        for k in sorted(set(want) & set(have)):
            m = have[k]
            if m.images != want[k]:
                problems.append(f"kubelet {node}: mirror pod {k[0]}/{k[1]} has images {m.images}, want {want[k]}")
            elif (m.phase, m.ready) != ("Running", True):
                problems.append(f"kubelet {node}: mirror pod {k[0]}/{k[1]} is {m.phase or '(no phase)'}"
                                f"{'' if m.ready else ', not ready'}")
    return problems


def check_rejections(edgenodes: Sequence[Mapping[str, Any]], expected: Mapping[str, Mapping[PodKey, bytes]],
                     *, malformed_label: str = "e2e.k8s-edge.io/malformed") -> list[str]:
    """A malformed pod is refused alone: not in the desired view, and named with its reason in the status.

    The pods the workload made malformed carry `malformed_label` (independent of the
    manager's code); every rejection the manager's rendering makes must be in the status of
    the generation it describes.
    """
    problems = []
    for obj in edgenodes:
        meta = obj["metadata"]
        ns, node = meta.get("namespace", "default"), meta["name"]
        st = obj.get("status") or {}
        rejected = {r.get("name"): r.get("reason") for r in st.get("rejected") or []}
        for pod in (obj.get("spec") or {}).get("pods") or []:
            name = pod["metadata"]["name"]
            if malformed_label in (pod["metadata"].get("labels") or {}):
                if (ns, name) in expected.get(node, {}):
                    problems.append(f"EdgeNode {ns}/{node}: malformed pod {name} would be sent")
                if name not in rejected:
                    problems.append(f"EdgeNode {ns}/{node}: malformed pod {name} is not in status.rejected {rejected}")
        want = {r.name: r.reason[:1024] for r in desired_node(obj, pod_check=POD_CHECK).rejected}
        if st.get("observedGeneration") != meta.get("generation") or rejected != want:
            problems.append(f"EdgeNode {ns}/{node}: status.rejected {rejected} at generation "
                            f"{st.get('observedGeneration')}, want {want} at {meta.get('generation')}")
    return problems


def check_verify(results: Mapping[str, tuple[int, str]]) -> list[str]:
    """Invariant 2 as a user checks it: `edge-eventlog verify` passes on every store."""
    return [f"edge-eventlog verify {p} exited {rc}:\n      {out[-800:]}" for p, (rc, out) in sorted(results.items())
            if rc != 0]


def problems_of(obs: Observation, *, check_statuses: bool = True, standbys: bool = True) -> list[str]:
    """Every invariant on one observation; an empty list means converged and correct.

    With several managers (obs.replicas) also one history, and every running standby caught up
    unless `standbys=False` (a test keeps one cut off on purpose)."""
    expected = expected_view(obs.edgenodes)
    problems = check_rendering(obs.edgenodes, expected)
    problems += check_view(expected, obs.manager)
    problems += check_log(obs.manager)
    for a in obs.agents.values():
        problems += check_agent(a, obs.manager)
        problems += check_journal(a, obs.manager)
        problems += check_manifests(a)
    if check_statuses:
        problems += check_status(obs.edgenodes, obs.manager, obs.agents, kubelet_nodes=obs.kubelet_nodes,
                                 expected=expected)
        problems += check_rejections(obs.edgenodes, expected)
    problems += check_mirror_pods(expected, obs.mirror_pods, obs.kubelet_nodes)
    problems += check_verify(obs.verify)
    if obs.replicas:
        problems += check_one_history(obs.history)
        for a in obs.agents.values():
            problems += check_replica_consistent(a, obs.manager)
        if standbys:
            problems += check_standbys(obs.manager, obs.replicas, obs.running_replicas)
    return problems


def format_failure(problems: Sequence[str], *, seed: int | None, context: str = "") -> str:
    """The message a failing check prints: every problem, then how to reproduce."""
    lines = [f"{len(problems)} invariant violation(s){f' ({context})' if context else ''}:"]
    lines += [f"  - {p}" for p in problems[:60]]
    if len(problems) > 60:
        lines.append(f"  ... and {len(problems) - 60} more")
    if seed is not None:
        lines.append(f"reproduce with: K8S_EDGE_SEED={seed}")
    return "\n".join(lines)
