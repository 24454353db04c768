"""Fixtures for the manager's tests (helpers live in manager_helpers.py).

- ``manager_factory`` (function): ``start(kubeconfig=..., data_dir=..., namespace=..., args=[...],
  insecure=True, wait=True)`` -> ManagerProcess (started, EdgeNodes listed). Every process is
  killed (process group) at the end of the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.manager.manager_helpers import EDGE_MANAGER, ManagerProcess


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
