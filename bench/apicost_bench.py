"""API server cost: the manager's requests per EdgeNode per minute at steady state, agents in sync.

Usage: python bench/apicost_bench.py [--quick] [--nodes N] [--window SECONDS] [--settle SECONDS]

System (bench/cluster.py) with kube-apiserver's audit log on (policy: every request once,
at RequestReceived, metadata only), N EdgeNodes, a real `edge-manager` and N connected
agents (simulated in one load process; agents never talk to the API server). After every
node's manifests are written, the run waits --settle seconds (status writes of the
connect settle), then counts the audit events whose user agent is edge-manager's over
--window seconds: watches, status writes and Kubernetes Events (create/patch events), all
in the one budget. Baseline: the original proof of concept's 12 requests per EdgeNode per
minute (a read and a status write per 10 s poll, from its code, see
/work/shared/seed-poc.md), and the requests of the same run's start-up (list, watches,
first status writes) for scale.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import Report  # noqa: E402
from bench.cluster import EdgeCluster  # noqa: E402

MANAGER_AGENT = "edge-manager/"
POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["ResponseStarted", "ResponseComplete", "Panic"]
rules:
- level: Metadata
"""


def manager_requests(audit_log: Path, start: datetime, end: datetime) -> Counter[str]:
    """The manager's requests received in [start, end), by verb and resource."""
    out: Counter[str] = Counter()
    for line in audit_log.read_text(errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if not ev.get("userAgent", "").startswith(MANAGER_AGENT):
            continue
        t = datetime.fromisoformat(ev["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if start <= t < end:
            ref = ev.get("objectRef") or {}
            what = ref.get("resource", "?") + ("/" + ref["subresource"] if ref.get("subresource") else "")
            out[f"{ev.get('verb')} {what}"] += 1
    return out


def run(*, nodes: int, window: float, settle: float, quick: bool, workdir: Path) -> Report:
    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "audit-policy.yaml"
    policy.write_text(POLICY)
    audit_log = workdir / "audit.log"
    args = (f"--audit-policy-file={policy}", f"--audit-log-path={audit_log}", "--audit-log-format=json",
            "--audit-log-maxsize=0", "--audit-log-mode=blocking")
    t_start = datetime.now(UTC)
    with EdgeCluster(workdir, nodes=nodes, real_agents=0, pods=2, extra_apiserver_args=args):
        synced = datetime.now(UTC)
        time.sleep(settle)
        w0 = datetime.now(UTC)
        time.sleep(window)
        w1 = datetime.now(UTC)
    steady = manager_requests(audit_log, w0, w1)
    startup = manager_requests(audit_log, t_start, synced)
    total = sum(steady.values())
    per = total / nodes / (window / 60)
    r = Report("apicost", quick)
    r.add("EdgeNodes / connected agents", f"{nodes} / {nodes}", note=f"settle {settle:.0f} s, window {window:.0f} s")
    r.add("manager requests per EdgeNode per minute (steady)", f"{per:.2f}", target="<= 1",
          met=None if quick else per <= 1.0, baseline="original: 12 (measured from its code, not run)",
          note=f"{total} requests: " + ", ".join(f"{v} {k}" for k, v in steady.most_common()))
    status = sum(v for k, v in steady.items() if k.endswith("/status"))
    fixed = total - status  # watch renewals and lists: per manager, not per EdgeNode
    r.add("  of which status writes per EdgeNode per minute", f"{status / nodes / (window / 60):.2f}",
          note=f"the rest, {fixed / (window / 60):.1f} per minute, is per manager (1 + that/N per EdgeNode)")
    ev_steady = sum(v for k, v in steady.items() if k.endswith(" events"))
    before = manager_requests(audit_log, t_start, w0)  # start-up and settle: when the agents connected
    ev_startup = sum(v for k, v in before.items() if k.endswith(" events"))
    r.add("  of which Events (events.k8s.io) per EdgeNode per minute", f"{ev_steady / nodes / (window / 60):.2f}",
          target="0: nothing periodic emits Events", met=None if quick else ev_steady == 0,
          note=f"{ev_startup} Event writes before the window (each agent's AgentConnected and SnapshotSent)")
    r.add("ratio to the original", f"{per / 12:.1%}", baseline="12 per EdgeNode per minute")
    r.add("start-up requests (until every node synced)", str(sum(startup.values())),
          note=", ".join(f"{v} {k}" for k, v in startup.most_common(4)))
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: 10 EdgeNodes, 10 s window, no thresholds")
    p.add_argument("--nodes", type=int, default=None)
    p.add_argument("--window", type=float, default=None)
    p.add_argument("--settle", type=float, default=None)
    a = p.parse_args()
    nodes = a.nodes or (10 if a.quick else 100)
    window = a.window or (10.0 if a.quick else 180.0)
    settle = a.settle if a.settle is not None else (2.0 if a.quick else 20.0)
    with tempfile.TemporaryDirectory(prefix="bench-apicost-", dir="/var/tmp") as tmp:
        run(nodes=nodes, window=window, settle=settle, quick=a.quick, workdir=Path(tmp)).print()


if __name__ == "__main__":
    main()
