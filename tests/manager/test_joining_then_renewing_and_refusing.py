"""Renewal over the current certificate, and refusing a node with the edge.k8s.io/agent-refused label.

Against the real API server and edge-manager: a joined node renews with its certificate (no
token), only for itself; a refused node loses its live stream at once, cannot open another,
join or renew, and is let back when the label goes.
"""

from __future__ import annotations

import json

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from tests.kit.builders import apply
from tests.kit.fake_agents import FakeAgent
from tests.kit.joining import (
    JoinClient, issued, join_port, joining_args, kubectl_csr, make_join_pki, node_csr, put_ca_secret, put_token,
    sync_credentials,
)
from tests.kit.waits import wait_for


@pytest.fixture
def joined(tmp_path, control_plane, edgenode_crd, manager_factory):
    """A manager with joining on, and a function that joins a node: (certificate PEM, key PEM)."""
    pki = make_join_pki(tmp_path / "pki")
    put_ca_secret(control_plane, pki)
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, insecure=False, args=joining_args(pki))
    port = join_port(mgr.log())

    def join(node: str) -> tuple[bytes, bytes]:
        client = JoinClient(port, ca_pem=pki.ca_cert)
        token, key = put_token(control_plane), node_csr(node)
        status, body = client.join(token, node, key.csr_pem)
        assert status == 202, body
        certificate = issued(client.wait_status(body["name"], token=token))
        return certificate.public_bytes(serialization.Encoding.PEM), key.key_pem

    return mgr, pki, port, join


def test_a_node_renews_over_its_current_certificate(control_plane, joined):
    mgr, pki, port, join = joined
    cert, key = join("edge61")
    client = JoinClient(port, ca_pem=pki.ca_cert, cert_pem=cert, key_pem=key)
    fresh = node_csr("edge61")
    status, body = client.renew(fresh.csr_pem)
    assert status == 202, body
    renewed = issued(client.wait_status(body["name"]))
    assert renewed.subject.rfc4514_string() == "O=system:nodes,CN=system:node:edge61"
    csr = kubectl_csr(control_plane, body["name"])
    assert [c["reason"] for c in csr["status"]["conditions"] if c["type"] == "Approved"] == ["AutoApprovedRenewal"]
    assert "edge.k8s.io/token-id" not in csr["metadata"]["annotations"]
    # a key is submitted once: the same request again is a replay
    assert client.renew(fresh.csr_pem)[0] == 409

    # a certificate renews its own node only, and reads its own CSRs only
    other_cert, other_key = join("edge62")
    other = JoinClient(port, ca_pem=pki.ca_cert, cert_pem=other_cert, key_pem=other_key)
    status, answer = other.renew(node_csr("edge61").csr_pem)
    assert status == 400 and "is not exactly CN=system:node:edge62" in answer["error"], answer
    status, answer = other.csr(body["name"])
    assert status == 403 and "is node edge61's, not edge62's" in answer["error"], answer
    # without a certificate there is no renewal
    status, answer = JoinClient(port, ca_pem=pki.ca_cert).renew(node_csr("edge61").csr_pem)
    assert status == 401 and "needs the node's current client certificate" in answer["error"], answer
    assert "refused (401)" in mgr.log()


def test_a_refused_node_loses_its_stream_at_once_and_cannot_join_or_renew(control_plane, joined, namespace):
    mgr, pki, port, join = joined
    cert, key = join("edge71")
    apply(control_plane, "edge71", namespace, {"web": "nginx"})
    credentials = sync_credentials(pki, cert, key)
    agent = FakeAgent(mgr.sync_port, "edge71", mgr.data_dir, credentials=credentials)
    try:
        wait_for(lambda: agent.acked > 0, 60, "the joined agent synced")
        control_plane.kubectl("label", "edgenode", "edge71", "-n", namespace, "edge.k8s.io/agent-refused=true")
        wait_for(lambda: agent.error, 10, "the live stream dropped")  # no heartbeat or reconnect needed
        assert agent.error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "edge.k8s.io/agent-refused=true" in agent.error.details()
    finally:
        agent.close()
    again = FakeAgent(mgr.sync_port, "edge71", mgr.data_dir, credentials=credentials)
    try:
        wait_for(lambda: again.error, 30, "a new stream refused")
        assert again.error.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        again.close()
    status, body = JoinClient(port, ca_pem=pki.ca_cert, cert_pem=cert, key_pem=key).renew(
        node_csr("edge71").csr_pem)
    assert status == 403 and "node edge71 is refused" in body["error"], body
    status, body = JoinClient(port, ca_pem=pki.ca_cert).join(put_token(control_plane), "edge71",
                                                             node_csr("edge71").csr_pem)
    assert status == 403 and "node edge71 is refused" in body["error"], body
    assert "node edge71 is refused (label edge.k8s.io/agent-refused=true" in mgr.log()
    # the refusals of authenticated requests are Warning Events on the EdgeNode too (aggregated, rate-limited)
    wait_for(lambda: [e for e in json.loads(control_plane.kubectl(
        "get", "events.events.k8s.io", "-n", namespace, "-o", "json").stdout)["items"]
        if e.get("reason") == "JoinRefused" and e["type"] == "Warning"
        and "node edge71 is refused" in e.get("note", "")], 30, "a JoinRefused Event")

    # removing the label lets it back with the certificate it has
    control_plane.kubectl("label", "edgenode", "edge71", "-n", namespace, "edge.k8s.io/agent-refused-")
    wait_for(lambda: "node edge71 is no longer refused" in mgr.log(), 30, "the refusal lifted")
    back = FakeAgent(mgr.sync_port, "edge71", mgr.data_dir, credentials=credentials)
    try:
        wait_for(lambda: back.acked > 0 or back.error, 60, "the agent back")
        assert back.error is None, back.error
    finally:
        back.close()
