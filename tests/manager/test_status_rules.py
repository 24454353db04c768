"""The status writer's rules and budget as pure logic: phases, coalescing, refreshes, deleted EdgeNodes.

A recording patch function and a fake clock stand in for the API; everything else is the real
StatusWriter.
"""

from __future__ import annotations

import asyncio

import pytest

from eventlog import Source
from manager.recording import DesiredNode, Rejection
from manager.status import NotFound, StatusSettings, StatusWriter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def desired(node: str = "edge01", ns: str = "ns", pods: tuple[str, ...] = ("web",), gen: int = 1,
            status: dict | None = None, rejected: tuple[Rejection, ...] = ()) -> DesiredNode:
    return DesiredNode(namespace=ns, node=node, source=Source("uid", "1", gen),
                       pods={(ns, p): b"{}" for p in pods}, rejected=rejected, status=status or {})


@pytest.fixture
def world():
    heads = {"edge01": 3}
    writes: list[tuple[str, str, dict]] = []
    clock = Clock()

    def patch(ns, name, body):
        writes.append((ns, name, body["status"]))

    w = StatusWriter(patch=patch, head_offset=lambda n: heads.get(n, 0),
                     settings=StatusSettings(refresh_seconds=60, coalesce_seconds=1), clock=clock,
                     now_iso=lambda: f"t={clock.t:.0f}")
    return w, writes, heads, clock


def flush(w: StatusWriter) -> int:
    return asyncio.run(w.flush())


def test_phases_follow_agent_offsets_and_mirror_pods(world):
    w, writes, heads, clock = world
    w.edgenode_listed([desired()])
    flush(w)
    assert writes[-1][2]["phase"] == "Offline"
    w.connected("edge01", peer="ipv4:10.0.0.1:5000")
    flush(w)
    assert writes[-1][2]["phase"] == "Pending"
    w.acknowledged("edge01", applied_offset=3, digest=1)
    flush(w)
    assert writes[-1][2]["phase"] == "Synced" and writes[-1][2]["syncedOffset"] == 3
    w.mirror_pod("ns", "web-edge01", running=True)
    flush(w)
    st = writes[-1][2]
    assert st["phase"] == "Running" and st["runningPods"] == 1
    assert {c["type"]: c["status"] for c in st["conditions"]} == {"Connected": "True", "Synced": "True",
                                                                  "PodsRunning": "True"}
    w.disconnected("edge01")
    flush(w)
    assert writes[-1][2]["phase"] == "Offline" and writes[-1][2]["lastSeen"]


def test_steady_state_writes_once_per_refresh_interval(world):
    w, writes, heads, clock = world
    w.edgenode_listed([desired()])
    w.connected("edge01", peer="p")
    w.acknowledged("edge01", applied_offset=3, digest=1)
    flush(w)
    n = len(writes)
    for _ in range(59):  # heartbeats, repeated acks of the same offset: nothing to write
        clock.t += 1
        w.acknowledged("edge01", applied_offset=3, digest=1)
        assert flush(w) == 0
    clock.t += 1
    assert flush(w) == 1 and len(writes) == n + 1  # lastSeen refresh after 60 s
    assert flush(w) == 0


def test_changes_within_one_flush_coalesce_into_one_write(world):
    w, writes, heads, clock = world
    w.edgenode_listed([desired()])
    w.connected("edge01", peer="p")
    flush(w)
    n = len(writes)
    for off in range(4, 50):
        heads["edge01"] = off
        w.appended(["edge01"])
        w.acknowledged("edge01", applied_offset=off, digest=1)
    assert flush(w) == 1 and len(writes) == n + 1
    assert writes[-1][2]["headOffset"] == writes[-1][2]["syncedOffset"] == 49


def test_unchanged_status_found_on_the_object_is_not_rewritten(world):
    w, writes, heads, clock = world
    w.edgenode_listed([desired()])
    flush(w)
    written = writes[-1][2]
    w2 = StatusWriter(patch=lambda *a: writes.append(a), head_offset=lambda n: heads.get(n, 0), clock=clock)
    w2.edgenode_listed([desired(status=written)])
    assert asyncio.run(w2.flush()) == 0


def test_deleted_edgenodes_are_never_written_and_404_is_quiet(world):
    w, writes, heads, clock = world
    w.edgenode_listed([desired(), desired(node="edge02")])
    w.edgenode_deleted(("ns", "edge02"))
    flush(w)
    assert [name for _, name, _ in writes] == ["edge01"]
    w.edgenode_listed([desired(gen=2)])

    def gone(*a):
        raise NotFound("ns/edge01")
    w._patch = gone
    assert flush(w) == 0


def test_rejections_and_generation_are_reported(world):
    w, writes, heads, clock = world
    w.edgenode_listed([desired(gen=4, rejected=(Rejection(name="bad", reason="pod has no containers"),))])
    flush(w)
    st = writes[-1][2]
    assert st["observedGeneration"] == 4 and st["rejectedPods"] == 1
    assert st["rejected"] == [{"name": "bad", "reason": "pod has no containers"}]


def test_a_restart_gives_agents_a_grace_period_before_offline(world):
    w, writes, heads, clock = world
    w.edgenode_listed([desired()])
    w.connected("edge01", peer="p")
    w.acknowledged("edge01", applied_offset=3, digest=1)
    flush(w)
    shown = writes[-1][2]
    assert shown["phase"] == "Pending" or shown["phase"] == "Synced"
    restarted = StatusWriter(patch=lambda ns, n, b: writes.append((ns, n, b["status"])),
                             head_offset=lambda n: heads.get(n, 0), clock=clock,
                             settings=StatusSettings(startup_grace_seconds=30))
    restarted.edgenode_listed([desired(status=shown)])
    n = len(writes)
    assert asyncio.run(restarted.flush()) == 0  # not Offline yet: the agent may be reconnecting
    clock.t += 31
    assert asyncio.run(restarted.flush()) == 1 and writes[-1][2]["phase"] == "Offline"
    assert len(writes) == n + 1


def test_an_edgenode_without_pods_is_synced_not_running(world):
    w, writes, heads, clock = world
    w.edgenode_listed([desired(pods=())])
    w.connected("edge01", peer="p")
    w.acknowledged("edge01", applied_offset=3, digest=1)
    flush(w)
    assert writes[-1][2]["phase"] == "Synced"


def test_a_whole_edgenode_rejection_is_written_like_a_pod_rejection(world):
    from manager.recording import desired_node

    w, writes, heads, clock = world
    d = desired_node({"metadata": {"name": "edge01", "namespace": "ns", "generation": 2},
                      "spec": {"pods": {"web": {}}}})
    w.edgenode_listed([d])
    flush(w)
    st = writes[-1][2]
    assert (st["desiredPods"], st["rejectedPods"], st["observedGeneration"]) == (0, 1, 2)
    assert st["rejected"] == [{"name": "(EdgeNode)", "reason": "spec.pods: must be an array, got object"}]
