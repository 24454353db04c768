"""The Follower against the manager's own Follow service (manager/replication.py), not a fake.

A standby copies the store, follows appends in many small batches and chunks, and its acks put
it in the leader's in-sync set; a restarted standby resumes; a diverged one is replaced by a
copy; a manager that does not lead sends it on to the leader; over mutual TLS a peer
certificate minted from the agent CA is accepted as that manager (identity.certificate_peer).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from eventlog import LogStore
from manager.following import Follower
from manager.identity import certificate_peer
from manager.peer_tls import mint_peer_certificate, peer_channel, peer_credentials
from manager.replication import FollowSettings
from manager.signing import load_ca
from manager.sync_service import ServerTls
from tests.kit.builders import put
from tests.kit.files import log_records
from tests.kit.follow_leaders import Following
from tests.kit.joining import make_join_pki
from tests.kit.servers import Leader, serving
from tests.kit.waits import run, wait_until

IDENTITY = "edge-manager-1_0badcafe"
SMALL = FollowSettings(batch_records=7, window_records=20, chunk_bytes=4096)  # many batches, acks and chunks


def standby(store_dir: Path, address: str, **options: object) -> Follower:
    return Follower(store_dir, LogStore(store_dir), identity=IDENTITY, leader_address=lambda: address,
                    channel=peer_channel(None), backoff_initial=0.05, backoff_max=0.2, **options)


def appends(n: int, *, node: str = "edge01", rev: int = 0) -> list:
    return [put(node, f"app{i:03d}", rev) for i in range(n)]


def test_a_standby_copies_follows_and_holds_the_high_water_mark(tmp_path: Path) -> None:
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    leader_store.append(appends(100, rev=0))
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> LogStore:
        async with serving(leader_store, replicate=True, follow_settings=SMALL) as s:
            follower = standby(store_dir, s.address)
            async with Following(follower) as f:
                await wait_until(lambda: follower.copies == 1 and s.mark.standbys_in_sync == 1, what="in sync")
                for rev in range(1, 4):
                    s.append(appends(50, rev=rev))
                    s.append(appends(5, node=f"edge{rev:02d}", rev=rev))
                head = leader_store.head_offset
                await wait_until(lambda: follower.head_offset == head and s.mark.visible() == head,
                                 what="every append acknowledged")
                assert s.mark.standbys_in_sync == 1 and s.mark.lag() == {IDENTITY: 0}
            assert f.store is not None
            return f.store

    store = run(scenario())
    assert store.log_id == leader_store.log_id
    assert log_records(store) == log_records(leader_store)


def test_a_restarted_standby_resumes_and_a_diverged_one_gets_a_copy(tmp_path: Path) -> None:
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    leader_store.append(appends(30))
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> LogStore:
        async with serving(leader_store, replicate=True, follow_settings=SMALL) as s:
            first = standby(store_dir, s.address)
            async with Following(first) as f:
                await wait_until(lambda: first.head_offset == 30, what="the copy")
            assert f.store is not None
            f.store.close()
            s.append(appends(30, rev=1))
            second = standby(store_dir, s.address)
            async with Following(second) as g:
                await wait_until(lambda: second.head_offset == 60, what="the resume")
            assert second.copies == 0
            assert g.store is not None
            g.store.append(appends(4, node="deposed"))  # a tail the leader never had
            third = Follower(store_dir, g.store, identity=IDENTITY, leader_address=lambda: s.address,
                             channel=peer_channel(None), backoff_initial=0.05, backoff_max=0.2)
            async with Following(third) as h:
                await wait_until(lambda: third.copies == 1 and third.head_offset == 60, what="the copy")
            assert h.store is not None
            return h.store

    store = run(scenario())
    assert log_records(store) == log_records(leader_store)


def test_a_manager_that_does_not_lead_sends_the_standby_to_the_leader(tmp_path: Path) -> None:
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    leader_store.append(appends(10))
    other_store = LogStore(tmp_path / "other" / "eventlog")
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> None:
        async with serving(leader_store, replicate=True) as s, \
                serving(other_store, replicate=True, leadership=Leader(leads=False, address=s.address)) as other:
            follower = standby(store_dir, other.address)
            async with Following(follower):
                await wait_until(lambda: follower.head_offset == 10, what="the leader followed")
            assert follower.redirects >= 1 and follower.address == s.address

    run(scenario())


def test_a_minted_peer_certificate_is_a_manager_to_a_leader_that_checks_clients(tmp_path: Path) -> None:
    pki = make_join_pki(tmp_path / "pki")
    agent_ca = load_ca(pki.ca_cert, pki.ca_key, now=datetime.now(UTC))
    (tmp_path / "ca.crt").write_bytes(pki.ca_cert)
    cert_pem, _ = mint_peer_certificate(agent_ca, IDENTITY, seconds=3600, now=datetime.now(UTC))
    subject = x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string()  # as gRPC's auth context has it
    assert certificate_peer({"x509_subject": [subject.encode()]}).identity == IDENTITY

    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    leader_store.append(appends(5))
    tls = ServerTls(cert_file=pki.server_cert, key_file=pki.server_key, agent_ca_pem=agent_ca.certificate_pem)
    credentials = peer_credentials(ca_file=tmp_path / "ca.crt", cert_file=None, key_file=None, identity=IDENTITY,
                                   agent_ca=agent_ca)
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> None:
        async with serving(leader_store, tls=tls, replicate=True) as s:
            follower = Follower(store_dir, LogStore(store_dir), identity=IDENTITY,
                                leader_address=lambda: f"localhost:{s.port}", channel=peer_channel(credentials))
            async with Following(follower):
                await wait_until(lambda: follower.head_offset == 5 and s.mark.standbys_in_sync == 1,
                                 what="the standby in sync over mutual TLS")

    run(scenario())
