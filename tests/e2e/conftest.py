"""Fixtures of the end-to-end suite: a private control plane, Toxiproxy, and the system under test.

- ``e2e_control_plane`` (session): its own etcd + kube-apiserver (tools/controlplane.py),
  so killing the apiserver and compacting etcd disturb no other test, and the manager,
  which watches all namespaces, sees only this suite's EdgeNodes. The CRD is installed.
- ``toxiproxy`` (session): a toxiproxy-server process (tools/build-toxiproxy.sh).
- ``edge_system`` (function): ``edge_system(nodes=..., **EdgeSystem kwargs)`` starts a
  hollow kubelet per node (``kubelets=False``: none), the manager (``managers=2``: two, HA)
  and one agent per node;
  every process is killed and every EdgeNode deleted in the finalizer.
- ``e2e_namespaces`` (function): two fresh namespaces.
- ``nocache_control_plane`` (function): a private control plane with the watch cache off (410 test).
- ``seed`` (function): K8S_EDGE_SEED or a random one, printed so a failure reproduces.
- ``long_run``: ``--long`` (registered in tests/conftest.py) or K8S_EDGE_LONG=1.
"""

from __future__ import annotations

import os
import random
import uuid

import pytest

from tests.kit.crd import install_crd
from tests.kit.harness import EdgeSystem, delete_all_edgenodes
from tests.kit.toxiproxy import ToxiproxyServer, build_toxiproxy
from tools.controlplane import ControlPlane, build_binaries


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    try:
        opt = bool(request.config.getoption("--long"))
    except ValueError:  # option not registered: pytest was not pointed at tests/e2e
        opt = False
    return opt or os.environ.get("K8S_EDGE_LONG") == "1"


@pytest.fixture(scope="session")
def e2e_control_plane(tmp_path_factory):
    # pdeathsig=False: no preexec_fn fork while the session may have gRPC loaded (see tests/kit/processes.py)
    cp = ControlPlane(tmp_path_factory.mktemp("e2e-controlplane"), bin_dir=build_binaries(), pdeathsig=False)
    cp.start()
    try:
        install_crd(cp)
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def nocache_control_plane(tmp_path):
    """A private control plane whose kube-apiserver serves watches from etcd (--watch-cache=false).

    Only there does an etcd compaction reach a watch: with the cache on, a watch resumes
    from the cache and never sees 410 for a resourceVersion the manager kept fresh.
    """
    cp = ControlPlane(tmp_path / "nocache-cp", bin_dir=build_binaries(), extra_apiserver_args=["--watch-cache=false"],
                      pdeathsig=False)
    cp.start()
    try:
        install_crd(cp)
        for n in ("e2e-a", "e2e-b"):
            cp.kubectl("create", "namespace", n)
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def toxiproxy(tmp_path_factory):
    server = ToxiproxyServer(build_toxiproxy(), log_dir=tmp_path_factory.mktemp("toxiproxy"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("K8S_EDGE_SEED") or random.SystemRandom().randrange(1, 2**31))
    print(f"\n[e2e] seed: {value} (reproduce with K8S_EDGE_SEED={value})", flush=True)
    return value


@pytest.fixture
def e2e_namespaces(e2e_control_plane) -> list[str]:
    names = [f"e2e-{c}-{uuid.uuid4().hex[:5]}" for c in "ab"]
    for n in names:
        e2e_control_plane.kubectl("create", "namespace", n)
    return names


@pytest.fixture
def edge_system(e2e_control_plane, toxiproxy, tmp_path, request):
    systems: list[EdgeSystem] = []

    def make(*, nodes=("edge01", "edge02", "edge03"), control_plane=None, **kwargs) -> EdgeSystem:
        workdir = tmp_path / f"sys{len(systems)}"
        workdir.mkdir()
        s = EdgeSystem(control_plane=control_plane or e2e_control_plane, toxiproxy=toxiproxy, workdir=workdir,
                       nodes=nodes, **kwargs)
        systems.append(s)
        return s.start()

    yield make
    for s in systems:
        s.close()
        for proxy in s.proxies():
            toxiproxy.delete_proxy(proxy.name)
        print(f"[e2e] logs of {request.node.name}: {s.logs}")
    if e2e_control_plane.apiserver is None or e2e_control_plane.apiserver.poll() is not None:
        e2e_control_plane.start_apiserver()  # a test that failed while the API was down
    delete_all_edgenodes(e2e_control_plane)
