"""The kit's pytest fixtures, loaded for every suite by tests/conftest.py (pytest_plugins).

- ``store`` (function): a LogStore in tmp_path, closed at the end.
- ``pki`` / ``other_pki`` (session): a test PKI (tests.kit.pki), and a second, unrelated CA with
  the same certificates (what a rotation moves to).
- ``agents`` (function): factory of AgentProc; every agent is killed (process group) at the end
  and must not have touched the foreign files of its manifest folder.
- ``logserver`` (function): a started LogServer over a fresh log; closed at the end.
- ``manager`` (function): an edge-manager (not started) on a fixed sync port, watching only the
  test's namespace, heartbeats every second; killed at the end.
- ``manager_factory`` (function): ``start(kubeconfig=..., data_dir=..., namespace=..., args=[...],
  insecure=True, wait=True)`` -> ManagerProcess (started; ready unless wait=False), sync port 0.
- ``join_manager`` (function): ``make(*extra_flags, start=True) -> JoinSetup``: the real
  edge-manager with joining on (TLS, its agent CA Secret), tokens and the agent's join flags.
- ``procs`` (function): Popen objects a test starts; their process groups are killed at the end.
- ``tmpfs`` (function): ``mount(path, size="4m") -> path``, a small tmpfs (mode 0700) to fill up;
  unmounted at the end. Needs root.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventlog import LogStore
from tests.kit.agents import AgentProc
from tests.kit.joinsetup import JoinSetup
from tests.kit.manager import ManagerProcess
from tests.kit.manifests import foreign_files
from tests.kit.pki import Pki, make_pki
from tests.kit.processes import free_port, kill_group
from tests.kit.servers import LogServer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    s = LogStore(tmp_path / "log")
    yield s
    s.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki2"), ca_name="k8s-edge rotated CA")


@pytest.fixture
def agents(tmp_path) -> Iterator[Callable[..., AgentProc]]:
    made: list[AgentProc] = []

    def make(name: str = "agent", **kw) -> AgentProc:
        a = AgentProc(tmp_path, name, **kw)
        made.append(a)
        return a

    yield make
    for a in made:
        a.kill()
    for a in made:
        if a.check_foreign and a.manifests.is_dir():
            assert foreign_files(a.manifests) == a.foreign, f"{a.name} touched files it does not own"


@pytest.fixture
def logserver(tmp_path) -> Iterator[LogServer]:
    srv = LogServer(tmp_path / "manager-log").start()
    yield srv
    srv.close()


@pytest.fixture
def manager(tmp_path, control_plane, edgenode_crd, namespace) -> Iterator[ManagerProcess]:
    mp = ManagerProcess(kubeconfig=control_plane.kubeconfig, data_dir=tmp_path / "manager-data",
                        log_path=tmp_path / "manager.log", namespace=namespace,
                        sync_address=f"127.0.0.1:{free_port()}", args=["--heartbeat-interval", "1s"])
    yield mp
    mp.kill()


@pytest.fixture
def manager_factory(tmp_path) -> Iterator[Callable[..., ManagerProcess]]:
    started: list[ManagerProcess] = []

    def start(*, kubeconfig: Path, data_dir: Path | None = None, namespace: str | None = None,
              args: list[str] = (), wait: bool = True, insecure: bool = True) -> ManagerProcess:
        mp = ManagerProcess(kubeconfig=kubeconfig, data_dir=Path(data_dir or tmp_path / "data"),
                            log_path=tmp_path / f"manager{len(started)}.log", namespace=namespace,
                            insecure=insecure, args=list(args))
        started.append(mp)
        mp.start()
        return mp.wait_ready() if wait else mp

    yield start
    for mp in started:
        mp.kill()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        kill_group(p)


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., Path]]:
    mounted: list[Path] = []

    def mount(path: Path, *, size: str = "4m") -> Path:
        path.mkdir(parents=True, exist_ok=True)
        # mode 0700: a tmpfs root is 1777 by default, and a shared (sticky) dir is refused as a data dir
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, f"cannot mount a tmpfs (the test needs root): {res.stderr}"
        mounted.append(path)
        return path

    yield mount
    for p in mounted:
        if subprocess.run(["umount", str(p)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(p)], capture_output=True, timeout=30)


@pytest.fixture
def join_manager(tmp_path, control_plane, edgenode_crd, namespace) -> Iterator[Callable[..., JoinSetup]]:
    made: list[JoinSetup] = []

    def make(*extra: str, start: bool = True) -> JoinSetup:
        j = JoinSetup(tmp_path, control_plane, namespace=namespace, extra=list(extra))
        made.append(j)
        return j.start() if start else j

    yield make
    for j in made:
        j.manager.kill()
