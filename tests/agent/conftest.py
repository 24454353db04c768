"""Fixtures for the edge-agent tests (helpers live in agentproc.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agent.agentproc import AgentProc, foreign_files
from tests.agent.managerproc import ManagerProc
from tests.agent.syncserver import LogServer


@pytest.fixture
def agents(tmp_path) -> Iterator:
    """Factory of AgentProc; every agent is killed (process group) at the end."""
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
    """A started sync server over a fresh log (see syncserver.py); closed at the end."""
    srv = LogServer(tmp_path / "manager-log").start()
    yield srv
    srv.close()


@pytest.fixture
def manager(tmp_path, control_plane, edgenode_crd, namespace) -> Iterator[ManagerProc]:
    """The real edge-manager (not started), watching only this test's namespace; killed at the end."""
    mp = ManagerProc(tmp_path, kubeconfig=control_plane.kubeconfig, namespace=namespace)
    yield mp
    mp.kill()


@pytest.fixture
def join_manager(tmp_path, control_plane, edgenode_crd, namespace) -> Iterator:
    """Factory of the real edge-manager with joining on (TLS, the agent CA Secret); see joinsetup.py."""
    from tests.agent.joinsetup import JoinSetup

    made: list[JoinSetup] = []

    def make(*extra: str, start: bool = True) -> JoinSetup:
        j = JoinSetup(tmp_path, control_plane, namespace=namespace, extra=list(extra))
        made.append(j)
        return j.start() if start else j

    yield make
    for j in made:
        j.manager.kill()
