"""Certificates and CA bundles are read again when their files change: rotation needs no restart (both daemons)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import grpc

from agent.sync_client import ClientTls, SyncClient
from eventlog import LogStore, ReplicaStore
from manager.sync_service import ServerTls
from tests.kit.builders import put
from tests.kit.fake_agents import raw_stream
from tests.kit.pki import Pki
from tests.kit.servers import serving
from tests.kit.waits import run, wait_until


def _replace(src: Path, dst: Path) -> None:
    """Swap a file atomically, as a Secret volume does."""
    tmp = dst.with_suffix(".new")
    shutil.copy(src, tmp)  # with its mode: keys stay private
    os.replace(tmp, dst)


def _live_copy(pki: Pki, d: Path) -> Pki:
    shutil.copytree(pki.dir, d)
    return Pki(d, d / "ca.crt", d / "server.crt", d / "server.key")


def _credentials(*, trust: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=trust.read_bytes(), private_key=key.read_bytes(),
                                        certificate_chain=cert.read_bytes())


async def _welcomed(address: str, credentials: grpc.ChannelCredentials, node: str) -> bool:
    """Whether a new connection gets a Welcome for `node`."""
    async with raw_stream(address, credentials) as st:
        try:
            await st.hello(node)
            return True
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc  # the TLS handshake failed
            return False


def test_a_rotated_server_certificate_is_used_by_the_next_connection(
    store: LogStore, pki: Pki, other_pki: Pki, tmp_path: Path
) -> None:
    live = _live_copy(pki, tmp_path / "live")
    cert, key = pki.client("edge01")
    trusts_new = _credentials(trust=other_pki.ca, cert=cert, key=key)
    trusts_old = _credentials(trust=pki.ca, cert=cert, key=key)

    async def scenario() -> None:
        tls = ServerTls(cert_file=live.server_cert, key_file=live.server_key, client_ca_file=pki.ca)
        async with serving(store, tls=tls) as s:
            assert await _welcomed(s.address, trusts_old, "edge01")
            assert not await _welcomed(s.address, trusts_new, "edge01")
            _replace(other_pki.server_key, live.server_key)
            _replace(other_pki.server_cert, live.server_cert)
            assert await _welcomed(s.address, trusts_new, "edge01")
            assert not await _welcomed(s.address, trusts_old, "edge01")
            assert s.built.tls_files.reloads == 1

    run(scenario())


def test_a_rotated_key_others_may_read_is_not_loaded(store: LogStore, pki: Pki, other_pki: Pki, tmp_path: Path) -> None:
    live = _live_copy(pki, tmp_path / "live")
    cert, key = pki.client("edge01")
    trusts_old = _credentials(trust=pki.ca, cert=cert, key=key)

    async def scenario() -> None:
        tls = ServerTls(cert_file=live.server_cert, key_file=live.server_key, client_ca_file=pki.ca)
        async with serving(store, tls=tls) as s:
            _replace(other_pki.server_cert, live.server_cert)
            _replace(other_pki.server_key, live.server_key)
            live.server_key.chmod(0o644)  # as refused at start: the old pair keeps serving
            assert await _welcomed(s.address, trusts_old, "edge01")
            assert s.built.tls_files.reloads == 0

    run(scenario())


def test_a_rotated_client_ca_bundle_is_used_by_the_next_connection(
    store: LogStore, pki: Pki, other_pki: Pki, tmp_path: Path
) -> None:
    live = _live_copy(pki, tmp_path / "live")
    old_agent = _credentials(trust=pki.ca, cert=pki.client("edge01")[0], key=pki.client("edge01")[1])
    new_agent = _credentials(trust=pki.ca, cert=other_pki.client("edge01")[0], key=other_pki.client("edge01")[1])

    async def scenario() -> None:
        tls = ServerTls(cert_file=pki.server_cert, key_file=pki.server_key, client_ca_file=live.ca)
        async with serving(store, tls=tls) as s:
            assert await _welcomed(s.address, old_agent, "edge01")
            assert not await _welcomed(s.address, new_agent, "edge01")
            _replace(other_pki.ca, live.ca)
            assert await _welcomed(s.address, new_agent, "edge01")
            assert not await _welcomed(s.address, old_agent, "edge01")

    run(scenario())


def test_the_agent_reconnects_with_its_rotated_certificate(store: LogStore, pki: Pki, tmp_path: Path) -> None:
    store.append([put("edge01", "p")])
    agent_dir = tmp_path / "agent-tls"
    agent_dir.mkdir()
    cert, key = agent_dir / "tls.crt", agent_dir / "tls.key"
    shutil.copyfile(pki.client("stranger")[0], cert)  # a certificate of another node: refused
    shutil.copyfile(pki.client("stranger")[1], key)
    replica = ReplicaStore(tmp_path / "replica", node="edge01")

    async def reconcile() -> None:
        return None

    async def scenario() -> None:
        async with serving(store, tls=ServerTls(cert_file=pki.server_cert, key_file=pki.server_key,
                                                client_ca_file=pki.ca)) as s:
            agent = SyncClient(node="edge01", addresses=[s.address], replica=replica, after_apply=reconcile,
                               tls=ClientTls(ca_file=pki.ca, cert_file=cert, key_file=key),
                               backoff_initial=0.05, backoff_max=0.2, connect_timeout=2.0)
            task = asyncio.create_task(agent.run())
            try:
                await wait_until(lambda: "PERMISSION_DENIED" in agent.last_error, what="the refusal")
                assert agent.applied_offset == 0
                _replace(pki.client("edge01")[1], key)
                _replace(pki.client("edge01")[0], cert)
                await wait_until(lambda: agent.applied_offset == 1, what="synced with the rotated certificate")
                assert s.observer.of("connected", "edge01")
            finally:
                task.cancel()

    run(scenario())
    replica.close()
