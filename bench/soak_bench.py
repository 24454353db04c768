"""Soak: N agents, a steady change rate with pauses, kills and EdgeNode deletes; do disk, memory and logs stay flat?

Usage: python bench/soak_bench.py [--quick] [--agents N] [--rate R] [--minutes M] [--manager-flags "..."]

Real processes throughout: etcd and kube-apiserver (tools.controlplane), `edge-manager` at
its default log level, N `edge-agent` processes. This process patches one EdgeNode's pod
per change (one event each) at --rate changes/s for --minutes, and meanwhile pauses an
agent (SIGSTOP/SIGCONT), kills one (SIGKILL, restarted), and deletes an EdgeNode
(re-created later). Every --sample seconds it reads, for the manager and each agent,
RSS split into heap (Anonymous in /proc/PID/smaps_rollup) and mapped file (Rss -
Anonymous: LMDB pages, libraries), threads and fds; the store's bytes on disk (data.mdb
blocks), the retained records (k8s_edge_manager_log_bytes) and the bytes of the daemons' logs.

Printed: each figure's slope over the second half of the run per 10,000 events (a least
squares fit against the head offset: flat is ~0), log bytes per event, and the end
state: every agent's replica equals the manager's log for its node (applied offset and
digest), its folder holds exactly the log's pods, and no snapshot beyond each agent's
first sync. The manager runs with retention small enough to compact during the run
(--manager-flags; default --retain-age 60s --compaction-interval 10s, quick 8s/2s); with
the shipped defaults (7d, 1 GiB) compaction would start only after 7 days or ~1 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import PYTHON, REPO, Report, _die_with_parent, wait_for  # noqa: E402
from eventlog import LogStore, ReplicaStore  # noqa: E402
from eventlog.errors import NotAStoreError  # noqa: E402
from eventlog.verify import verify_log  # noqa: E402
from tools.controlplane import ControlPlane, free_port, wait_established  # noqa: E402

NAMESPACE = "soak"
BIN = Path(PYTHON).parent
GROUP, VERSION, PLURAL = "edge.k8s.io", "v1alpha1", "edgenodes"
PODS = 4


def edgenode(node: str, rev: int) -> dict:
    """An EdgeNode of PODS small pods; pod p0 carries the revision each change bumps."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EdgeNode",
            "metadata": {"name": node, "namespace": NAMESPACE},
            "spec": {"pods": [{"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": f"p{j}", "labels": {"rev": f"r{rev}" if j == 0 else "r0"}},
                               "spec": {"containers": [{"name": "c", "image": f"registry.example.com/app{j}:1.0"}]}}
                              for j in range(PODS)]}}


# -- readings ------------------------------------------------------------------------


def proc_reading(pid: int) -> dict[str, float]:
    """rss, heap (anonymous) and file-backed KiB, threads, fds of a process."""
    roll = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        k, _, v = line.partition(":")
        roll[k] = int(v.split()[0])
    threads = int(re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M).group(1))
    return {"rss": roll["Rss"], "heap": roll["Anonymous"], "file": roll["Rss"] - roll["Anonymous"],
            "threads": threads, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def scrape(port: int) -> dict[str, float]:
    """The manager's metrics, by name with labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than 2 distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


# -- the system ----------------------------------------------------------------------


@dataclass
class Soak:
    """The running system and what the run did to it."""

    workdir: Path
    agents: int
    manager_flags: list[str]
    cp: ControlPlane = field(init=False)
    manager: subprocess.Popen | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    revs: dict[str, int] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    changes: int = 0
    faults: dict[str, int] = field(default_factory=lambda: {"pause": 0, "kill": 0, "delete": 0})
    pending: list[tuple[float, Callable[[], None]]] = field(default_factory=list)
    """Fault endings run by the main thread: a child started from a timer thread would get its
    PR_SET_PDEATHSIG when that thread ends."""

    def later(self, seconds: float, fn: Callable[[], None]) -> None:
        self.pending.append((time.monotonic() + seconds, fn))

    def run_due(self, *, all_: bool = False) -> None:
        """Run the fault endings that are due (all of them, waiting, with all_)."""
        while self.pending:
            self.pending.sort(key=lambda p: p[0])
            at, fn = self.pending[0]
            if at > time.monotonic():
                if not all_:
                    return
                time.sleep(at - time.monotonic())
            self.pending.pop(0)
            fn()

    def __post_init__(self) -> None:
        self.cp = ControlPlane(self.workdir / "cp")
        self.nodes = [f"soak{i:03d}" for i in range(self.agents)]
        self.metrics_port = free_port()
        self.sync_port = free_port()

    def start(self) -> None:
        self.cp.start()
        self.cp.kubectl("apply", "-f", str(REPO / "crd" / "edgenode.yaml"))
        wait_established(self.cp.kubectl)  # kubectl wait alone fails before the CRD has conditions
        self.cp.kubectl("create", "namespace", NAMESPACE)
        items = [edgenode(n, 0) for n in self.nodes]
        self.cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        self.revs = {n: 0 for n in self.nodes}
        self.manager = self._popen("edge-manager", [
            str(BIN / "edge-manager"), "--kubeconfig", str(self.cp.kubeconfig), "--namespace", NAMESPACE,
            "--sync-server", f"127.0.0.1:{self.sync_port}", "--data-dir", str(self.workdir / "manager"),
            "--insecure", "--metrics-addr", f"127.0.0.1:{self.metrics_port}", *self.manager_flags])
        wait_for(self._ready, timeout=120, what="edge-manager /readyz", interval=0.2)
        for n in self.nodes:
            self.start_agent(n)
        wait_for(self.converged, timeout=180, what="every agent's first sync", interval=0.5)
        from kubernetes import client, config
        self.api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(self.cp.kubeconfig)))

    def _ready(self) -> bool:
        if self.manager is not None and self.manager.poll() is not None:
            log = (self.workdir / "edge-manager.log").read_text(errors="replace").splitlines()
            why = [line for line in log if " ERROR " in line][-1:] or log[-3:]  # its one start-up line says why
            raise RuntimeError(f"edge-manager exited with {self.manager.returncode}: {' | '.join(why)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def start_agent(self, node: str) -> None:
        (self.workdir / "files" / node).mkdir(parents=True, exist_ok=True)
        self.procs[node] = self._popen(f"agent-{node}", [
            str(BIN / "edge-agent"), "--node-name", node, "--sync-server", f"127.0.0.1:{self.sync_port}",
            "--pod-manifest-path", str(self.workdir / "files" / node),
            "--data-dir", str(self.workdir / "agents" / node), "--insecure"])

    def _popen(self, name: str, cmd: list[str]) -> subprocess.Popen:
        with open(self.workdir / f"{name}.log", "ab") as log:
            return subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, preexec_fn=_die_with_parent)

    # -- what the run does --------------------------------------------------------

    def change(self, rng: random.Random) -> None:
        node = rng.choice([n for n in self.nodes if n not in self.deleted])
        self.revs[node] += 1
        body = {"spec": edgenode(node, self.revs[node])["spec"]}
        self.api.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, node, body,
                                                _content_type="application/merge-patch+json")
        self.changes += 1

    def pause(self, node: str, seconds: float) -> None:
        if self.procs[node].poll() is not None:  # killed and not yet restarted
            return
        os.kill(self.procs[node].pid, signal.SIGSTOP)
        self.faults["pause"] += 1
        self.later(seconds, lambda: self._cont(node))

    def _cont(self, node: str) -> None:
        try:
            os.kill(self.procs[node].pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def kill(self, node: str, down: float) -> None:
        p = self.procs[node]
        p.kill()
        p.wait(10)
        self.faults["kill"] += 1
        self.later(down, lambda: self.start_agent(node))

    def delete(self, node: str, down: float) -> None:
        self.deleted.add(node)
        self.api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, node)
        self.faults["delete"] += 1

        def recreate() -> None:
            self.revs[node] += 1
            wait_for(lambda: self._gone(node), timeout=30, what=f"{node} deleted", interval=0.1)
            self.api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, edgenode(node, self.revs[node]))
            self.deleted.discard(node)
        self.later(down, recreate)

    def _gone(self, node: str) -> bool:
        from kubernetes.client.exceptions import ApiException
        try:
            self.api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, node)
            return False
        except ApiException as exc:
            return exc.status == 404

    # -- readings -----------------------------------------------------------------

    def sample(self, t: float) -> dict[str, float]:
        m = scrape(self.metrics_port)
        out = {"t": t, "events": m["k8s_edge_manager_head_offset"], "first": m["k8s_edge_manager_log_first_offset"],
               "log_records": m["k8s_edge_manager_log_bytes"],
               "store_disk": (self.workdir / "manager" / "eventlog" / "data.mdb").stat().st_blocks * 512,
               "manager_log": (self.workdir / "edge-manager.log").stat().st_size,
               "agent_logs": sum(f.stat().st_size for f in self.workdir.glob("agent-*.log"))}
        assert self.manager is not None
        for k, v in proc_reading(self.manager.pid).items():
            out[f"manager_{k}"] = v
        steady = proc_reading(self.procs[self.nodes[0]].pid)  # agent 0 is never paused, killed or deleted
        for k, v in steady.items():
            out[f"agent_{k}"] = v
        return out

    def converged(self) -> bool:
        """Every agent's replica equals the log's state of its node, and its folder holds the log's pods."""
        self.divergence = self._divergence()
        return self.divergence is None

    def _divergence(self) -> str | None:
        with LogStore(self.workdir / "manager" / "eventlog", readonly=True) as log:
            for n in self.nodes:
                st = log.node_state(n)
                replica_dir = self.workdir / "agents" / n / "replica"
                if st is None or not (replica_dir / "data.mdb").exists():
                    return f"{n}: no state yet"
                try:
                    with ReplicaStore(replica_dir, readonly=True) as rep:
                        cur, digest = rep.cursor(), rep.state().digest
                except NotAStoreError:  # the agent has made the file but not yet its format record
                    return f"{n}: replica being created"
                if cur.log_id != log.log_id or cur.applied_offset != st.head_offset or digest != st.digest:
                    return (f"{n}: replica at {cur.applied_offset} ({digest:x}) of log {cur.log_id}, the log's node "
                            f"head {st.head_offset} ({st.digest:x})")
                files = [f for f in (self.workdir / "files" / n).iterdir() if f.suffix == ".json"]
                if len(files) != st.pod_count:
                    return f"{n}: {len(files)} manifest files, the log holds {st.pod_count} pods"
        return None

    def final_check(self) -> list[str]:
        """What is wrong at the end (empty: converged exactly, log sound, API state recorded)."""
        problems = []
        with LogStore(self.workdir / "manager" / "eventlog", readonly=True) as log:
            problems += verify_log(log)
            for n in self.nodes:
                pods = log.pods(n)
                p0 = next((p for k, p in pods.items() if k[1] == "p0"), None)
                if p0 is None or f'"rev":"r{self.revs[n]}"'.encode() not in p0.manifest:
                    problems.append(f"{n}: the log does not hold revision {self.revs[n]} of p0")
        return problems

    def stop(self) -> None:
        procs = [*self.procs.values(), *([self.manager] if self.manager else [])]
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    p.terminate()
                except ProcessLookupError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.cp.stop()


def run(a: argparse.Namespace, r: Report, workdir: Path) -> None:
    soak = Soak(workdir, a.agents, shlex.split(a.manager_flags))
    rng = random.Random(1)
    try:
        soak.start()
        duration = a.minutes * 60
        others = soak.nodes[1:]
        # fault times spread over the run, none in its last 15%, so the end state is settled
        faults: list[tuple[float, str]] = []
        for kind, every in (("pause", duration / 6), ("kill", duration / 4), ("delete", duration / 5)):
            t = every / 2
            while t < duration * 0.85:
                faults.append((t, kind))
                t += every
        faults.sort()
        samples: list[dict[str, float]] = []
        t0 = time.monotonic()
        next_sample = 0.0
        i = 0
        while (now := time.monotonic() - t0) < duration:
            if faults and now >= faults[0][0] and others:
                _, kind = faults.pop(0)
                node = rng.choice(others)
                if kind == "pause":
                    soak.pause(node, a.pause)
                elif kind == "kill" and soak.procs[node].poll() is None:
                    soak.kill(node, 2.0)
                elif kind == "delete" and node not in soak.deleted:
                    soak.delete(node, a.pause / 2)
            soak.run_due()
            if now >= next_sample:
                samples.append(soak.sample(now))
                next_sample += a.sample
            soak.change(rng)
            i += 1
            lag = t0 + i / a.rate - time.monotonic()
            if lag > 0:
                time.sleep(lag)
        samples.append(soak.sample(time.monotonic() - t0))
        achieved = soak.changes / (time.monotonic() - t0)
        soak.run_due(all_=True)  # the last pause, restart and re-creation end
        t_conv = time.monotonic()
        try:
            wait_for(soak.converged, timeout=120, what="every agent to converge", interval=0.5)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: {soak.divergence}") from None
        conv_s = time.monotonic() - t_conv
        problems = soak.final_check()
        m = scrape(soak.metrics_port)
        end = soak.sample(time.monotonic() - t0)
    finally:
        soak.stop()
    snaps = {k: v for k, v in m.items() if k.startswith("k8s_edge_manager_snapshots_sent_total")}
    first_sync = sum(v for k, v in snaps.items() if 'reason="empty_replica"' in k)
    beyond = sum(snaps.values()) - first_sync
    # an agent down longer than the retention (a kill on a loaded machine, quick mode's 8 s) is owed a snapshot:
    # the promise for an outage beyond retention (docs/guarantees.md); any other reason fails the run
    past_retention = sum(v for k, v in snaps.items() if 'reason="compacted"' in k)
    compacted = m.get("k8s_edge_manager_compacted_events_total", 0)
    events = end["events"]
    second = [s for s in samples if s["t"] >= samples[-1]["t"] / 2]
    xs = [s["events"] for s in second]
    per10k = 10_000

    def sl(key: str) -> float:
        return slope(xs, [s[key] for s in second]) * per10k

    r.add("run", f"{soak.changes:,} changes in {a.minutes * 60:.0f} s", note=(
        f"{a.agents} agents, {achieved:.1f} changes/s (asked {a.rate:g}); {soak.faults['pause']} pauses of "
        f"{a.pause:g}s, {soak.faults['kill']} kills, {soak.faults['delete']} EdgeNode deletes; manager flags: "
        f"{a.manager_flags or '(defaults)'}"))
    started = next((s["t"] for s in samples if s["first"] > 1), None)
    r.add("events in the log / compacted", f"{events:,.0f} / {compacted:,.0f}",
          note=f"first retained offset {end['first']:,.0f} at the end; {len(samples)} samples every {a.sample:g}s; "
               + (f"first compaction seen at {started:.0f} s of {duration:.0f} s ({started / duration:.0%})"
                  if started is not None else "no compaction seen"))
    ok = not problems and beyond == past_retention and first_sync == a.agents
    r.add("end state", "converged exactly" if not problems else f"{len(problems)} problem(s)", met=ok,
          target="every agent = log; 0 snapshots beyond first sync but for an agent down past retention",
          note=f"snapshots: {first_sync:.0f} first syncs, {beyond:.0f} beyond ({past_retention:.0f} of them for an "
               f"agent down longer than the retention); converged {conv_s:.1f}s after the "
               f"last change; verify: {'ok' if not problems else problems[:3]}")
    retained = max(1, events - end["first"] + 1)
    before = [s for s in samples if s["first"] <= 1 and s["events"] > samples[0]["events"]]  # no compaction yet
    grow = slope([s["events"] for s in before], [s["store_disk"] for s in before]) * per10k
    r.add("store on disk (data.mdb)", f"{sl('store_disk') / 1024:+,.1f} KiB per 10k events",
          baseline=f"{grow / 1024:+,.0f} KiB per 10k before the first compaction" if len(before) >= 3 else "",
          note=f"{end['store_disk'] / 2**20:.1f} MiB at the end ({end['store_disk'] / retained:.0f} B per retained "
               f"event); records retained {end['log_records'] / 2**20:.2f} MiB (slope "
               f"{sl('log_records') / 1024:+,.1f} KiB per 10k)")
    for who in ("manager", "agent"):
        label = "manager" if who == "manager" else "agent (never faulted)"
        r.add(f"{label} heap (anonymous RSS)", f"{sl(f'{who}_heap') / 1024:+.2f} MiB per 10k events",
              note=f"{end[f'{who}_heap'] / 1024:.1f} MiB at the end; mapped file {end[f'{who}_file'] / 1024:.1f} MiB "
                   f"(slope {sl(f'{who}_file') / 1024:+.2f} MiB per 10k)")
        r.add(f"{label} threads / fds", f"{sl(f'{who}_threads'):+.1f} / {sl(f'{who}_fds'):+.1f} per 10k events",
              note=f"{end[f'{who}_threads']:.0f} threads, {end[f'{who}_fds']:.0f} fds at the end")
    r.add("log bytes per event (second half)", f"manager {sl('manager_log') / per10k:.1f} B, "
                                               f"all agents {sl('agent_logs') / per10k:.1f} B",
          note=f"default log levels; over the whole run (start-up, connects, faults included) manager "
               f"{end['manager_log'] / max(1, events):.1f} B/event ({end['manager_log'] / 1024:.0f} KiB), agents "
               f"{end['agent_logs'] / max(1, events):.1f} B/event ({end['agent_logs'] / 1024:.0f} KiB)")
    if problems:
        for p in problems[:20]:
            print("PROBLEM:", p)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: 3 agents, 10 changes/s, 25 s")
    p.add_argument("--agents", type=int, default=None)
    p.add_argument("--rate", type=float, default=None, help="changes per second")
    p.add_argument("--minutes", type=float, default=None)
    p.add_argument("--pause", type=float, default=None, help="seconds an agent stays paused")
    p.add_argument("--sample", type=float, default=None, help="seconds between samples")
    p.add_argument("--manager-flags", default=None,
                   help="extra edge-manager flags (default: retention small enough to compact during the run)")
    p.add_argument("--keep", type=Path, default=None, help="copy the work directory here when the run fails")
    a = p.parse_args()
    a.agents = a.agents or (3 if a.quick else 10)
    a.rate = a.rate or (10 if a.quick else 20)
    a.minutes = a.minutes or (25 / 60 if a.quick else 6)
    a.pause = a.pause or (3 if a.quick else 10)
    a.sample = a.sample or (1 if a.quick else 5)
    if a.manager_flags is None:
        a.manager_flags = ("--retain-age 8s --compaction-interval 2s" if a.quick
                           else "--retain-age 60s --compaction-interval 10s")
    r = Report("soak", a.quick)
    with tempfile.TemporaryDirectory(prefix="bench-soak-", dir="/var/tmp") as tmp:
        try:
            run(a, r, Path(tmp))
        except BaseException:
            if a.keep:
                import shutil
                shutil.copytree(tmp, a.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("cp"))
            raise
    r.print()
    if any(row.met == "NO" for row in r.rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
