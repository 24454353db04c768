"""Fixtures for the manager's tests (helpers live in manager_helpers.py).

- ``clientgo_correlator`` (session): client-go's EventCorrelator as a small Go program
  (clientgo_correlator/main.go), built against tools/kube's pinned modules.
- ``manager_factory`` (function): ``start(kubeconfig=..., data_dir=..., namespace=..., args=[...],
  insecure=True, wait=True)`` -> ManagerProcess (started, EdgeNodes listed). Every process is
  killed (process group) at the end of the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.manager.manager_helpers import EDGE_MANAGER, REPO, ManagerProcess


@pytest.fixture(scope="session")
def clientgo_correlator(tmp_path_factory) -> Path:
    go = shutil.which("go")
    assert go, "the differential Event test needs Go (the control plane is built with it)"
    mod = tmp_path_factory.mktemp("clientgo")
    for f in ("go.mod", "go.sum"):  # the control plane's module: the same client-go, already downloaded
        shutil.copy(REPO / "tools" / "kube" / f, mod / f)
    (mod / "correlator").mkdir()
    shutil.copy(Path(__file__).parent / "clientgo_correlator" / "main.go", mod / "correlator" / "main.go")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOWORK": "off", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    out = subprocess.run([go, "build", "-trimpath", "-o", str(mod / "correlator.bin"), "./correlator"],
                         cwd=mod, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return mod / "correlator.bin"


@pytest.fixture
def manager_factory(tmp_path):
    started: list[ManagerProcess] = []

    def start(*, kubeconfig: Path, data_dir: Path | None = None, namespace: str | None = None,
              args: list[str] = (), wait: bool = True, insecure: bool = True) -> ManagerProcess:
        data_dir = Path(data_dir or tmp_path / "data")
        cmd = [str(EDGE_MANAGER), "--kubeconfig", str(kubeconfig), "--data-dir", str(data_dir),
               "--sync-server", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--log-level", "DEBUG"]
        if insecure:
            cmd.append("--insecure")
        if namespace:
            cmd += ["--namespace", namespace]
        cmd += list(args)
        log_path = tmp_path / f"manager{len(started)}.log"
        mp = ManagerProcess(cmd, log_path, data_dir)
        started.append(mp)
        return mp.wait_started() if wait else mp

    yield start
    for mp in started:
        mp.kill()
