"""Bad flags and an unreachable API end edge-manager with one clear line and a non-zero exit, no traceback."""

from __future__ import annotations

import socket
import subprocess

from tests.kit.processes import EDGE_MANAGER


def run(*args: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([str(EDGE_MANAGER), "--data-dir", str(tmp_path / "data"), "--metrics-addr", "",
                           "--sync-server", "127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=60)


def one_error_line(res: subprocess.CompletedProcess) -> str:
    """A start-up error: the one ERROR log line."""
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, res.stderr
    return errors[0]


def one_usage_line(res: subprocess.CompletedProcess) -> str:
    """A flag mistake: the whole stderr is one line `edge-manager: error: <what>`, as edge-agent's and argparse's."""
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-manager: error: "), res.stderr
    return lines[0]


def test_no_tls_and_no_insecure_refuses_to_start(control_plane, tmp_path):
    res = run("--kubeconfig", str(control_plane.kubeconfig), tmp_path=tmp_path)
    assert "refusing to serve agents without TLS" in one_usage_line(res)
    assert not (tmp_path / "data").exists()


def test_insecure_with_tls_flags_and_bad_values_are_refused(tmp_path):
    for args, words in [
        (["--insecure", "--tls-cert-file", "/nonexistent"], "cannot be combined"),
        (["--tls-cert-file", "/nonexistent", "--tls-private-key-file", "/nonexistent"], "no such file"),
        (["--insecure", "--retain-age", "soon"], "--retain-age: not a duration"),
        (["--insecure", "--retain-bytes", "lots"], "--retain-bytes: not a size"),
        (["--insecure", "--namespace", "Bad_NS"], "not a namespace"),
        (["--insecure", "--metrics-addr", "nowhere"], "--metrics-addr: not an address"),
        (["--insecure", "--heartbeat-interval", "0s"], "--heartbeat-interval must be positive"),
        (["--insecure", "--log-level", "loud"], "--log-level"),
        (["--insecure", "--no-such-flag"], "unrecognized arguments"),
    ]:
        res = run(*args, tmp_path=tmp_path)
        assert words in one_usage_line(res), (args, res.stderr)


def test_unreachable_api_is_one_clear_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run("--insecure", "--master", f"http://127.0.0.1:{port}", "--kubeconfig", "/nonexistent/kubeconfig",
              tmp_path=tmp_path)
    assert res.returncode == 1
    assert "--kubeconfig: no such file" in one_error_line(res)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: x}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    res = run("--insecure", "--kubeconfig", str(kubeconfig), tmp_path=tmp_path)
    assert res.returncode == 1
    assert f"cannot reach the Kubernetes API at https://127.0.0.1:{port}" in one_error_line(res)


def test_missing_crd_is_named(control_plane_factory, tmp_path):
    cp = control_plane_factory()
    res = run("--insecure", "--kubeconfig", str(cp.kubeconfig), tmp_path=tmp_path)
    assert res.returncode == 1
    assert "kubectl apply -f crd/edgenode.yaml" in one_error_line(res)


def test_a_second_manager_on_the_same_data_dir_is_refused(control_plane, edgenode_crd, namespace, manager_factory,
                                                          tmp_path):
    manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=tmp_path / "data", namespace=namespace)
    res = run("--insecure", "--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace,
              tmp_path=tmp_path)
    assert res.returncode == 1
    assert "another edge-manager (pid " in one_error_line(res) and "is using --data-dir" in one_error_line(res)
