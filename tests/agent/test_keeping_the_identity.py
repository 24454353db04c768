"""The agent's identity files: a key made on the node, kubeadm's CA hash, and pki/ never half-written or readable by others."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from agent import pki
from agent.pki import PkiError
from tests.kit.local_ca import NOW, LocalCa


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _issued_pem(ca: LocalCa, *, node: str = "edge01", **kw) -> tuple[bytes, object]:
    key = pki.new_key()
    return pki.agent_pem(ca.issue(key.public_key(), node=node, **kw), key), key


def test_the_request_names_the_node_like_a_kubelet_and_asks_for_nothing_else():
    key = pki.new_key()
    csr = x509.load_pem_x509_csr(pki.certificate_request(key, "edge01"))
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:edge01"
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    assert len(csr.extensions) == 0
    assert key.curve.name == "secp256r1"


def test_the_ca_hash_is_kubeadms_and_equals_openssls(tmp_path):
    ca = LocalCa()
    (tmp_path / "ca.crt").write_bytes(ca.pem)
    # README's recipe: openssl x509 -pubkey -in ca.crt | openssl pkey -pubin -outform der | sha256sum
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(tmp_path / "ca.crt")],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True,
                         check=True).stdout
    assert pki.ca_cert_hash(ca.cert) == "sha256:" + hashlib.sha256(der).hexdigest()


def test_a_joined_identity_appears_whole_with_private_modes(tmp_path):
    ca = LocalCa()
    pem, key = _issued_pem(ca)
    pki.write_identity(tmp_path, bundle_pem=ca.pem, pem=pem)
    d = tmp_path / "pki"
    assert sorted(p.name for p in d.iterdir()) == ["agent.pem", "ca.crt"]
    assert _mode(d) == 0o700 and _mode(d / "agent.pem") == 0o600 and _mode(d / "ca.crt") == 0o600
    assert not (tmp_path / ".pki-new").exists()
    identity = pki.read_identity(tmp_path, node="edge01", now=NOW)
    assert identity is not None and identity.node == "edge01"
    stored = serialization.load_pem_private_key((d / "agent.pem").read_bytes(), None)
    assert stored.private_numbers() == key.private_numbers()


def test_nothing_is_an_identity_before_one_is_written_and_a_crashed_staging_is_dropped(tmp_path):
    assert pki.read_identity(tmp_path, node="edge01", now=NOW) is None
    (tmp_path / ".pki-new").mkdir()
    (tmp_path / ".pki-new" / "ca.crt").write_bytes(LocalCa().pem)  # a join that died before its rename
    assert pki.read_identity(tmp_path, node="edge01", now=NOW) is None
    pki.remove_staging(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_renewal_replaces_the_pair_in_one_rename(tmp_path):
    ca = LocalCa()
    first, _ = _issued_pem(ca)
    pki.write_identity(tmp_path, bundle_pem=ca.pem, pem=first)
    agent_pem = tmp_path / "pki" / "agent.pem"
    inode = agent_pem.stat().st_ino
    second, key = _issued_pem(ca)
    pki.write_renewed(tmp_path, second)
    assert agent_pem.read_bytes() == second and agent_pem.stat().st_ino != inode  # renamed over, never rewritten
    assert _mode(agent_pem) == 0o600
    assert sorted(p.name for p in agent_pem.parent.iterdir()) == ["agent.pem", "ca.crt"]


def test_a_temp_name_planted_as_a_link_is_never_written_through(tmp_path):
    ca = LocalCa()
    pem, _ = _issued_pem(ca)
    pki.write_identity(tmp_path, bundle_pem=ca.pem, pem=pem)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "pki" / ".agent.pem.tmp").symlink_to(victim)
    renewed, _ = _issued_pem(ca)
    pki.write_renewed(tmp_path, renewed)
    assert victim.read_bytes() == b"keep"
    assert (tmp_path / "pki" / "agent.pem").read_bytes() == renewed


def test_rejoining_over_an_unusable_identity_replaces_both_files(tmp_path):
    old_ca, new_ca = LocalCa(), LocalCa("another CA")
    old, _ = _issued_pem(old_ca, lifetime=timedelta(minutes=1))
    pki.write_identity(tmp_path, bundle_pem=old_ca.pem, pem=old)
    new, _ = _issued_pem(new_ca)
    pki.write_identity(tmp_path, bundle_pem=new_ca.pem, pem=new)
    assert (tmp_path / "pki" / "ca.crt").read_bytes() == new_ca.pem
    assert pki.read_identity(tmp_path, node="edge01", now=NOW).not_after > NOW + timedelta(minutes=30)


def test_an_identity_from_a_ca_no_longer_pinned_is_unusable(tmp_path):
    ca = LocalCa()
    pem, _ = _issued_pem(ca)
    pki.write_identity(tmp_path, bundle_pem=ca.pem, pem=pem)
    assert pki.read_identity(tmp_path, node="edge01", now=NOW, pins=(pki.ca_cert_hash(ca.cert),)) is not None
    other = pki.ca_cert_hash(LocalCa("the new manager's CA").cert)
    with pytest.raises(PkiError, match=f"ca.crt: no CA in it matches --discovery-token-ca-cert-hash {other}"):
        pki.read_identity(tmp_path, node="edge01", now=NOW, pins=(other,))


@pytest.mark.parametrize("case, message", [
    ("expired", "the certificate expired at"),
    ("other-node", "names node edge02, not node edge01"),
    ("not-a-node", "names subject CN=system:node:edge01,O=system:masters, not node edge01"),
    ("other-ca", "not signed by the manager's CA"),
    ("other-key", "the certificate is not for this key"),
    ("no-key", "no valid unencrypted PEM private key"),
    ("no-ca", "ca.crt: No such file or directory"),
    ("loose", "private key is accessible to its group (mode 0640)"),
])
def test_an_unusable_identity_says_why_in_one_line(tmp_path, case, message):
    ca = LocalCa()
    kw = {"expired": {"not_before": NOW - timedelta(hours=2)}, "other-node": {"node": "edge02"},
          "not-a-node": {"org": "system:masters"}}.get(case, {})
    pem, key = _issued_pem(ca, **kw)
    if case == "other-ca":
        pem = pki.agent_pem(LocalCa("stranger").issue(key.public_key()), key)
    if case == "other-key":
        pem = pki.agent_pem(ca.issue(pki.new_key().public_key()), key)
    if case == "no-key":
        pem = ca.issue(key.public_key())
    pki.write_identity(tmp_path, bundle_pem=ca.pem, pem=pem)
    if case == "no-ca":
        (tmp_path / "pki" / "ca.crt").unlink()
    if case == "loose":
        os.chmod(tmp_path / "pki" / "agent.pem", 0o640)
    with pytest.raises(PkiError) as e:
        pki.read_identity(tmp_path, node="edge01", now=NOW)
    assert message in str(e.value) and "\n" not in str(e.value)
