"""Helpers for the eventlog tests: manifests, changes, raw LMDB access, the CLI as a real subprocess.

A module of its own (not conftest) so `from storehelpers import ...` never picks another
folder's conftest when the whole suite runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lmdb

from eventlog import Change, Source, canonical_manifest

HERE = Path(__file__).resolve().parent
APPENDER = HERE / "appender.py"
_SCRIPT = Path(sys.executable).parent / "edge-eventlog"


def cli_command() -> list[str]:
    """The installed console script, else the module (same code)."""
    return [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "eventlog.cli"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run edge-eventlog as a real process and capture its output."""
    return subprocess.run([*cli_command(), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def manifest(node: str, ns: str, name: str, version: int) -> bytes:
    """A small pod manifest; version makes it differ."""
    return canonical_manifest({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": f"nginx:1.{version}"}]},
    })


def put(node: str, name: str, version: int = 0, ns: str = "default") -> Change:
    """A put change with a source, as the recorder makes them."""
    return Change(node, "put", ns, name, manifest(node, ns, name, version), Source(f"uid-{node}", str(version), 1))


def delete(node: str, name: str, ns: str = "default") -> Change:
    """A delete change."""
    return Change(node, "delete", ns, name)


def raw_env(path: Path) -> lmdb.Environment:
    """The store's LMDB environment opened directly, to tamper with it (the store must be closed)."""
    return lmdb.open(str(path), max_dbs=8, subdir=True)


def kill_group(proc: subprocess.Popen) -> None:
    """Kill a child started with start_new_session and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
