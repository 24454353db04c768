"""Helpers of the manager's tests: edge-manager as a real process, the store read from outside.

- ``ManagerProcess``: `.venv/bin/edge-manager` in its own process group with ports bound to 0;
  ``wait_started()`` waits for the "Starting workers" line (EdgeNodes listed) and parses the
  bound sync and metrics ports from the log.
- ``events(data_dir)``: every event of the manager's log, read through a read-only LogStore.
- ``wait_for(cond, timeout, what)``: poll a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventlog import Event, LogStore

REPO = Path(__file__).resolve().parents[2]
EDGE_MANAGER = Path(sys.executable).parent / "edge-manager"
_SYNC_PORT = re.compile(r"listening on \S*:(\d+) \(")
_METRICS_PORT = re.compile(r"serving metrics, /healthz and /readyz on \S*:(\d+)")


def wait_for(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition", interval: float = 0.2) -> Any:
    """Poll cond until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def events(data_dir: Path, after: int = 0) -> list[Event]:
    """The manager's events, read-only (LMDB readers never block the manager)."""
    store_dir = Path(data_dir) / "eventlog"
    if not (store_dir / "data.mdb").exists():
        return []
    with LogStore(store_dir, readonly=True) as s:
        return list(s.iter_events(after=after))


def ops(evs: list[Event]) -> list[tuple[str, str, str]]:
    """(node, op, pod name) of each event: what the tests compare."""
    return [(e.node, e.op, e.name) for e in evs]


class ManagerProcess:
    """One edge-manager process."""

    def __init__(self, cmd: list[str], log_path: Path, data_dir: Path) -> None:
        self.cmd = cmd
        self.log_path = log_path
        self.data_dir = data_dir
        self.log_file = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=REPO)
        self.sync_port = 0
        self.metrics_port = 0

    def log(self) -> str:
        """This run's log so far."""
        return self.log_path.read_bytes().decode(errors="replace")

    def wait_started(self, timeout: float = 60.0) -> ManagerProcess:
        """Wait for the first list to be recorded; parse the bound ports."""
        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"edge-manager exited with {self.proc.returncode}:\n{self.log()}")
            return "Starting workers" in self.log()
        wait_for(started, timeout, "edge-manager to list EdgeNodes")
        text = self.log()
        self.sync_port = int(_SYNC_PORT.search(text).group(1))
        m = _METRICS_PORT.search(text)
        self.metrics_port = int(m.group(1)) if m else 0
        return self

    def metrics(self) -> str:
        """The /metrics text."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def get(self, path: str) -> int:
        """HTTP status of a probe path."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal to the manager."""
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self.log_file.close()
        return rc

    def kill(self) -> None:
        """Kill the whole process group (finaliser)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        if not self.log_file.closed:
            self.log_file.close()


def edgenode_yaml(name: str, namespace: str, pods: dict[str, str]) -> str:
    """An EdgeNode manifest (JSON, which kubectl reads as YAML) with pods name -> image."""
    return json.dumps({
        "apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pods": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": p},
                           "spec": {"containers": [{"name": "main", "image": image}]}}
                          for p, image in pods.items()]},
    })


def apply(cp: Any, name: str, namespace: str, pods: dict[str, str]) -> None:
    """kubectl apply an EdgeNode."""
    cp.kubectl("apply", "-f", "-", input=edgenode_yaml(name, namespace, pods))
