"""EdgeNode status: what agents and kubelet report, coalesced into few status-subresource writes.

Owns what the status knows of each node's agent (told by agent_activity.AgentActivity:
connected/acknowledged/reported/disconnected) and of the mirror pods, the phase and
condition rules, and the write budget. Writing itself is a PatchFn given by the daemon
(kubeapi.StatusPatcher, a merge patch through the kubernetes client), so this module
imports neither grpc nor the kubernetes client.

Budget: a status write happens only when the status means something new (phase, offsets,
pod counts, rejections, conditions), coalesced per EdgeNode over `coalesce_seconds`, or to
refresh `lastSeen` of a connected agent, at most once per `refresh_seconds` (default 90 s).
At steady state with connected, in-sync agents that is 0.67 writes per EdgeNode per minute,
leaving room for the manager's two watch renewals a minute so that all its API requests
stay under one per EdgeNode per minute (bench/apicost_bench.py), and no agent message ever
causes an API read. lastSeen is therefore up to 90 s old; liveness is the Connected
condition, which changes at once.

Phase (the original's rule for Running): Offline when no agent of the node is connected;
else Pending until syncedOffset == headOffset; else Running when every desired pod has a
Running mirror pod `<pod>-<node>` in the EdgeNode's namespace (and there is at least one
pod); else Synced. Extra pods on the node are not looked at (the original also required none).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from manager.recording import DesiredNode, EdgeNodeKey

_RETRY_SECONDS = 5.0  # a failed status write waits this long, so a bad API answer is not hammered
PatchFn = Callable[[str, str, dict[str, Any]], None]  # (namespace, name, merge-patch body); raises on failure


class NotFound(Exception):
    """The EdgeNode is gone: its status is not written."""


class Conflict(Exception):
    """The API refused the write for now (409): retried quietly with the next flush."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusSettings:
    """How often the manager may write EdgeNode status."""

    refresh_seconds: float = 90.0
    """A connected agent's lastSeen is refreshed at most this often: the steady-state budget
    (60 s would be exactly one write a minute, and the watch renewals would push the total over)."""
    coalesce_seconds: float = 1.0
    """Changes within this interval (offsets moving during a burst) make one write."""
    startup_grace_seconds: float = 30.0
    """After a manager restart, agents get this long to reconnect before an EdgeNode that showed
    them connected is written Offline: a restart alone does not flap every EdgeNode."""


@dataclass
class AgentState:
    """What the manager knows of one node's agent (the node may have several EdgeNodes)."""

    connected: int = 0  # open streams of this node (a reconnect may overlap the old stream)
    ever_connected: bool = False  # since this manager started
    peer: str = ""
    synced_offset: int | None = None
    last_seen: str | None = None
    manifests_ok: bool = True
    message: str = ""


@dataclass
class EdgeNodeState:
    """One EdgeNode: its desired pods as recorded, and what was last written."""

    namespace: str
    node: str
    generation: int = 0
    pod_names: tuple[str, ...] = ()
    rejected: tuple[tuple[str, str], ...] = ()
    written: dict[str, Any] | None = None  # the status last written (or found on the object)
    written_at: float = 0.0  # monotonic time of the last write
    retry_at: float = 0.0  # after a failed write, not before this monotonic time
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (status, lastTransitionTime)


def mirror_pod_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name) of a Pod as the API returns it."""
    meta = pod.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def pod_running(pod: Mapping[str, Any]) -> bool:
    """Whether a Pod's phase is Running."""
    return ((pod.get("status") or {}).get("phase")) == "Running"


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meaningful(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status without lastSeen: what changes it is worth a write at once."""
    return {k: v for k, v in status.items() if k != "lastSeen"}


class StatusWriter:
    """The single writer of EdgeNode status."""

    def __init__(
        self,
        *,
        patch: PatchFn,
        head_offset: Callable[[str], int],
        settings: StatusSettings = StatusSettings(),
        on_write: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        now_iso: Callable[[], str] | None = None,
    ) -> None:
        self._patch = patch
        self._head_offset = head_offset
        self._settings = settings
        self._on_write = on_write
        self._clock = clock
        self._now_iso = now_iso or _now_iso
        self._agents: dict[str, AgentState] = {}
        self._edgenodes: dict[EdgeNodeKey, EdgeNodeState] = {}
        self._by_node: dict[str, set[EdgeNodeKey]] = {}  # node -> its EdgeNodes (one per namespace)
        self._running: dict[tuple[str, str], bool] = {}  # (namespace, mirror pod name) -> Running
        self._dirty: set[EdgeNodeKey] = set()
        self._wake = asyncio.Event()
        self._started = clock()
        self.listed = False

    @property
    def agents(self) -> dict[str, AgentState]:
        """Per-node agent state (for metrics)."""
        return self._agents

    def node_lag(self) -> dict[str, int]:
        """Per node whose agent acknowledged anything: events of the node it has not acknowledged (metrics)."""
        return {node: max(0, self._head_offset(node) - agent.synced_offset)
                for node, agent in list(self._agents.items()) if agent.synced_offset is not None}

    # -- what agents do (called on the event loop, relayed from the sync streams) ---

    def connected(self, node: str, *, peer: str) -> None:
        """An agent opened a stream for its node."""
        a = self._agents.setdefault(node, AgentState())
        a.connected += 1
        a.ever_connected = True
        a.peer = peer
        a.last_seen = self._now_iso()
        self._touch_node(node)

    def acknowledged(self, node: str, *, applied_offset: int, digest: int) -> None:
        """The agent applied events through applied_offset."""
        a = self._agents.setdefault(node, AgentState())
        if a.synced_offset != applied_offset:
            a.synced_offset = applied_offset
            self._touch_node(node)

    def reported(self, node: str, *, manifests_ok: bool, message: str, managed_manifests: int) -> None:
        """The agent reconciled its manifest directory with a new outcome."""
        a = self._agents.setdefault(node, AgentState())
        if (a.manifests_ok, a.message) != (manifests_ok, message):
            a.manifests_ok, a.message = manifests_ok, message
            self._touch_node(node)

    def disconnected(self, node: str) -> None:
        """An agent's stream ended."""
        a = self._agents.setdefault(node, AgentState())
        a.connected = max(0, a.connected - 1)
        a.last_seen = self._now_iso()
        self._touch_node(node)

    # -- desired state (called on the event loop, relayed from the watch threads) ----

    def edgenode_listed(self, desired: Iterable[DesiredNode]) -> None:
        """A full list: forget EdgeNodes that are gone, take in the rest."""
        desired = list(desired)
        keys = {d.key for d in desired}
        for key in [k for k in self._edgenodes if k not in keys]:
            self.edgenode_deleted(key)
        for d in desired:
            self.edgenode_changed(d)
        self.listed = True

    def edgenode_changed(self, d: DesiredNode) -> None:
        """An EdgeNode was recorded (added or modified)."""
        st = self._edgenodes.get(d.key)
        if st is None:
            st = self._edgenodes[d.key] = EdgeNodeState(d.namespace, d.node)
            self._by_node.setdefault(d.node, set()).add(d.key)
            self._adopt(st, d.status)
        rejected = tuple((r.name, r.reason) for r in d.rejected)
        gen = d.source.generation
        if (st.generation, st.pod_names, st.rejected) != (gen, d.pod_names, rejected):
            st.generation, st.pod_names, st.rejected = gen, d.pod_names, rejected
            self._mark(d.key)

    def edgenode_deleted(self, key: EdgeNodeKey) -> None:
        """An EdgeNode was deleted: never write its status again."""
        if self._edgenodes.pop(key, None) is not None:
            keys = self._by_node.get(key[1], set())
            keys.discard(key)
            if not keys:
                self._by_node.pop(key[1], None)
        self._dirty.discard(key)

    def appended(self, nodes: Iterable[str]) -> None:
        """Events were appended for these nodes: their headOffset moved."""
        for node in nodes:
            self._touch_node(node)

    def mirror_pod(self, namespace: str, name: str, *, running: bool | None) -> None:
        """A mirror pod changed (running=None: it is gone)."""
        key = (namespace, name)
        was = self._running.get(key)
        if running is None:
            self._running.pop(key, None)
        else:
            self._running[key] = running
        if was != running:
            # a mirror pod is named <pod>-<node>; try every split at a dash (names are short)
            for i, ch in enumerate(name):
                if ch == "-" and (namespace, name[i + 1:]) in self._edgenodes:
                    self._mark((namespace, name[i + 1:]))

    def mirror_pod_changed(self, pod: Mapping[str, Any], *, deleted: bool) -> None:
        """A mirror pod as the watch saw it (a dict of the API's Pod)."""
        ns, name = mirror_pod_key(pod)
        self.mirror_pod(ns, name, running=None if deleted else pod_running(pod))

    def mirror_pods_listed(self, pods: Mapping[tuple[str, str], bool]) -> None:
        """A full list of mirror pods."""
        for key in set(self._running) - set(pods):
            self.mirror_pod(*key, running=None)
        for (ns, name), running in pods.items():
            self.mirror_pod(ns, name, running=running)

    # -- the status rules -----------------------------------------------------------

    def compute(self, key: EdgeNodeKey) -> dict[str, Any]:
        """The status EdgeNode `key` should show now."""
        st = self._edgenodes[key]
        ns, node = key
        agent = self._agents.get(node, AgentState())
        head = self._head_offset(node)
        synced = agent.synced_offset
        connected = agent.connected > 0
        missing = [p for p in st.pod_names if not self._running.get((ns, f"{p}-{node}"))]
        in_sync = synced is not None and synced >= head
        if not connected:
            phase = "Offline"
        elif not in_sync:
            phase = "Pending"
        elif not missing and st.pod_names:  # no pods: nothing runs, so Synced is the honest phase
            phase = "Running"
        else:
            phase = "Synced"
        if connected:
            c_conn = ("True", "AgentConnected", f"agent connected from {agent.peer}" if agent.peer else "agent connected")
        else:
            c_conn = ("False", "AgentNotConnected", "no agent of this node is connected")
        if in_sync:
            c_sync = ("True", "UpToDate", f"agent applied every event through offset {head}")
        elif synced is None:
            c_sync = ("False", "NeverAcknowledged", f"agent has not acknowledged any event (head offset {head})")
        else:
            c_sync = ("False", "Behind", f"agent applied through offset {synced}, head offset is {head}")
        if not agent.manifests_ok:
            c_pods = ("False", "ManifestsFailed", agent.message or "the agent could not write its manifests")
        elif missing:
            c_pods = ("False", "MirrorPodsNotRunning", "not running: " + ", ".join(f"{p}-{node}" for p in missing))
        elif not st.pod_names:
            c_pods = ("True", "NoPods", "the EdgeNode asks for no pods")
        else:
            c_pods = ("True", "AllRunning", f"{len(st.pod_names)} pod(s) running")
        conditions = [self._condition(st, t, *c) for t, c in
                      (("Connected", c_conn), ("Synced", c_sync), ("PodsRunning", c_pods))]
        status: dict[str, Any] = {
            "observedGeneration": st.generation,
            "phase": phase,
            "headOffset": head,
            "syncedOffset": synced or 0,
            "desiredPods": len(st.pod_names),
            "runningPods": len(st.pod_names) - len(missing),
            "rejectedPods": len(st.rejected),
            "rejected": [{"name": n or "(unnamed)", "reason": r[:1024]} for n, r in st.rejected],
            "conditions": conditions,
        }
        last_seen = self._now_iso() if connected else agent.last_seen or (st.written or {}).get("lastSeen")
        if last_seen:
            status["lastSeen"] = last_seen
        return status

    def _condition(self, st: EdgeNodeState, ctype: str, status: str, reason: str, message: str) -> dict[str, Any]:
        prev = st.transitions.get(ctype)
        if prev is None or prev[0] != status:
            st.transitions[ctype] = prev = (status, self._now_iso())
        return {"type": ctype, "status": status, "reason": reason, "message": message,
                "observedGeneration": st.generation, "lastTransitionTime": prev[1]}

    def due(self, key: EdgeNodeKey, status: Mapping[str, Any]) -> bool:
        """Whether this status is worth a write now (see the module docstring)."""
        st = self._edgenodes[key]
        if st.written is None or _meaningful(st.written) != _meaningful(status):
            return True
        refresh = status.get("lastSeen") != st.written.get("lastSeen")
        return refresh and self._clock() - st.written_at >= self._settings.refresh_seconds

    # -- the writer loop ------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Write due statuses until stop is set (or the task is cancelled)."""
        coalesce = self._settings.coalesce_seconds
        while not stop.is_set():
            await self.flush()
            self._wake.clear()
            if self._dirty:  # changed while we wrote, or a failed write to retry
                await asyncio.sleep(coalesce)
                continue
            try:  # quiet: sleep until a change or the next lastSeen refresh
                await asyncio.wait_for(self._wake.wait(), timeout=max(coalesce, self._next_refresh()))
            except TimeoutError:
                pass
            await asyncio.sleep(coalesce)  # let the burst that woke us settle into one write

    def _next_refresh(self) -> float:
        now = self._clock()
        waits = [st.written_at + self._settings.refresh_seconds - now
                 for st in self._edgenodes.values() if self._agents.get(st.node, AgentState()).connected]
        return min(waits, default=self._settings.refresh_seconds)

    async def flush(self) -> int:
        """Write every due status now; return how many were written."""
        if not self.listed:
            return 0  # before the first list the recorder has not caught up: headOffset would lie
        now = self._clock()
        due_refresh = {k for k, st in self._edgenodes.items()
                       if self._agents.get(st.node, AgentState()).connected
                       and now - st.written_at >= self._settings.refresh_seconds}
        keys, self._dirty = self._dirty | due_refresh, set()
        n = 0
        for key in sorted(keys):
            st = self._edgenodes.get(key)
            if st is None:
                continue
            if st.retry_at > now:
                self._dirty.add(key)
                continue
            status = self.compute(key)
            if not self.due(key, status):
                continue
            if self._in_startup_grace(st, status):
                self._dirty.add(key)
                continue
            try:
                await asyncio.to_thread(self._patch, key[0], key[1], {"status": status})
            except NotFound:
                logger.debug("EdgeNode {}/{} is gone; status not written", *key)
                continue
            except Conflict:
                logger.debug("status write of EdgeNode {}/{} conflicted; retrying", *key)
                self._dirty.add(key)
                st.retry_at = self._clock() + 1.0
                continue
            except Exception as exc:  # a failed write is retried with the next change or refresh
                logger.warning("writing status of EdgeNode {}/{} failed: {}", key[0], key[1],
                               " ".join(str(exc).split())[:300])
                self._dirty.add(key)
                st.retry_at = self._clock() + _RETRY_SECONDS
                continue
            st = self._edgenodes.get(key)
            if st is not None:  # deleted while we wrote: nothing to remember
                st.written, st.written_at = status, self._clock()
            n += 1
            if self._on_write:
                self._on_write()
            logger.debug("wrote status of EdgeNode {}/{}: phase {}", key[0], key[1], status["phase"])
        return n

    def _in_startup_grace(self, st: EdgeNodeState, status: Mapping[str, Any]) -> bool:
        """Whether an Offline write should wait for the agent to reconnect after a manager restart."""
        if status["phase"] != "Offline" or not st.written or st.written.get("phase") in (None, "Offline"):
            return False
        if self._agents.get(st.node, AgentState()).ever_connected:
            return False
        return self._clock() - self._started < self._settings.startup_grace_seconds

    def _adopt(self, st: EdgeNodeState, status: Mapping[str, Any]) -> None:
        """Start from the status the object already shows, so a restart rewrites nothing unchanged."""
        if not status:
            return
        st.written = dict(status)
        for c in status.get("conditions") or []:
            if c.get("type") and c.get("status") and c.get("lastTransitionTime"):
                st.transitions[c["type"]] = (c["status"], c["lastTransitionTime"])
        agent = self._agents.setdefault(st.node, AgentState())
        if agent.synced_offset is None and not agent.connected and status.get("syncedOffset"):
            agent.synced_offset = int(status["syncedOffset"])
        if agent.last_seen is None and status.get("lastSeen"):
            agent.last_seen = status["lastSeen"]

    def _touch_node(self, node: str) -> None:
        for key in self._by_node.get(node, ()):
            self._mark(key)

    def _mark(self, key: EdgeNodeKey) -> None:
        self._dirty.add(key)
        self._wake.set()
