"""Joining for tests: a small join client and PKI for the manager's joining tests (the product client is the agent's).

- ``make_join_pki(dir)``: an agent CA and a serving certificate for 127.0.0.1/localhost it signs
  (the documented setup: one CA, so the discovery bundle verifies the manager).
- ``put_ca_secret(cp, pki)``, ``put_token(cp, ...)``: the CA Secret and bootstrap-token Secrets
  through kubectl, as an operator makes them.
- ``node_csr(node)``: a fresh key and its PEM request (subject overridable to make bad ones).
- ``JoinClient(port, ...)``: HTTPS+JSON requests to the join listener, verifying the manager
  with the CA (or not, for discovery), optionally with a client certificate (renewal).
- ``start_joining_manager(...)``: edge-manager with joining on, its join port parsed from the log.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import ssl
import string
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.kit.waits import wait_for


CA_NAMESPACE, CA_NAME = "k8s-edge", "edge-agent-ca"
_JOIN_PORT = re.compile(r"join server at \S*:(\d+) \(")
_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class JoinPki:
    """The agent CA (PEM) and the manager's serving certificate files it signed."""

    ca_cert: bytes
    ca_key: bytes
    server_cert: Path
    server_key: Path


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_join_pki(d: Path, *, cn: str = "k8s-edge agent CA") -> JoinPki:
    """A CA and a serving certificate for 127.0.0.1 and localhost signed by it."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
          .not_valid_after(now + timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-manager")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                          x509.IPAddress(ip_address("127.0.0.1"))]), critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    d.mkdir(parents=True, exist_ok=True)
    (d / "server.crt").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(_pem_key(key))
    (d / "server.key").chmod(0o600)
    return JoinPki(ca.public_bytes(serialization.Encoding.PEM), _pem_key(ca_key), d / "server.crt", d / "server.key")


def put_ca_secret(cp: Any, pki: JoinPki, *, namespace: str = CA_NAMESPACE, name: str = CA_NAME) -> None:
    """kubectl create secret tls (replacing one of that name)."""
    cp.kubectl("create", "namespace", namespace, check=False)
    cp.kubectl("delete", "secret", name, "-n", namespace, "--ignore-not-found")
    with tempfile.TemporaryDirectory() as t:
        (Path(t) / "ca.crt").write_bytes(pki.ca_cert)
        (Path(t) / "ca.key").write_bytes(pki.ca_key)
        cp.kubectl("create", "secret", "tls", name, "-n", namespace, f"--cert={t}/ca.crt", f"--key={t}/ca.key")


def new_token() -> tuple[str, str]:
    """A fresh (token-id, token-secret)."""
    return ("".join(secrets.choice(_ALPHABET) for _ in range(6)),
            "".join(secrets.choice(_ALPHABET) for _ in range(16)))


def put_token(cp: Any, *, expires_in: timedelta | None = timedelta(hours=1), authentication: bool = True,
              node: str | None = None, token: tuple[str, str] | None = None) -> str:
    """A bootstrap-token Secret in kube-system as kubeadm makes it (kubectl apply); returns '<id>.<secret>'."""
    tid, tsecret = token or new_token()
    data = {"token-id": tid, "token-secret": tsecret, "description": "k8s-edge test"}
    if expires_in is not None:
        data["expiration"] = (datetime.now(UTC) + expires_in).strftime("%Y-%m-%dT%H:%M:%SZ")
    if authentication:
        data["usage-bootstrap-authentication"] = "true"
    meta: dict[str, Any] = {"name": f"bootstrap-token-{tid}", "namespace": "kube-system"}
    if node is not None:
        meta["annotations"] = {"edge.k8s.io/node": node}
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                                                      "type": "bootstrap.kubernetes.io/token", "stringData": data}))
    return f"{tid}.{tsecret}"


@dataclass(frozen=True)
class NodeKey:
    """A private key (PEM) and a CSR (PEM) made with it."""

    key_pem: bytes
    csr_pem: str


def node_csr(node: str, *, cn: str | None = None, org: str | None = "system:nodes", san: str | None = None,
             key: Any = None) -> NodeKey:
    """A fresh P-256 key and its request for CN=system:node:<node>, O=system:nodes (or what is given)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn if cn is not None else f"system:node:{node}")]
    if org is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    return NodeKey(_pem_key(key), csr.public_bytes(serialization.Encoding.PEM).decode())


class JoinClient:
    """HTTPS+JSON to the join listener at 127.0.0.1:port."""

    def __init__(self, port: int, *, ca_pem: bytes | None, cert_pem: bytes | None = None,
                 key_pem: bytes | None = None) -> None:
        self.port = port
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if ca_pem is None:  # discovery: nothing to verify with yet
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.load_verify_locations(cadata=ca_pem.decode())
        if cert_pem is not None and key_pem is not None:
            with tempfile.NamedTemporaryFile() as f:
                f.write(cert_pem + key_pem)
                f.flush()
                ctx.load_cert_chain(f.name)
        self._ctx = ctx

    def request(self, method: str, path: str, *, token: str | None = None, body: Any = None,
                raw: bytes | None = None, declared_length: int | None = None) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of one request; with declared_length, its headers only, announcing that body."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self._ctx, timeout=30)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            if declared_length is None:
                conn.request(method, path, body=data, headers=headers)
            else:  # a large body is refused unread: sending it would meet a closed connection
                conn.putrequest(method, path)
                for k, v in {**headers, "Content-Length": str(declared_length)}.items():
                    conn.putheader(k, v)
                conn.endheaders()
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def discovery(self) -> tuple[int, dict[str, Any]]:
        return self.request("GET", "/v1/discovery")

    def join(self, token: str | None, node: str, csr_pem: str) -> tuple[int, dict[str, Any]]:
        return self.request("POST", "/v1/join", token=token, body={"node": node, "csr": csr_pem})

    def renew(self, csr_pem: str) -> tuple[int, dict[str, Any]]:
        return self.request("POST", "/v1/renew", body={"csr": csr_pem})

    def csr(self, name: str, *, token: str | None = None) -> tuple[int, dict[str, Any]]:
        return self.request("GET", f"/v1/csr/{name}", token=token)

    def wait_status(self, name: str, *, token: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """Poll the CSR each second (as the agent does) until it is no longer Pending."""
        def done() -> dict[str, Any] | None:
            status, body = self.csr(name, token=token)
            assert status == 200, (status, body)
            return body if body["status"] != "Pending" else None
        return wait_for(done, timeout, f"CSR {name} decided", interval=1.0)


def join_port(log: str) -> int:
    """The join listener's port from the manager's log."""
    m = _JOIN_PORT.search(log)
    assert m, log[-3000:]
    return int(m.group(1))


def joining_args(pki: JoinPki, *extra: str) -> list[str]:
    """edge-manager flags for TLS with the agent CA and joining on a free port."""
    return ["--tls-cert-file", str(pki.server_cert), "--tls-private-key-file", str(pki.server_key),
            "--agent-ca-secret", f"{CA_NAMESPACE}/{CA_NAME}", "--join-server", "127.0.0.1:0", *extra]


def sync_credentials(pki: JoinPki, cert_pem: bytes, key_pem: bytes) -> grpc.ChannelCredentials:
    """gRPC client credentials of a joined agent: the discovered CA and its issued certificate."""
    return grpc.ssl_channel_credentials(root_certificates=pki.ca_cert, private_key=key_pem,
                                        certificate_chain=cert_pem)


def issued(body: dict[str, Any]) -> x509.Certificate:
    """The certificate of an Issued answer."""
    assert body["status"] == "Issued", body
    return x509.load_pem_x509_certificate(body["certificate"].encode())


def kubectl_csr(cp: Any, name: str) -> dict[str, Any]:
    """The CSR object as kubectl shows it."""
    return json.loads(cp.kubectl("get", "csr", name, "-o", "json").stdout)


def csr_condition_types(cp: Any, name: str) -> list[str]:
    """The CSR's condition types (Approved, Denied, Failed)."""
    return [c["type"] for c in (kubectl_csr(cp, name).get("status") or {}).get("conditions") or []]
