"""Joining: a bootstrap token gets a node its certificate through the CSR API, and nothing else does.

Against the real API server (tokens as kube-system Secrets, CSRs seen with kubectl) and the
real edge-manager process; the client is the test kit's (tests/kit/joining.py).
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.kit.builders import apply
from tests.kit.fake_agents import FakeAgent
from tests.kit.joining import (
    JoinClient, csr_condition_types, issued, join_port, joining_args, kubectl_csr, make_join_pki, new_token, node_csr,
    put_ca_secret, put_token, sync_credentials,
)
from tests.kit.pki import make_pki
from tests.kit.waits import wait_for


@pytest.fixture
def pki(tmp_path, control_plane, edgenode_crd):
    pki = make_join_pki(tmp_path / "pki")
    put_ca_secret(control_plane, pki)
    return pki


def start(manager_factory, control_plane, pki, *args: str):
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, insecure=False, args=joining_args(pki, *args))
    return mgr, join_port(mgr.log())


def test_a_valid_token_gets_a_certificate_that_the_sync_service_accepts(
        control_plane, manager_factory, pki, namespace, tmp_path):
    mgr, port = start(manager_factory, control_plane, pki, "--agent-certificate-duration", "2h")
    # the hash the operator computes with openssl (README) is the one the manager logs at start
    (tmp_path / "ca.crt").write_bytes(pki.ca_cert)
    out = subprocess.run(f"openssl x509 -pubkey -in {tmp_path / 'ca.crt'} | openssl pkey -pubin -outform der "
                         "| sha256sum", shell=True, capture_output=True, text=True, check=True).stdout
    assert f"--discovery-token-ca-cert-hash sha256:{out.split()[0]}" in mgr.log()
    status, body = JoinClient(port, ca_pem=None).discovery()
    assert status == 200 and body["caBundle"].encode() == pki.ca_cert

    token = put_token(control_plane)
    key = node_csr("edge01")
    client = JoinClient(port, ca_pem=pki.ca_cert)  # from here on the manager is verified
    status, body = client.join(token, "edge01", key.csr_pem)
    assert status == 202, body
    name = body["name"]
    assert name.startswith("edge-agent-edge01-")
    answer = client.wait_status(name, token=token)
    csr = kubectl_csr(control_plane, name)
    assert csr["spec"]["signerName"] == "edge.k8s.io/agent"
    assert csr["spec"]["usages"] == ["digital signature", "client auth"]
    assert csr["metadata"]["annotations"] == {"edge.k8s.io/node": "edge01",
                                              "edge.k8s.io/token-id": token.split(".")[0]}
    assert token.split(".")[1] not in json.dumps(csr) and token.split(".")[1] not in mgr.log()
    approved = [c for c in csr["status"]["conditions"] if c["type"] == "Approved"]
    assert [c["reason"] for c in approved] == ["AutoApproved"]
    columns = control_plane.kubectl("get", "csr", name).stdout
    assert "edge.k8s.io/agent" in columns and "Approved,Issued" in columns, columns

    cert = issued(answer)
    ca = x509.load_pem_x509_certificate(pki.ca_cert)
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:edge01"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:nodes"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(hours=2) <= lifetime <= timedelta(hours=2, minutes=6), lifetime  # plus the 5 min backdate
    assert cert.public_bytes(serialization.Encoding.PEM) == answer["certificate"].encode()

    apply(control_plane, "edge01", namespace, {"web": "nginx"})
    agent = FakeAgent(mgr.sync_port, "edge01", mgr.data_dir,
                      credentials=sync_credentials(pki, answer["certificate"].encode(), key.key_pem))
    try:
        wait_for(lambda: agent.acked > 0 or agent.error, 60, "the joined agent synced")
        assert agent.error is None, agent.error
    finally:
        agent.close()
    # the certificate names edge01 only: the sync service refuses it for another node
    other = FakeAgent(mgr.sync_port, "edge02", mgr.data_dir,
                      credentials=sync_credentials(pki, answer["certificate"].encode(), key.key_pem))
    try:
        wait_for(lambda: other.error, 30, "edge02 refused")
        assert "names node edge01, not edge02" in other.error.details()
    finally:
        other.close()


def test_manual_approval_waits_for_kubectl_certificate_approve_or_deny(control_plane, manager_factory, pki):
    mgr, port = start(manager_factory, control_plane, pki, "--join-approval", "manual")
    client = JoinClient(port, ca_pem=pki.ca_cert)
    token = put_token(control_plane)
    status, body = client.join(token, "edge11", node_csr("edge11").csr_pem)
    assert status == 202, body
    approved = body["name"]
    status, body = client.join(token, "edge12", node_csr("edge12").csr_pem)
    assert status == 202, body
    denied = body["name"]
    for name in (approved, denied):
        assert client.csr(name, token=token) == (200, {"status": "Pending"})
        assert csr_condition_types(control_plane, name) == []
    assert "Pending" in control_plane.kubectl("get", "csr", approved).stdout
    control_plane.kubectl("certificate", "approve", approved)
    control_plane.kubectl("certificate", "deny", denied)
    assert issued(client.wait_status(approved, token=token)).subject.rfc4514_string() == \
        "O=system:nodes,CN=system:node:edge11"
    answer = client.wait_status(denied, token=token)
    assert answer["status"] == "Denied", answer
    assert csr_condition_types(control_plane, denied) == ["Denied"]
    assert "certificate" not in (kubectl_csr(control_plane, denied).get("status") or {})
    assert "waiting for kubectl certificate approve" in mgr.log()


@pytest.mark.parametrize(("case", "status", "says"), [
    ("expired", 401, "has expired at"),
    ("unknown", 401, "unknown bootstrap token"),
    ("wrong secret", 401, "wrong secret for bootstrap token"),
    ("not for authentication", 403, "is not for authentication"),
    ("bound to another node", 403, "is bound to node edge99, not edge21"),
    ("no token", 401, "no bootstrap token"),
    ("malformed", 401, "malformed bootstrap token"),
])
def test_a_bad_token_is_refused_with_one_line_and_no_csr(control_plane, manager_factory, pki, case, status, says):
    mgr, port = start(manager_factory, control_plane, pki)
    tid, secret = new_token()
    if case == "expired":
        token = put_token(control_plane, token=(tid, secret), expires_in=timedelta(seconds=-5))
    elif case == "unknown":
        token = f"{tid}.{secret}"
    elif case == "wrong secret":
        put_token(control_plane, token=(tid, secret))
        token = f"{tid}.{'x' * 16}"
    elif case == "not for authentication":
        token = put_token(control_plane, token=(tid, secret), authentication=False)
    elif case == "bound to another node":
        token = put_token(control_plane, token=(tid, secret), node="edge99")
    elif case == "no token":
        token = None
    else:
        token = "not-a-token"
    before = control_plane.kubectl("get", "csr", "-o", "name").stdout.split()
    answer = JoinClient(port, ca_pem=pki.ca_cert).join(token, "edge21", node_csr("edge21").csr_pem)
    assert answer[0] == status and says in answer[1]["error"], answer
    assert control_plane.kubectl("get", "csr", "-o", "name").stdout.split() == before
    lines = [line for line in mgr.log().splitlines() if "join request from" in line]
    assert len(lines) == 1 and "WARNING" in lines[0] and f"({status})" in lines[0] and says in lines[0], lines
    assert secret not in mgr.log()


def test_a_token_bound_to_its_node_joins_that_node(control_plane, manager_factory, pki):
    _, port = start(manager_factory, control_plane, pki)
    token = put_token(control_plane, node="edge22")
    client = JoinClient(port, ca_pem=pki.ca_cert)
    status, body = client.join(token, "edge22", node_csr("edge22").csr_pem)
    assert status == 202, body
    assert issued(client.wait_status(body["name"], token=token))


@pytest.mark.parametrize(("make", "says"), [
    (lambda: node_csr("edge31", cn="system:node:edge32"), "is not exactly CN=system:node:edge31, O=system:nodes"),
    (lambda: node_csr("edge31", org=None), "is not exactly"),
    (lambda: node_csr("edge31", org="system:masters"), "is not exactly"),
    (lambda: node_csr("edge31", san="edge32"), "requests extensions (subjectAltName)"),
])
def test_a_csr_for_another_identity_is_refused(control_plane, manager_factory, pki, make, says):
    mgr, port = start(manager_factory, control_plane, pki)
    status, body = JoinClient(port, ca_pem=pki.ca_cert).join(put_token(control_plane), "edge31", make().csr_pem)
    assert status == 400 and says in body["error"], body
    assert "refused (400) for node edge31" in mgr.log()


def test_a_replayed_csr_is_refused(control_plane, manager_factory, pki):
    mgr, port = start(manager_factory, control_plane, pki)
    client = JoinClient(port, ca_pem=pki.ca_cert)
    key = node_csr("edge41")
    status, body = client.join(put_token(control_plane), "edge41", key.csr_pem)
    assert status == 202, body
    # the same request again, even with another valid token: the key was submitted already
    status, again = client.join(put_token(control_plane), "edge41", key.csr_pem)
    assert status == 409, again
    assert again["error"] == f"replayed request: this key was already submitted as CSR {body['name']}"
    assert "refused (409) for node edge41" in mgr.log()


def test_a_csr_is_read_by_its_requester_only(control_plane, manager_factory, pki):
    _, port = start(manager_factory, control_plane, pki)
    client = JoinClient(port, ca_pem=pki.ca_cert)
    token, other = put_token(control_plane), put_token(control_plane)
    status, body = client.join(token, "edge51", node_csr("edge51").csr_pem)
    assert status == 202, body
    status, answer = client.csr(body["name"], token=other)
    assert status == 403 and "was not requested with bootstrap token" in answer["error"], answer
    assert client.csr(body["name"])[0] == 401
    assert client.csr("edge-agent-nosuch-0123456789", token=token)[0] == 404


def test_the_sync_service_trusts_the_agent_ca_beside_the_client_ca_file(
        control_plane, manager_factory, pki, namespace, tmp_path):
    (tmp_path / "hand").mkdir()
    (tmp_path / "stranger").mkdir()
    hand, stranger = make_pki(tmp_path / "hand", ca_name="hand-made CA"), make_pki(tmp_path / "stranger")
    mgr, port = start(manager_factory, control_plane, pki, "--client-ca-file", str(hand.ca))
    client = JoinClient(port, ca_pem=pki.ca_cert)
    token, key = put_token(control_plane), node_csr("edge02")
    status, body = client.join(token, "edge02", key.csr_pem)
    assert status == 202, body
    joined = client.wait_status(body["name"], token=token)["certificate"].encode()
    apply(control_plane, "edge01", namespace, {"web": "nginx"})
    apply(control_plane, "edge02", namespace, {"web": "nginx"})

    def agent(node: str, cert: bytes, key_pem: bytes) -> FakeAgent:
        return FakeAgent(mgr.sync_port, node, mgr.data_dir, credentials=grpc.ssl_channel_credentials(
            root_certificates=pki.ca_cert, private_key=key_pem, certificate_chain=cert))

    def read(pair: tuple) -> tuple[bytes, bytes]:
        return pair[0].read_bytes(), pair[1].read_bytes()

    agents = [agent("edge01", *read(hand.client("edge01"))), agent("edge02", joined, key.key_pem)]
    outsider = agent("edge01", *read(stranger.client("edge01")))  # a CA neither flag names
    try:
        for a in agents:
            wait_for(lambda a=a: a.acked > 0 or a.error, 60, f"{a.node} synced")
            assert a.error is None, a.error
        wait_for(lambda: outsider.error, 30, "the outsider refused")
        assert outsider.acked == 0
    finally:
        for a in [*agents, outsider]:
            a.close()
