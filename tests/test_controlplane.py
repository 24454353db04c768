"""The local control plane launcher (tools/controlplane.py) itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit.processes import REPO
from tests.kit.waits import wait_for
from tools.controlplane import pid_alive

pytestmark = pytest.mark.skipif(os.environ.get("K8S_EDGE_USE_EXISTING_CLUSTER") == "1",
                                reason="tests the local control plane")


def processes_mentioning(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains marker, found through /proc."""
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and int(p.name) != os.getpid() and pid_alive(int(p.name), marker)]


class TestLifecycle:
    def test_stop_leaves_no_process(self, control_plane_factory):
        cp = control_plane_factory()
        pids = cp.pids
        assert set(pids) == {"etcd", "kube-apiserver"}
        assert cp.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        assert sorted(processes_mentioning(str(cp.state_dir))) == sorted(pids.values())
        cp.stop()
        for name, pid in pids.items():
            assert not Path(f"/proc/{pid}").exists() or not pid_alive(pid, str(cp.state_dir)), name
        assert processes_mentioning(str(cp.state_dir)) == []
        assert cp.pids == {}

    def test_sigkilled_launcher_leaves_nothing(self, tmp_path, control_plane):
        state = tmp_path / "cp"
        launcher = subprocess.Popen(
            [sys.executable, "-m", "tools.controlplane", "up", "--foreground", "--state-dir", str(state)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            wait_for(lambda: (state / "state.json").exists() or launcher.poll() is not None, 120,
                       "the launcher to start the control plane")
            assert launcher.poll() is None, launcher.communicate()
            pids = json.loads((state / "state.json").read_text())["pids"]
            assert all(pid_alive(p, str(state)) for p in pids.values())
            launcher.send_signal(signal.SIGKILL)
            launcher.wait()
            wait_for(lambda: not processes_mentioning(str(state)), 10, "the children to die (pdeathsig)")
        finally:
            if launcher.poll() is None:
                launcher.kill()
            for pid in processes_mentioning(str(state)):
                os.killpg(pid, signal.SIGKILL)

    def test_sigterm_to_launcher_stops_everything(self, tmp_path, control_plane):
        state = tmp_path / "cp"
        launcher = subprocess.Popen(
            [sys.executable, "-m", "tools.controlplane", "up", "--foreground", "--state-dir", str(state)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        wait_for(lambda: (state / "state.json").exists() or launcher.poll() is not None, 120, "start")
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 0
        assert processes_mentioning(str(state)) == []

    def test_detached_up_env_down(self, tmp_path, control_plane):
        state = tmp_path / "cp"
        cli = [sys.executable, "-m", "tools.controlplane"]
        kw = dict(cwd=REPO, capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(REPO)})
        up = subprocess.run([*cli, "up", "--state-dir", str(state)], **kw)
        try:
            assert up.returncode == 0, up.stderr
            assert f"export KUBECONFIG={state / 'kubeconfig'}" in up.stdout
            assert len(processes_mentioning(str(state))) == 2  # etcd and kube-apiserver outlive `up`
            env = subprocess.run([*cli, "env", "--state-dir", str(state)], **kw)
            assert env.returncode == 0 and "KUBECONFIG" in env.stdout
            kubectl = Path(control_plane.bin_dir) / "kubectl"
            ns = subprocess.run([kubectl, "--kubeconfig", state / "kubeconfig", "get", "ns", "default"], **kw)
            assert ns.returncode == 0, ns.stderr
        finally:
            down = subprocess.run([*cli, "down", "--state-dir", str(state)], **kw)
        assert down.returncode == 0, down.stderr
        assert processes_mentioning(str(state)) == []
        assert subprocess.run([*cli, "env", "--state-dir", str(state)], **kw).returncode == 1


class TestOperations:
    def test_version_is_pinned(self, control_plane):
        version = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
        assert version["clientVersion"]["gitVersion"].startswith("v1.35.")
        assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"]

    def test_rbac_is_enforced(self, control_plane):
        assert control_plane.kubectl("auth", "can-i", "list", "pods", "-A").stdout.strip() == "yes"
        res = control_plane.kubectl("auth", "can-i", "list", "pods", "-A", "--as", "someone", check=False)
        assert res.stdout.strip() == "no"

    def test_kill_and_restart_apiserver_keeps_data(self, control_plane, namespace):
        control_plane.kubectl("create", "configmap", "survivor", "-n", namespace, "--from-literal=k=v")
        old_pid = control_plane.pids["kube-apiserver"]
        control_plane.kill_apiserver()
        assert not pid_alive(old_pid)
        res = control_plane.kubectl("get", "ns", "--request-timeout=2s", check=False)
        assert res.returncode != 0
        control_plane.restart_apiserver()
        assert control_plane.pids["kube-apiserver"] != old_pid
        cm = json.loads(control_plane.kubectl("get", "configmap", "survivor", "-n", namespace, "-o", "json").stdout)
        assert cm["data"] == {"k": "v"}

    def test_compact_etcd_makes_old_watches_gone(self, control_plane_factory):
        # Without the watch cache a watch is served by etcd, so compaction shows at once.
        cp = control_plane_factory(extra_apiserver_args=["--watch-cache=false"])
        cp.kubectl("create", "configmap", "c", "--from-literal=n=0")
        old_rv = json.loads(cp.kubectl("get", "configmap", "c", "-o", "json").stdout)["metadata"]["resourceVersion"]
        for n in range(1, 4):
            cp.kubectl("patch", "configmap", "c", "-p", json.dumps({"data": {"n": str(n)}}))
        rev = cp.compact_etcd()
        assert rev > int(old_rv)
        assert cp.compact_etcd(rev) == rev  # idempotent
        res = cp.kubectl("get", "--raw",
                         f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={old_rv}&timeoutSeconds=2",
                         check=False)
        assert '"code":410' in res.stdout + res.stderr

    def test_compaction_then_restart_makes_old_watches_gone(self, control_plane, namespace):
        # With the watch cache on, compaction shows only once the cache restarts.
        control_plane.kubectl("create", "configmap", "c", "-n", namespace, "--from-literal=n=0")
        cm = json.loads(control_plane.kubectl("get", "configmap", "c", "-n", namespace, "-o", "json").stdout)
        old_rv = cm["metadata"]["resourceVersion"]
        control_plane.kubectl("patch", "configmap", "c", "-n", namespace, "-p", '{"data":{"n":"1"}}')
        control_plane.compact_etcd()
        control_plane.restart_apiserver()
        res = control_plane.kubectl(
            "get", "--raw",
            f"/api/v1/namespaces/{namespace}/configmaps?watch=1&resourceVersion={old_rv}&timeoutSeconds=2",
            check=False)
        assert '"code":410' in res.stdout + res.stderr

    def test_api_client(self, control_plane):
        from kubernetes import client

        with control_plane.api_client() as api:
            names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
        assert "default" in names


def _mirror_pods(cp, node: str) -> dict[str, tuple[str, str]]:
    """name -> (phase, image) of the pods bound to node, as kubectl lists them."""
    items = json.loads(cp.kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: (p.get("status", {}).get("phase", ""), p["spec"]["containers"][0]["image"])
            for p in items if p["spec"].get("nodeName") == node}


def _static_pod(name: str, image: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                       "spec": {"containers": [{"name": "c", "image": image}]}})


class TestHollowKubelet:
    def test_static_pod_becomes_a_running_mirror_pod_and_survives_a_restart(self, control_plane_factory, tmp_path):
        cp = control_plane_factory()
        folder = tmp_path / "static-pods"
        kubelet = cp.start_hollow_kubelet("hollow01", static_pod_dir=folder)
        ready = cp.kubectl("get", "node", "hollow01", "-o",
                           'jsonpath={.status.conditions[?(@.type=="Ready")].status}').stdout
        assert ready == "True"
        root = kubelet.root_dir
        assert root is not None and (next(root.glob("static-pods*"))).resolve() == folder.resolve()
        (folder / "web.json").write_text(_static_pod("web", "nginx:1.27"))
        wait_for(lambda: _mirror_pods(cp, "hollow01") == {"web-hollow01": ("Running", "nginx:1.27")}, 60,
                   "the mirror pod web-hollow01 Running")
        pid = kubelet.pid
        kubelet.kill()
        assert not pid_alive(pid) and not root.exists() and (folder / "web.json").exists()
        (folder / "web.json").unlink()
        (folder / "cache.json").write_text(_static_pod("cache", "redis:7"))
        cp.start_hollow_kubelet("hollow01")  # same folder: what changed while it was down is picked up
        wait_for(lambda: _mirror_pods(cp, "hollow01") == {"cache-hollow01": ("Running", "redis:7")}, 60,
                   "the restarted kubelet to run cache and drop web's mirror pod")
        pid = kubelet.pid
        cp.stop()
        assert not pid_alive(pid) and kubelet.root_dir is None

    def test_cli_up_with_a_hollow_kubelet_and_down(self, tmp_path, control_plane):
        state = tmp_path / "cp"
        cli = [sys.executable, "-m", "tools.controlplane"]
        kw = dict(cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(REPO)})
        up = subprocess.run([*cli, "up", "--state-dir", str(state), "--hollow-kubelet", "hollow02"], **kw)
        try:
            assert up.returncode == 0, up.stderr
            assert "hollow kubelet hollow02: Node Ready" in up.stderr
            kubelets = json.loads((state / "state.json").read_text())["kubelets"]
            assert kubelets["hollow02"]["static_pod_dir"] == str(state.resolve() / "kubelets" / "hollow02" / "static-pods")
            assert len(processes_mentioning(str(state))) == 3  # etcd, kube-apiserver, kubemark outlive `up`
        finally:
            down = subprocess.run([*cli, "down", "--state-dir", str(state)], **kw)
        assert down.returncode == 0, down.stderr
        assert processes_mentioning(str(state)) == []
        assert not Path(kubelets["hollow02"]["root_dir"]).exists()
        bad = subprocess.run([*cli, "up", "--state-dir", str(tmp_path / "cp2"), "--hollow-kubelet", "=x"], **kw)
        assert bad.returncode == 2 and bad.stderr.strip().startswith("controlplane: --hollow-kubelet '=x': no node name")
