"""Under mTLS a client certificate names exactly one node, as kubelet's does; an agent may stream only that node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from agent.sync_client import ClientTls, SyncClient
from eventlog import LogStore, ReplicaStore
from manager.identity import NodeIdentity, certificate_node, subject_attributes
from manager.sync_service import ServerTls
from proto import sync_pb2 as pb
from tests.kit.builders import put
from tests.kit.fake_agents import raw_stream
from tests.kit.pki import Pki
from tests.kit.servers import serving
from tests.kit.waits import run, wait_until


def _server_tls(pki: Pki, *, require_clients: bool = True, mode: NodeIdentity = NodeIdentity.KUBELET) -> ServerTls:
    return ServerTls(cert_file=pki.server_cert, key_file=pki.server_key,
                     client_ca_file=pki.ca if require_clients else None, node_identity=mode)


@pytest.mark.parametrize(
    ("client", "node", "mode"),
    [("edge01", "edge01", NodeIdentity.KUBELET), ("plain-edge02", "edge02", NodeIdentity.CN)],
)
def test_own_node_is_served(store: LogStore, pki: Pki, client: str, node: str, mode: NodeIdentity) -> None:
    store.append([put(node, "p")])

    async def scenario() -> None:
        async with serving(store, tls=_server_tls(pki, mode=mode)) as s, \
                raw_stream(s.address, pki.credentials(client)) as st:
            welcome = await st.hello(node)
            assert welcome.mode == pb.Welcome.SNAPSHOT
            last, entries = await st.read_snapshot()
            assert [e.name for e in entries] == ["p"]
            assert s.observer.of("connected", node)

    run(scenario())


@pytest.mark.parametrize(
    ("client", "node", "mode", "why"),
    [
        ("edge01", "edge02", NodeIdentity.KUBELET, "names node edge01, not edge02"),
        ("stranger", "edge01", NodeIdentity.KUBELET, "names node stranger, not edge01"),
        ("plain-edge02", "edge02", NodeIdentity.KUBELET, "is not system:node:<node name>"),
        ("no-org-edge01", "edge01", NodeIdentity.KUBELET, "lacks O=system:nodes"),
        ("alice-masters", "alice", NodeIdentity.KUBELET, "is not system:node:<node name>"),
        ("alice-masters", "alice", NodeIdentity.CN, "system: name"),
        ("edge01", "edge01", NodeIdentity.CN, "system: name"),
        ("san-edges", "edge10", NodeIdentity.KUBELET, "is not system:node:<node name>"),
        ("san-edges", "some-agent", NodeIdentity.CN, "names other nodes too"),
        ("kubelet-san-edges", "edge10", NodeIdentity.KUBELET, "names other nodes too"),
        ("kubelet-san-edges", "edge11", NodeIdentity.KUBELET, "names other nodes too"),
        ("two-cns", "edge01", NodeIdentity.KUBELET, "2 common names"),
        ("two-cns", "edge02", NodeIdentity.KUBELET, "2 common names"),
    ],
)
def test_a_certificate_not_naming_exactly_this_node_is_permission_denied(
    store: LogStore, pki: Pki, client: str, node: str, mode: NodeIdentity, why: str
) -> None:
    store.append([put(node, "secret")])

    async def scenario() -> None:
        async with serving(store, tls=_server_tls(pki, mode=mode)) as s, \
                raw_stream(s.address, pki.credentials(client)) as st:
            await st.send(hello=pb.Hello(node=node, record_format=1))
            assert await st.status() == grpc.StatusCode.PERMISSION_DENIED
            assert why in await st.call.details()
            assert not s.observer.of("connected")

    run(scenario())


def test_no_client_certificate_is_refused(store: LogStore, pki: Pki) -> None:
    async def scenario() -> None:
        async with serving(store, tls=_server_tls(pki)) as s, raw_stream(s.address, pki.credentials(None)) as st:
            with pytest.raises((grpc.aio.AioRpcError, AssertionError)) as info:
                await st.send(hello=pb.Hello(node="edge01", record_format=1))
                await st.read(timeout=10)
            if isinstance(info.value, grpc.aio.AioRpcError):
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert not s.observer.of("connected")

    run(scenario())


def test_server_tls_without_client_ca_serves_any_node(store: LogStore, pki: Pki) -> None:
    """The sync service alone: edge-manager refuses this set-up without --allow-unauthenticated-agents."""
    async def scenario() -> None:
        tls = _server_tls(pki, require_clients=False)
        async with serving(store, tls=tls) as s, raw_stream(s.address, pki.credentials(None)) as st:
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


# -- the rule itself, over auth contexts as gRPC hands them over -----------------------------------


def _auth(subject: str, *dns: str) -> dict[str, list[bytes]]:
    return {"x509_subject": [subject.encode()], "peer_dns": [d.encode() for d in dns]}


@pytest.mark.parametrize(
    ("subject", "dns", "mode", "node"),
    [
        ("O=system:nodes,CN=system:node:edge01", (), NodeIdentity.KUBELET, "edge01"),
        ("CN=system:node:edge01,O=system:nodes", ("edge01",), NodeIdentity.KUBELET, "edge01"),
        ("CN=system:node:edge01+O=system:nodes", (), NodeIdentity.KUBELET, "edge01"),
        ("O=system:nodes,O=team-a,CN=system:node:a.b", (), NodeIdentity.KUBELET, "a.b"),
        # an escaped comma is part of the CN: no O, and no valid node name
        ("CN=system:node:edge01\\,O=system:nodes", (), NodeIdentity.KUBELET, None),
        ("O=system:nodes\\, CN=system:node:edge01", (), NodeIdentity.KUBELET, None),
        ("O=system:masters,CN=alice", (), NodeIdentity.KUBELET, None),
        ("O=system:nodes,CN=system:node:Edge01", (), NodeIdentity.KUBELET, None),
        ("O=system:nodes,CN=system:node:", (), NodeIdentity.KUBELET, None),
        ("O=system:nodes,CN=system:node:" + "a" * 254, (), NodeIdentity.KUBELET, None),
        ("CN=edge02", (), NodeIdentity.CN, "edge02"),
        ("CN=edge02", (), NodeIdentity.KUBELET, None),
        ("O=system:masters,CN=alice", (), NodeIdentity.CN, None),
        ("CN=system:node:edge02", (), NodeIdentity.CN, None),
        ("CN=edge02,CN=edge03", (), NodeIdentity.CN, None),
        ("CN=edge02", ("edge03",), NodeIdentity.CN, None),
        ("", (), NodeIdentity.CN, None),
    ],
)
def test_certificate_node_rule(subject: str, dns: tuple[str, ...], mode: NodeIdentity, node: str | None) -> None:
    verdict = certificate_node(_auth(subject, *dns), mode=mode)
    assert verdict.node == node
    assert (verdict.problem is None) == (node is not None)


def test_subject_attributes_undo_rfc2253_escapes() -> None:
    assert subject_attributes("CN=a\\,b,O=x\\2By") == [("CN", "a,b"), ("O", "x+y")]
