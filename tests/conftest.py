"""Shared fixtures: the local Kubernetes control plane and the EdgeNode CRD.

- ``control_plane`` (session): a running etcd + kube-apiserver (tools/controlplane.py),
  built at pinned versions on first use. Attributes: ``kubeconfig`` (Path), ``server``
  (https URL), ``token`` (admin bearer token, group system:masters), ``etcd_url``,
  ``bin_dir``; methods ``kubectl(*args, check=True, input=None, timeout=60)`` ->
  CompletedProcess (text; raises KubectlError, a CalledProcessError showing stderr),
  ``kill_apiserver()``, ``restart_apiserver(kill=True)``, ``start_apiserver()``,
  ``compact_etcd(revision=None) -> int``, ``etcd_revision()``, ``api_client()`` (a
  kubernetes.client.ApiClient). Compaction alone does not make watches from old
  resourceVersions fail while the apiserver's watch cache holds them: compact, then
  ``restart_apiserver()``, to get 410 Gone (or use a factory instance with
  ``extra_apiserver_args=["--watch-cache=false"]``).
  With ``K8S_EDGE_USE_EXISTING_CLUSTER=1`` and ``KUBECONFIG`` set it is that cluster
  instead, and the methods that need the local processes skip the test.
  ``K8S_EDGE_ETCD_COMPACTION_INTERVAL`` (default 5m) and ``K8S_EDGE_APISERVER_ARGS``
  tune the session's apiserver.
- ``control_plane_factory`` (function): ``factory(**ControlPlane kwargs)`` starts a
  separate, private control plane (e.g. ``etcd_compaction_interval="2s"``), stopped at
  the end of the test. Takes a few seconds.
- ``edgenode_crd`` (session): crd/edgenode.yaml applied and Established; its value
  describes the resource (``.name``, ``.group``, ``.version``, ``.plural``, ``.kind``).
- ``namespace`` (function): a fresh namespace (with a ``default`` ServiceAccount, as
  there is no controller-manager to create it). Afterwards its EdgeNodes and pods are
  deleted and the namespace itself without waiting: with no namespace controller it stays
  Terminating, which is harmless. Tests share the session's cluster: scope a manager to
  the test's namespace (``--namespace``) or expect other tests' objects.

Helpers live in tests/kit (processes, servers, fake agents, PKI, builders, waits); its fixtures
(tests/kit/fixtures.py) are loaded here for every suite. Test modules import only tests.kit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.kit.crd import install_crd  # noqa: E402
from tools.controlplane import BUILD_SCRIPT, ControlPlane, KubectlError, build_binaries  # noqa: E402


# the kit's fixtures (agents, logserver, manager, manager_factory, pki, store, ...): tests/kit/fixtures.py
pytest_plugins = ["tests.kit.fixtures"]


class ExistingCluster:
    """A cluster given by KUBECONFIG (K8S_EDGE_USE_EXISTING_CLUSTER=1)."""

    token = None
    etcd_url = None

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = Path(kubeconfig)
        out = subprocess.run(["bash", str(BUILD_SCRIPT), "--print-bin-dir"], capture_output=True, text=True)
        self.bin_dir = Path(out.stdout.strip()) if out.returncode == 0 else None
        self.kubectl_path = (self.bin_dir / "kubectl") if self.bin_dir else Path("kubectl")
        self.server = self.kubectl("config", "view", "--minify", "-o",
                                   "jsonpath={.clusters[0].cluster.server}").stdout.strip()

    def kubectl(self, *args, check=True, input=None, timeout=60) -> subprocess.CompletedProcess:
        cmd = [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *map(str, args)]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise KubectlError(res.returncode, cmd, res.stdout, res.stderr)
        return res

    def api_client(self):
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def _local_only(self, *a, **kw):
        pytest.skip("needs the local control plane (K8S_EDGE_USE_EXISTING_CLUSTER is set)")

    kill_apiserver = restart_apiserver = start_apiserver = compact_etcd = etcd_revision = _local_only


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    if os.environ.get("K8S_EDGE_USE_EXISTING_CLUSTER") == "1" and os.environ.get("KUBECONFIG"):
        yield ExistingCluster(os.environ["KUBECONFIG"])
        return
    cp = ControlPlane(tmp_path_factory.mktemp("controlplane"), bin_dir=build_binaries())
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def control_plane_factory(tmp_path):
    started: list[ControlPlane] = []
    bin_dir = build_binaries()

    def factory(**kwargs) -> ControlPlane:
        kwargs.setdefault("bin_dir", bin_dir)
        cp = ControlPlane(tmp_path / f"cp{len(started)}", **kwargs)
        started.append(cp)
        return cp.start()

    yield factory
    for cp in started:
        cp.stop()


@dataclass(frozen=True)
class CRDInfo:
    name: str = "edgenodes.edge.k8s.io"
    group: str = "edge.k8s.io"
    version: str = "v1alpha1"
    plural: str = "edgenodes"
    kind: str = "EdgeNode"


@pytest.fixture(scope="session")
def edgenode_crd(control_plane) -> CRDInfo:
    info = CRDInfo()
    install_crd(control_plane)
    return info


@pytest.fixture
def namespace(control_plane, request) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    control_plane.kubectl("create", "serviceaccount", "default", "-n", name, check=False)
    yield name
    # No namespace controller empties it, so delete what tests typically leave: a manager
    # watching all namespaces then sees the EdgeNodes go instead of inheriting them.
    control_plane.kubectl("delete", "edgenodes", "--all", "-n", name, "--wait=false", check=False)
    control_plane.kubectl("delete", "pods", "--all", "-n", name, "--grace-period=0", "--force",
                          "--wait=false", check=False)
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def pytest_addoption(parser):
    # tests/e2e: the randomised schedule's long mode; registered here, where pytest reads options from
    parser.addoption("--long", action="store_true", default=False,
                     help="e2e: run the randomised schedule with thousands of operations (also K8S_EDGE_LONG=1)")
