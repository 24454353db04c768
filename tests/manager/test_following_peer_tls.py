"""A standby's TLS to the leader: a peer certificate minted from the agent CA, or the --peer-* files.

The minted certificate names a manager exactly (`CN=edge.k8s.io:manager:<identity>`,
`O=edge.k8s.io:managers`), client auth only, signed by the agent CA, renewed at 70% of its
life; over mutual TLS the standby follows a leader that trusts the agent CA for clients, and
one without a client certificate is refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eventlog import LogStore
from manager.following import Follower
from manager.peer_tls import (
    MintedPeerCredentials,
    PeerTlsError,
    mint_peer_certificate,
    peer_channel,
    peer_credentials,
)
from manager.signing import AgentCa, load_ca
from tests.kit.builders import put
from tests.kit.files import log_records
from tests.kit.follow_leaders import FakeLeader, Following
from tests.kit.joining import JoinPki, make_join_pki
from tests.kit.waits import run, wait_until

IDENTITY = "edge-manager-1_0badcafe"


@pytest.fixture
def join_pki(tmp_path: Path) -> JoinPki:
    return make_join_pki(tmp_path / "pki")


@pytest.fixture
def agent_ca(join_pki: JoinPki) -> AgentCa:
    return load_ca(join_pki.ca_cert, join_pki.ca_key, now=datetime.now(UTC))


def test_a_minted_peer_certificate_names_the_manager_and_is_for_client_auth_only(agent_ca: AgentCa) -> None:
    now = datetime.now(UTC)
    cert_pem, key_pem = mint_peer_certificate(agent_ca, IDENTITY, seconds=3600, now=now)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert sorted((a.oid.dotted_string, a.value) for a in cert.subject) == sorted([
        (NameOID.COMMON_NAME.dotted_string, f"edge.k8s.io:manager:{IDENTITY}"),
        (NameOID.ORGANIZATION_NAME.dotted_string, "edge.k8s.io:managers"),
    ])
    assert cert.issuer == agent_ca.certificate.subject
    cert.verify_directly_issued_by(agent_ca.certificate)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_after_utc - now <= timedelta(hours=1)
    assert b"PRIVATE KEY" in key_pem and isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


@pytest.mark.parametrize("identity", ["", "m" * 45, "tab\there"])
def test_an_identity_that_cannot_be_a_common_name_is_refused_at_start(agent_ca: AgentCa, join_pki: JoinPki,
                                                                      tmp_path: Path, identity: str) -> None:
    (tmp_path / "ca.crt").write_bytes(join_pki.ca_cert)
    with pytest.raises(PeerTlsError, match="identity"):
        MintedPeerCredentials(ca_file=tmp_path / "ca.crt", agent_ca=agent_ca, identity=identity)


def test_a_minted_certificate_is_minted_again_at_70_percent_of_its_life(agent_ca: AgentCa, join_pki: JoinPki,
                                                                        tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(join_pki.ca_cert)
    now = [datetime.now(UTC)]
    creds = MintedPeerCredentials(ca_file=tmp_path / "ca.crt", agent_ca=agent_ca, identity=IDENTITY,
                                  seconds=10 * 3600, clock=lambda: now[0])
    first = creds.current()
    assert creds.mints == 1
    now[0] += timedelta(hours=6, minutes=59)
    assert creds.current() is first and creds.mints == 1
    now[0] += timedelta(minutes=2)
    assert creds.current() is not first and creds.mints == 2


def serving(join_pki: JoinPki) -> grpc.ServerCredentials:
    """The leader's TLS: its serving certificate, client certificates of the agent CA required."""
    return grpc.ssl_server_credentials([(join_pki.server_key.read_bytes(), join_pki.server_cert.read_bytes())],
                                       root_certificates=join_pki.ca_cert, require_client_auth=True)


@pytest.mark.parametrize("peer_ca_file", [True, False], ids=["peer-ca-file", "agent-ca-bundle"])
def test_a_standby_with_a_minted_certificate_follows_a_leader_that_checks_clients(
        agent_ca: AgentCa, join_pki: JoinPki, tmp_path: Path, peer_ca_file: bool) -> None:
    """Without --peer-ca-file the leader is verified with the agent CA's bundle (one CA signs managers and agents)."""
    (tmp_path / "ca.crt").write_bytes(join_pki.ca_cert)
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    leader_store.append([put("edge01", f"app{i}") for i in range(5)])
    store_dir = tmp_path / "standby" / "eventlog"
    creds = peer_credentials(ca_file=tmp_path / "ca.crt" if peer_ca_file else None, cert_file=None, key_file=None,
                             identity=IDENTITY, agent_ca=agent_ca)
    assert isinstance(creds, MintedPeerCredentials)

    async def scenario() -> FakeLeader:
        async with FakeLeader(leader_store, credentials=serving(join_pki)) as leader:
            follower = Follower(store_dir, LogStore(store_dir), identity=IDENTITY,
                                leader_address=lambda: leader.address, channel=peer_channel(creds))
            async with Following(follower) as f:
                await wait_until(lambda: follower.head_offset == 5, what="the copy over TLS")
            assert f.store is not None and log_records(f.store) == log_records(leader_store)
            return leader

    leader = run(scenario())
    subject = leader.peers[0]["x509_subject"][0].decode()
    assert subject in (f"O=edge.k8s.io:managers,CN=edge.k8s.io:manager:{IDENTITY}",
                       f"CN=edge.k8s.io:manager:{IDENTITY},O=edge.k8s.io:managers")


def test_a_standby_with_peer_files_follows_and_one_without_a_certificate_is_refused(
        agent_ca: AgentCa, join_pki: JoinPki, tmp_path: Path) -> None:
    cert_pem, key_pem = mint_peer_certificate(agent_ca, IDENTITY, seconds=3600, now=datetime.now(UTC))
    (tmp_path / "ca.crt").write_bytes(join_pki.ca_cert)
    (tmp_path / "peer.crt").write_bytes(cert_pem)
    (tmp_path / "peer.key").write_bytes(key_pem)
    (tmp_path / "peer.key").chmod(0o600)
    files = peer_credentials(ca_file=tmp_path / "ca.crt", cert_file=tmp_path / "peer.crt",
                             key_file=tmp_path / "peer.key", identity=IDENTITY, agent_ca=agent_ca)
    anonymous = peer_credentials(ca_file=tmp_path / "ca.crt", cert_file=None, key_file=None, identity=IDENTITY,
                                 agent_ca=None)
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    leader_store.append([put("edge01", "app")])

    async def scenario() -> None:
        async with FakeLeader(leader_store, credentials=serving(join_pki)) as leader:
            refused = Follower(tmp_path / "a" / "eventlog", LogStore(tmp_path / "a" / "eventlog"), identity=IDENTITY,
                               leader_address=lambda: leader.address, channel=peer_channel(anonymous),
                               backoff_initial=0.05, backoff_max=0.1, connect_timeout=2)
            async with Following(refused):
                await wait_until(lambda: refused.reconnects >= 2, what="refusals")
            assert refused.head_offset == 0 and not leader.hellos
            follower = Follower(tmp_path / "b" / "eventlog", LogStore(tmp_path / "b" / "eventlog"), identity=IDENTITY,
                                leader_address=lambda: leader.address, channel=peer_channel(files))
            async with Following(follower):
                await wait_until(lambda: follower.head_offset == 1, what="the copy over TLS")

    run(scenario())
