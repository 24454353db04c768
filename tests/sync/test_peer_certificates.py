"""Under mTLS a standby must present a manager's peer certificate naming its identity; agents and managers
never pass for each other."""

from __future__ import annotations

import grpc
import pytest

from eventlog import LogStore
from manager.identity import NodeIdentity, certificate_node, certificate_peer
from manager.sync_service import ServerTls
from proto import sync_pb2 as pb
from tests.kit.builders import put
from tests.kit.fake_agents import raw_stream
from tests.kit.pki import Pki
from tests.kit.raw_follow import hello_of, peer_credentials, raw_follow
from tests.kit.servers import serving
from tests.kit.waits import run

STANDBY = "manager-1_0000abcd"


def _mtls(pki: Pki, mode: NodeIdentity = NodeIdentity.KUBELET) -> ServerTls:
    return ServerTls(cert_file=pki.server_cert, key_file=pki.server_key, client_ca_file=pki.ca, node_identity=mode)


def test_a_standby_with_its_own_peer_certificate_follows(store: LogStore, pki: Pki) -> None:
    store.append([put("edge01", "a")])

    async def scenario() -> None:
        async with serving(store, tls=_mtls(pki), replicate=True) as s, \
                raw_follow(s.address, peer_credentials(pki, STANDBY)) as standby:
            welcome = await standby.hello(hello_of(store, STANDBY))
            assert welcome.mode == pb.FollowWelcome.RESUME
            assert s.mark.standbys_in_sync == 1

    run(scenario())


@pytest.mark.parametrize(("credentials", "why"), [
    ("agent", "is an agent's or a Kubernetes user's, not a manager's"),
    ("other-manager", f"names manager other-manager, not {STANDBY}"),
    ("no-group", "is not a manager's (CN=edge.k8s.io:manager:<identity>, O=edge.k8s.io:managers)"),
    ("plain", "is not a manager's"),
])
def test_follow_without_a_peer_certificate_naming_the_standby_is_permission_denied(
    store: LogStore, pki: Pki, credentials: str, why: str
) -> None:
    creds = {
        "agent": lambda: pki.credentials("edge01"),
        "other-manager": lambda: peer_credentials(pki, "other-manager"),
        "no-group": lambda: peer_credentials(pki, "no-group", subject=f"/CN=edge.k8s.io:manager:{STANDBY}"),
        "plain": lambda: pki.credentials("plain-edge02"),
    }[credentials]()

    async def scenario() -> None:
        async with serving(store, tls=_mtls(pki), replicate=True) as s, raw_follow(s.address, creds) as standby:
            await standby.send(hello=hello_of(store, STANDBY))
            code, details, _ = await standby.ended()
            assert code == grpc.StatusCode.PERMISSION_DENIED and why in details, details
            assert s.mark.lag() == {}

    run(scenario())


@pytest.mark.parametrize("mode", [NodeIdentity.KUBELET, NodeIdentity.CN])
def test_a_peer_certificate_never_opens_an_agent_stream(store: LogStore, pki: Pki, mode: NodeIdentity) -> None:
    store.append([put("edge01", "a")])

    async def scenario() -> None:
        async with serving(store, tls=_mtls(pki, mode), replicate=True) as s, \
                raw_stream(s.address, peer_credentials(pki, STANDBY)) as agent:
            await agent.send(hello=pb.Hello(node="edge01", record_format=1))
            assert await agent.status() == grpc.StatusCode.PERMISSION_DENIED
            assert "peer certificate, not an agent's" in await agent.call.details()
            assert not s.observer.calls

    run(scenario())


def _auth(subject: str) -> dict[str, list[bytes]]:
    return {"x509_subject": [subject.encode()]}


@pytest.mark.parametrize(("subject", "identity"), [
    ("CN=edge.k8s.io:manager:m-0_1234abcd,O=edge.k8s.io:managers", "m-0_1234abcd"),
    ("CN=edge.k8s.io:manager:m,O=system:nodes", None),
    ("CN=system:node:edge01,O=edge.k8s.io:managers", None),
    ("CN=edge.k8s.io:manager:,O=edge.k8s.io:managers", None),
    ("CN=edge.k8s.io:manager:a,CN=edge.k8s.io:manager:b,O=edge.k8s.io:managers", None),
])
def test_certificate_peer_names_one_manager_and_never_an_agent(subject: str, identity: str | None) -> None:
    verdict = certificate_peer(_auth(subject))
    assert verdict.identity == identity
    assert (verdict.problem is None) == (identity is not None)


def test_certificate_node_refuses_a_peer_certificate_in_both_modes() -> None:
    auth = _auth("CN=edge.k8s.io:manager:m,O=edge.k8s.io:managers,O=system:nodes")
    for mode in NodeIdentity:
        assert certificate_node(auth, mode=mode).node is None
