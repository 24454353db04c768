"""Bad flags and an unreachable API end edge-manager with one clear line and a non-zero exit, no traceback."""

from __future__ import annotations

import socket

from tests.kit.processes import error_log_line, refused_start, usage_line


def test_no_tls_and_no_insecure_refuses_to_start(control_plane, tmp_path):
    res = refused_start("--kubeconfig", str(control_plane.kubeconfig), tmp_path=tmp_path)
    assert "refusing to serve agents without TLS" in usage_line(res)
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
        res = refused_start(*args, tmp_path=tmp_path)
        assert words in usage_line(res), (args, res.stderr)


def test_unreachable_api_is_one_clear_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = refused_start("--insecure", "--master", f"http://127.0.0.1:{port}", "--kubeconfig", "/nonexistent/kubeconfig",
              tmp_path=tmp_path)
    assert res.returncode == 1
    assert "--kubeconfig: no such file" in error_log_line(res)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: x}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    res = refused_start("--insecure", "--kubeconfig", str(kubeconfig), tmp_path=tmp_path)
    assert res.returncode == 1
    assert f"cannot reach the Kubernetes API at https://127.0.0.1:{port}" in error_log_line(res)


def test_missing_crd_is_named(control_plane_factory, tmp_path):
    cp = control_plane_factory()
    res = refused_start("--insecure", "--kubeconfig", str(cp.kubeconfig), tmp_path=tmp_path)
    assert res.returncode == 1
    assert "kubectl apply -f crd/edgenode.yaml" in error_log_line(res)


def test_a_second_manager_on_the_same_data_dir_is_refused(control_plane, edgenode_crd, namespace, manager_factory,
                                                          tmp_path):
    manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=tmp_path / "data", namespace=namespace)
    res = refused_start("--insecure", "--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace,
              tmp_path=tmp_path)
    assert res.returncode == 1
    assert "another edge-manager (pid " in error_log_line(res) and "is using --data-dir" in error_log_line(res)
