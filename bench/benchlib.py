"""Shared helpers of the benchmarks: manifests, /proc readings, child processes, the figures table.

Owns nothing the product uses; imports eventlog only for canonical manifests. Never imports
manager or agent (the child processes do that).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
sys.path.insert(0, str(REPO))

from eventlog import canonical_manifest  # noqa: E402

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: a killed bench leaves no orphans


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one (thousands of streams need thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pod_manifest(node: str, ns: str, name: str, version: int) -> bytes:
    """A realistic pod manifest of about 1 KB; `version` makes each put a change."""
    return canonical_manifest({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": name, "tier": "edge", "edge.k8s.io/node": node, "version": str(version),
                       "app.kubernetes.io/managed-by": "k8s-edge"},
            "annotations": {"edge.k8s.io/generation": str(version), "description": "x" * 120},
        },
        "spec": {
            "containers": [{
                "name": "main",
                "image": f"registry.example.com/team/{name}:1.{version % 50}.0",
                "args": ["--listen=:8080", "--log-level=info", f"--node={node}"],
                "env": [{"name": f"VAR_{i}", "value": f"value-{i}-{version}"} for i in range(8)],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "250m", "memory": "128Mi"},
                              "requests": {"cpu": "50m", "memory": "64Mi"}},
                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/app"}],
            }],
            "volumes": [{"name": "data", "hostPath": {"path": f"/var/lib/edge/{name}"}}],
            "restartPolicy": "Always",
        },
    })


# -- /proc readings ------------------------------------------------------------------

def stdin_lines(loop: "asyncio.AbstractEventLoop") -> "asyncio.Queue[str | None]":
    """Lines of stdin as an asyncio queue (None at EOF): how the helper processes take commands."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, daemon=True).start()
    return lines


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of a process, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mib(kib: int) -> float:
    """KiB to MiB."""
    return kib / 1024


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def load_average() -> str:
    """The 1/5/15-minute load, as `uptime` shows it."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict[str, str]:
    """Machine and versions for RESULTS.md."""
    import grpc
    import lmdb

    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "lmdb": lmdb.__version__,
        "load": load_average(),
    }


# -- child processes -----------------------------------------------------------------

class Child:
    """A child process in its own process group that speaks JSON lines on stdin/stdout."""

    def __init__(self, name: str, cmd: Sequence[str], *, log_path: Path | None = None,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            start_new_session=True, preexec_fn=_die_with_parent, env={**os.environ, **(env or {})},
            cwd=cwd or REPO, text=True, bufsize=1,
        )
        self.log_path = log_path

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.proc.pid

    def send(self, cmd: str, **args: object) -> None:
        """Send one command without waiting."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()

    def recv(self, *, timeout: float = 600.0) -> dict:
        """The next JSON line the child prints (its replies)."""
        import select

        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no reply within {timeout:g}s{self.tail()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 1.0))
            if not ready:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}{self.tail()}")
                continue
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(timeout=10)
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}{self.tail()}")
            if line.startswith("{"):
                reply = json.loads(line)
                if "error" in reply:
                    raise RuntimeError(f"{self.name}: {reply['error']}{self.tail()}")
                return reply

    def call(self, cmd: str, *, timeout: float = 600.0, **args: object) -> dict:
        """Send a command and wait for its reply."""
        self.send(cmd, **args)
        return self.recv(timeout=timeout)

    def tail(self, lines: int = 20) -> str:
        """The end of the child's log, for error messages."""
        if not self.log_path or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n  " + "\n  ".join(text)

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL; reap."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def python_child(name: str, script: str, *args: str, log_path: Path | None = None,
                 env: dict[str, str] | None = None) -> Child:
    """A bench helper script (bench/<script>) run by this venv's Python."""
    return Child(name, [PYTHON, str(REPO / "bench" / script), *args], log_path=log_path, env=env)


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll a condition with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# -- the figures table ---------------------------------------------------------------

@dataclass
class Row:
    """One figure: what, value, unit, target, baseline and the ratio that matters."""

    bench: str
    figure: str
    value: str
    target: str = ""
    met: str = ""  # "yes", "no" or "" (no target)
    baseline: str = ""
    note: str = ""


@dataclass
class Report:
    """Rows of one benchmark run, printed as a table and as one JSON line for run_all."""

    bench: str
    quick: bool
    rows: list[Row] = field(default_factory=list)

    def add(self, figure: str, value: str, *, target: str = "", met: bool | None = None, baseline: str = "",
            note: str = "") -> None:
        """Add one figure."""
        self.rows.append(Row(self.bench, figure, value, target,
                             "" if met is None else ("yes" if met else "NO"), baseline, note))

    def print(self) -> None:
        """Print the table, then a machine-readable line."""
        print(format_table(self.rows, title=f"{self.bench}{' (quick)' if self.quick else ''} — load {load_average()}"))
        print("BENCH-JSON " + json.dumps({"bench": self.bench, "quick": self.quick,
                                          "rows": [r.__dict__ for r in self.rows]}))
        sys.stdout.flush()


def format_table(rows: Sequence[Row], *, title: str = "") -> str:
    """A Markdown table of figures."""
    head = ["bench", "figure", "value", "target", "met", "baseline (same run)", "note"]
    cells = [[r.bench, r.figure, r.value, r.target, r.met, r.baseline, r.note] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
    lines = []
    if title:
        lines.append(f"\n### {title}\n")
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |")
    return "\n".join(lines)


# -- profiling -----------------------------------------------------------------------

class Profiles:
    """py-spy recordings of child processes while a phase runs, when BENCH_PYSPY_DIR is set.

    py-spy samples every thread (the agent applies and reconciles in worker threads, which
    pyinstrument's per-thread profiler would not see) and writes collapsed stacks;
    bench/profile_summary.py turns them into self/inclusive tables.
    """

    def __init__(self) -> None:
        self.dir = os.environ.get("BENCH_PYSPY_DIR", "")
        self._procs: list[subprocess.Popen] = []

    def start(self, name: str, pid: int) -> None:
        """Record `pid` until stop()."""
        if not self.dir:
            return
        Path(self.dir).mkdir(parents=True, exist_ok=True)
        exe = Path(PYTHON).parent / "py-spy"
        self._procs.append(subprocess.Popen(
            [str(exe), "record", "--format", "raw", "--threads", "--rate", "200", "-o",
             str(Path(self.dir) / f"{name}.txt"), "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent))

    def stop(self) -> None:
        """Stop recording (SIGINT makes py-spy write its file)."""
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self._procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        self._procs = []
