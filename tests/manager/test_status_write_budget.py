"""The status-write budget holds: at most one write per EdgeNode per refresh interval at steady state.

The manager's requests are counted by the apiserver itself: a private control plane with an
audit log (level Metadata, one line per request) and the manager's user agent
("edge-manager/..."). Scaling: the test runs the manager with --status-refresh-interval 5s
standing in for the default 60s, so "at most W/5 + 1 writes per EdgeNode in W seconds" is the
default's "at most one per minute". Heartbeats are sent every second, so 20 heartbeats per
agent pass in the window; the manager must make no read or write for any of them.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from tests.kit.builders import apply, edgenode_status, mirror_pod
from tests.kit.crd import audited_control_plane
from tests.kit.fake_agents import FakeAgent
from tests.kit.waits import wait_for


REFRESH = 5.0
WINDOW = 20.0


def manager_requests(audit_log, start: datetime, end: datetime) -> list[dict]:
    out, seen = [], set()
    for line in audit_log.read_text().splitlines():
        e = json.loads(line)
        if not e.get("userAgent", "").startswith("edge-manager/") or e["auditID"] in seen:
            continue
        t = datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if start <= t <= end:
            seen.add(e["auditID"])
            out.append(e)
    return out


def test_steady_state_costs_at_most_one_status_write_per_edgenode_per_interval(
        control_plane_factory, manager_factory, tmp_path):
    cp, audit_log = audited_control_plane(control_plane_factory, tmp_path)
    cp.kubectl("create", "serviceaccount", "default", "-n", "default", check=False)
    ns, data = "default", tmp_path / "data"
    mgr = manager_factory(kubeconfig=cp.kubeconfig, data_dir=data, namespace=ns,
                          args=["--status-refresh-interval", f"{REFRESH:g}s", "--heartbeat-interval", "1s"])
    apply(cp, "edge01", ns, {"web": "nginx"})
    apply(cp, "edge02", ns, {"a": "nginx", "b": "nginx"})
    mirror_pod(cp, ns, "web-edge01", "edge01", "Running")
    agents = [FakeAgent(mgr.sync_port, node, data) for node in ("edge01", "edge02")]
    try:
        wait_for(lambda: edgenode_status(cp, ns, "edge01").get("phase") == "Running"
                 and edgenode_status(cp, ns, "edge02").get("phase") == "Synced", 60, "steady state")
        time.sleep(2)  # let the last coalesced write land
        heartbeats = sum(a.heartbeats for a in agents)
        start = datetime.now(UTC)
        time.sleep(WINDOW)
        end = datetime.now(UTC)
        heartbeats = sum(a.heartbeats for a in agents) - heartbeats
    finally:
        for a in agents:
            a.close()
    reqs = manager_requests(audit_log, start, end)
    writes: dict[str, int] = {}
    other, rewatches = [], 0
    for r in reqs:
        ref = r.get("objectRef", {})
        if r["verb"] == "patch" and ref.get("resource") == "edgenodes" and ref.get("subresource") == "status":
            writes[ref["name"]] = writes.get(ref["name"], 0) + 1
        elif r["verb"] == "watch":  # each watch is renewed once per --watch-timeout (60s), not per agent
            rewatches += 1
        else:
            other.append((r["verb"], ref.get("resource"), ref.get("name"), r["requestURI"]))
    budget = WINDOW / REFRESH + 1
    assert heartbeats >= WINDOW  # about one per second per agent: they happened
    assert all(n <= budget for n in writes.values()), writes
    assert writes.get("edge01", 0) >= 1 and writes.get("edge02", 0) >= 1, writes  # lastSeen is refreshed
    assert other == [], other  # no reads or other writes at steady state, whatever the heartbeats
    assert rewatches <= 2 * (WINDOW / 60 + 1)  # two watches (EdgeNodes, mirror pods)
    assert mgr.stop() == 0
