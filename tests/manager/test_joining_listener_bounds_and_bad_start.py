"""The join listener's edges: bad joining flags or CA Secret stop the start with one line; requests are bounded.

Against the real API server and edge-manager process.
"""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from tests.kit.joining import (
    CA_NAME, CA_NAMESPACE, JoinClient, join_port, joining_args, make_join_pki, node_csr, put_ca_secret, put_token,
)
from tests.kit.processes import error_log_line, refused_start, usage_line
from tests.kit.waits import wait_for


@pytest.fixture
def pki(tmp_path, control_plane, edgenode_crd):
    pki = make_join_pki(tmp_path / "pki")
    put_ca_secret(control_plane, pki)
    return pki


def test_bad_joining_flags_are_one_line_and_exit_2(tmp_path, pki):
    tls = ["--tls-cert-file", str(pki.server_cert), "--tls-private-key-file", str(pki.server_key)]
    for args, words in [
        (["--insecure", "--agent-ca-secret", "k8s-edge/edge-agent-ca"], "--agent-ca-secret needs TLS"),
        ([*tls, "--agent-ca-secret", "edge-agent-ca"], "--agent-ca-secret: not NAMESPACE/NAME"),
        ([*tls, "--agent-ca-secret", "k8s-edge/ca", "--node-identity", "cn"],
         "cannot be combined with --node-identity"),
        ([*tls, "--agent-ca-secret", "k8s-edge/ca", "--allow-unauthenticated-agents"],
         "cannot be combined with --allow-unauthenticated-agents"),
        ([*tls, "--agent-ca-secret", "k8s-edge/ca", "--agent-certificate-duration", "soon"],
         "--agent-certificate-duration: "),
        ([*tls, "--agent-ca-secret", "k8s-edge/ca", "--agent-certificate-duration", "10s"], "at least 60s"),
        ([*tls, "--agent-ca-secret", "k8s-edge/ca", "--join-server", "nowhere"], "--join-server: not an address"),
    ]:
        res = refused_start(*args, tmp_path=tmp_path)
        assert words in usage_line(res), (args, res.stderr)


def test_a_ca_secret_that_cannot_sign_stops_the_start_with_one_line(control_plane, tmp_path, pki):
    kube = ["--kubeconfig", str(control_plane.kubeconfig), "--join-server", "127.0.0.1:0"]
    tls = ["--tls-cert-file", str(pki.server_cert), "--tls-private-key-file", str(pki.server_key)]
    res = refused_start(*kube, *tls, "--agent-ca-secret", f"{CA_NAMESPACE}/nosuch", tmp_path=tmp_path)
    assert res.returncode == 1
    assert f"--agent-ca-secret {CA_NAMESPACE}/nosuch: no Secret {CA_NAMESPACE}/nosuch" in error_log_line(res)
    # the serving certificate is no CA: it cannot sign agents' certificates
    control_plane.kubectl("create", "secret", "tls", "not-a-ca", "-n", CA_NAMESPACE, f"--cert={pki.server_cert}",
                          f"--key={pki.server_key}")
    res = refused_start(*kube, *tls, "--agent-ca-secret", f"{CA_NAMESPACE}/not-a-ca", tmp_path=tmp_path)
    assert res.returncode == 1
    assert "is not a CA (basicConstraints CA:TRUE)" in error_log_line(res)


def test_a_join_port_in_use_is_one_line(control_plane, tmp_path, pki):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = refused_start("--kubeconfig", str(control_plane.kubeconfig), "--tls-cert-file", str(pki.server_cert),
                  "--tls-private-key-file", str(pki.server_key), "--agent-ca-secret", f"{CA_NAMESPACE}/{CA_NAME}",
                  "--join-server", f"127.0.0.1:{port}", tmp_path=tmp_path)
    assert res.returncode == 1
    assert f"--join-server 127.0.0.1:{port}: " in error_log_line(res) and "in use" in error_log_line(res)


def test_requests_are_bounded_and_a_stalled_client_blocks_nobody(control_plane, manager_factory, pki):
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, insecure=False, args=joining_args(pki))
    port = join_port(mgr.log())
    client = JoinClient(port, ca_pem=pki.ca_cert)
    token = put_token(control_plane)
    status, body = client.request("POST", "/v1/join", token=token, declared_length=64 * 1024 + 1)
    assert status == 413 and "at most 65536" in body["error"], body
    assert client.request("POST", "/v1/join", token=token, raw=b"[1, 2]")[0] == 400
    assert client.request("POST", "/v1/join", token=token, raw=b"{not json")[0] == 400
    assert client.request("POST", "/v1/join", token=token, raw=b"x" * 1000)[0] == 400  # sent whole: answered
    assert client.request("GET", "/v1/nothing")[0] == 404
    # connections that never finish their handshake hold their own slots only, and time out
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    try:
        started = time.monotonic()
        status, body = client.join(token, "edge81", node_csr("edge81").csr_pem)
        assert status == 202, body
        assert time.monotonic() - started < 9  # served beside them, not after their 10 s timeout
    finally:
        for s in stalled:
            s.close()
    # a client that sends half its headers is cut off after the timeout
    raw = ssl.create_default_context(cadata=pki.ca_cert.decode()).wrap_socket(
        socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
    raw.sendall(b"GET /v1/discovery HTTP/1.1\r\nHost: x\r\n")
    raw.settimeout(30)
    started = time.monotonic()
    assert raw.recv(100) == b""
    assert 9 <= time.monotonic() - started < 25
    raw.close()


def test_a_rotated_serving_certificate_is_served_without_a_restart(control_plane, manager_factory, pki, tmp_path):
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, insecure=False, args=joining_args(pki))
    port = join_port(mgr.log())

    def served() -> bytes:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1") as s:
            return s.getpeercert(binary_form=True)

    before = served()
    assert before == ssl.PEM_cert_to_DER_cert(pki.server_cert.read_text())
    rotated = make_join_pki(tmp_path / "rotated")
    pki.server_key.write_bytes(rotated.server_key.read_bytes())  # key first: a half-rotated pair is not loaded
    pki.server_cert.write_bytes(rotated.server_cert.read_bytes())
    wait_for(lambda: served() == ssl.PEM_cert_to_DER_cert(rotated.server_cert.read_text()), 30,
             "the rotated certificate served")
