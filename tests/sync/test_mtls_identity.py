"""Under mTLS an agent may stream only the node its client certificate names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from sync_helpers import Pki, put, raw_stream, run, serving, wait_until

from agent.sync_client import ClientTls, SyncClient
from eventlog import LogStore, ReplicaStore
from manager.sync_service import ServerTls
from proto import sync_pb2 as pb


def _server_tls(pki: Pki, *, require_clients: bool = True) -> ServerTls:
    return ServerTls(cert_file=pki.server_cert, key_file=pki.server_key,
                     client_ca_file=pki.ca if require_clients else None)


def _credentials(pki: Pki, client: str | None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    cert, key = pki.client(client)
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(), private_key=key.read_bytes(), certificate_chain=cert.read_bytes()
    )


@pytest.mark.parametrize(
    ("client", "node"),
    [("edge01", "edge01"), ("kubelet-edge02", "edge02"), ("san-edge03", "edge03"), ("san-edge03", "edge03.example")],
)
def test_own_node_is_served(store: LogStore, pki: Pki, client: str, node: str) -> None:
    store.append([put(node, "p")])

    async def scenario() -> None:
        async with serving(store, tls=_server_tls(pki)) as s, raw_stream(s.address, _credentials(pki, client)) as st:
            welcome = await st.hello(node)
            assert welcome.mode == pb.Welcome.SNAPSHOT
            last, entries = await st.read_snapshot()
            assert [e.name for e in entries] == ["p"]
            assert s.observer.of("connected", node)

    run(scenario())


@pytest.mark.parametrize(
    ("client", "node"),
    [("edge01", "edge02"), ("kubelet-edge02", "edge01"), ("san-edge03", "edge04"), ("stranger", "edge01")],
)
def test_another_nodes_hello_is_permission_denied(store: LogStore, pki: Pki, client: str, node: str) -> None:
    store.append([put(node, "secret")])  # (a CN also counts as a node name: CN=some-agent may stream some-agent)

    async def scenario() -> None:
        async with serving(store, tls=_server_tls(pki)) as s, raw_stream(s.address, _credentials(pki, client)) as st:
            await st.send(hello=pb.Hello(node=node, record_format=1))
            assert await st.status() == grpc.StatusCode.PERMISSION_DENIED
            assert not s.observer.of("connected")

    run(scenario())


def test_no_client_certificate_is_refused(store: LogStore, pki: Pki) -> None:
    async def scenario() -> None:
        async with serving(store, tls=_server_tls(pki)) as s, raw_stream(s.address, _credentials(pki, None)) as st:
            with pytest.raises((grpc.aio.AioRpcError, AssertionError)) as info:
                await st.send(hello=pb.Hello(node="edge01", record_format=1))
                await st.read(timeout=10)
            if isinstance(info.value, grpc.aio.AioRpcError):
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert not s.observer.of("connected")

    run(scenario())


def test_server_tls_without_client_ca_serves_any_node(store: LogStore, pki: Pki) -> None:
    async def scenario() -> None:
        tls = _server_tls(pki, require_clients=False)
        async with serving(store, tls=tls) as s, raw_stream(s.address, _credentials(pki, None)) as st:
            welcome = await st.hello("edge05")
            assert welcome.mode == pb.Welcome.SNAPSHOT

    run(scenario())


@pytest.mark.parametrize(("client", "node", "works"), [("edge01", "edge01", True), ("stranger", "edge01", False),
                                                       (None, "edge01", False)])
def test_sync_client_over_mtls(store: LogStore, pki: Pki, tmp_path: Path, client: str | None, node: str,
                               works: bool) -> None:
    store.append([put(node, "p")])
    replica = ReplicaStore(tmp_path / "replica", node=node)
    cert, key = pki.client(client) if client else (None, None)

    async def reconcile() -> None:
        return None

    async def scenario() -> None:
        async with serving(store, tls=_server_tls(pki)) as s:
            agent = SyncClient(node=node, addresses=[s.address], replica=replica, after_apply=reconcile,
                               tls=ClientTls(ca_file=pki.ca, cert_file=cert, key_file=key),
                               backoff_initial=0.05, backoff_max=0.2, connect_timeout=2.0)
            task = asyncio.create_task(agent.run())
            try:
                if works:
                    await wait_until(lambda: agent.applied_offset == 1, what="synced over mTLS")
                else:
                    await wait_until(lambda: agent.reconnects >= 1, what="refusal")
                    assert agent.applied_offset == 0 and not s.observer.of("connected")
                    expected = "PERMISSION_DENIED" if client else "UNAVAILABLE"
                    assert expected in agent.last_error
            finally:
                task.cancel()

    run(scenario())
    replica.close()
