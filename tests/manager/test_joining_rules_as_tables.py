"""The pure checks behind joining, as tables: bootstrap tokens against their Secrets, CSRs, refusals.

The same rules are proven against the real API server and manager in
test_joining_with_a_token.py; these tables pin each rule's edge alone.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from manager.bootstrap_tokens import Refusal, Token, check_token, parse_token
from manager.refusals import NodeRefusals
from manager.signing import CaError, CsrProblem, check_request, csr_object_name, lifetime_text, load_ca, sign
from tests.kit.joining import make_join_pki, node_csr

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
TOKEN = Token("abcdef", "0123456789abcdef")


def secret(*, expiration: str | None = "2026-12-03T08:00:00Z", auth: str | None = "true", node: str | None = None,
           token_secret: str = "0123456789abcdef", kind: str = "bootstrap.kubernetes.io/token") -> dict:
    data = {"token-id": "abcdef", "token-secret": token_secret, "expiration": expiration,
            "usage-bootstrap-authentication": auth}
    meta = {"name": "bootstrap-token-abcdef", "namespace": "kube-system"}
    if node:
        meta["annotations"] = {"edge.k8s.io/node": node}
    return {"type": kind, "metadata": meta,
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items() if v is not None}}


@pytest.mark.parametrize(("stored", "node", "refusal", "says"), [
    (secret(), "edge01", None, ""),
    (secret(expiration=None), "edge01", None, ""),  # no expiration: valid until deleted, as kubeadm's --ttl 0
    (secret(node="edge01"), "edge01", None, ""),
    (secret(node="edge01"), None, None, ""),  # reading a CSR: the node comes from the CSR
    (None, "edge01", Refusal.UNKNOWN, "unknown bootstrap token abcdef"),
    (secret(kind="Opaque"), "edge01", Refusal.UNKNOWN, "unknown"),
    (secret(token_secret="fedcba9876543210"), "edge01", Refusal.WRONG_SECRET, "wrong secret"),
    (secret(expiration="2026-12-02T08:00:00Z"), "edge01", Refusal.EXPIRED, "has expired at 2026-12-02T08:00:00Z"),
    (secret(expiration="tomorrow"), "edge01", Refusal.EXPIRED, "unreadable expiration"),
    (secret(auth=None), "edge01", Refusal.NOT_FOR_AUTHENTICATION, "is not for authentication"),
    (secret(auth="false"), "edge01", Refusal.NOT_FOR_AUTHENTICATION, "is not for authentication"),
    (secret(node="edge02"), "edge01", Refusal.OTHER_NODE, "is bound to node edge02, not edge01"),
])
def test_a_token_is_checked_against_its_secret(stored, node, refusal, says):
    verdict = check_token(TOKEN, stored, now=NOW, node=node)
    assert verdict.refusal is refusal and says in verdict.message
    assert TOKEN.secret not in verdict.message and TOKEN.secret not in repr(TOKEN)


def test_refusal_statuses_say_unauthenticated_or_forbidden():
    assert {r: r.status for r in Refusal} == {
        Refusal.MALFORMED: 401, Refusal.UNKNOWN: 401, Refusal.WRONG_SECRET: 401, Refusal.EXPIRED: 401,
        Refusal.NOT_FOR_AUTHENTICATION: 403, Refusal.OTHER_NODE: 403}


@pytest.mark.parametrize(("text", "parsed"), [
    ("abcdef.0123456789abcdef", TOKEN),
    (" abcdef.0123456789abcdef\n", TOKEN),  # a token file's newline
    ("ABCDEF.0123456789abcdef", None),
    ("abcdef:0123456789abcdef", None),
    ("abcdef.0123456789abcde", None),
    ("", None),
])
def test_a_token_string_is_six_dot_sixteen(text, parsed):
    assert parse_token(text) == parsed


def _csr(subject: list[tuple], key=None, extensions=()) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(oid, value) for oid, value in subject]))
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


KUBELET = [(NameOID.COMMON_NAME, "system:node:edge01"), (NameOID.ORGANIZATION_NAME, "system:nodes")]


@pytest.mark.parametrize(("pem", "node", "says"), [
    (lambda: _csr(KUBELET), "edge01", None),
    (lambda: _csr(KUBELET[::-1]), "edge01", None),  # attribute order is not identity
    (lambda: _csr(KUBELET, key=rsa.generate_private_key(65537, 2048)), "edge01", None),
    (lambda: _csr(KUBELET, key=ec.generate_private_key(ec.SECP384R1())), "edge01", None),
    (lambda: _csr(KUBELET), "edge02", "is not exactly CN=system:node:edge02"),
    (lambda: _csr(KUBELET), "Edge_01", "invalid node name"),
    (lambda: _csr(KUBELET[:1]), "edge01", "is not exactly"),
    (lambda: _csr([*KUBELET, (NameOID.ORGANIZATION_NAME, "system:masters")]), "edge01", "is not exactly"),
    (lambda: _csr([*KUBELET, (NameOID.ORGANIZATIONAL_UNIT_NAME, "x")]), "edge01", "is not exactly"),
    (lambda: _csr(KUBELET, extensions=[x509.SubjectAlternativeName([x509.DNSName("edge02")])]), "edge01",
     "requests extensions (subjectAltName)"),
    (lambda: _csr(KUBELET, key=rsa.generate_private_key(65537, 1024)), "edge01", "1024 bits"),
    (lambda: _csr(KUBELET, key=ec.generate_private_key(ec.SECP521R1())), "edge01", "use P-256 or P-384"),
    (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "edge01",
     "not a PEM CERTIFICATE REQUEST"),
    (lambda: _tampered(), "edge01", "signature does not verify"),
])
def test_a_csr_names_exactly_its_node_with_a_sound_key(pem, node, says):
    if says is None:
        assert sorted(a.value for a in check_request(pem(), node=node).subject) == ["system:node:edge01",
                                                                                   "system:nodes"]
    else:
        with pytest.raises(CsrProblem) as refused:
            check_request(pem(), node=node)
        assert says in str(refused.value)


def _tampered() -> bytes:
    """A CSR whose signature was made over other bytes: its signature's last bytes changed."""
    der = bytearray(x509.load_pem_x509_csr(_csr(KUBELET)).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x55
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(bytes(der)) + \
        b"-----END CERTIFICATE REQUEST-----\n"


def test_a_csr_object_name_is_the_node_and_its_key():
    node = "edge-" + "a" * 47  # the longest node a CN of at most 64 characters can name (X.509's bound)
    csr = check_request(node_csr(node).csr_pem.encode(), node=node)
    name = csr_object_name(node, csr)
    assert name.startswith(f"edge-agent-{node}-") and len(name) == len(f"edge-agent-{node}-") + 10
    assert csr_object_name(node, check_request(node_csr(node).csr_pem.encode(), node=node)) != name


def test_the_ca_must_be_a_ca_with_its_key(tmp_path):
    pki = make_join_pki(tmp_path)
    ca = load_ca(pki.ca_cert, pki.ca_key, now=datetime.now(UTC))
    other = make_join_pki(tmp_path / "other")
    with pytest.raises(CaError, match="tls.key is not the key of the first certificate"):
        load_ca(pki.ca_cert, other.ca_key, now=datetime.now(UTC))
    with pytest.raises(CaError, match="is not a CA"):
        load_ca(pki.server_cert.read_bytes(), pki.server_key.read_bytes(), now=datetime.now(UTC))
    with pytest.raises(CaError, match="expired at"):
        load_ca(pki.ca_cert, pki.ca_key, now=datetime.now(UTC) + timedelta(days=365))
    # an issued certificate never outlives its CA
    csr = check_request(node_csr("edge01").csr_pem.encode(), node="edge01")
    cert = x509.load_pem_x509_certificate(sign(ca, csr, seconds=10 * 365 * 86400, now=datetime.now(UTC)))
    assert cert.not_valid_after_utc == ca.certificate.not_valid_after_utc


@pytest.mark.parametrize(("seconds", "text"), [(31536000, "8760h"), (1800, "30m"), (20, "20s"), (90, "90s"),
                                               (0.5, "0.5s")])
def test_a_lifetime_is_logged_as_the_flag_spells_it(seconds, text):
    assert lifetime_text(seconds) == text


def test_a_node_is_refused_while_any_edgenode_of_its_name_is_labelled():
    def edgenode(ns: str, name: str, refused: bool) -> dict:
        labels = {"edge.k8s.io/agent-refused": "true"} if refused else {"edge.k8s.io/agent-refused": "false"}
        return {"metadata": {"namespace": ns, "name": name, "labels": labels}}

    r = NodeRefusals()
    assert not r.known.is_set()  # joins wait for the first list (503), so a refused node cannot slip in
    change = r.listed([edgenode("a", "edge01", True), edgenode("b", "edge01", False), edgenode("a", "edge02", False)])
    assert change.refused == {"edge01"} and not change.allowed and r.is_refused("edge01") and r.known.is_set()
    assert not r.changed("MODIFIED", edgenode("b", "edge01", True))  # still refused: nothing changes
    assert not r.changed("MODIFIED", edgenode("a", "edge01", False))  # b still says so
    change = r.changed("DELETED", edgenode("b", "edge01", True))
    assert change.allowed == {"edge01"} and not r.is_refused("edge01")
    assert r.changed("ADDED", edgenode("c", "edge02", True)).refused == {"edge02"}
    assert r.listed([]).allowed == {"edge02"}
