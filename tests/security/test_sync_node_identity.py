"""Identity like kubelet's: a certificate naming several nodes, or a user's certificate, syncs no node."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from loguru import logger

from agent.sync_client import ClientTls
from eventlog import LogStore
from manager.sync_service import ServerTls
from proto import sync_pb2 as pb
from tests.kit.builders import fill_node
from tests.kit.fake_agents import legit_agent_syncs, raw_stream
from tests.kit.pki import Pki
from tests.kit.servers import serving
from tests.kit.waits import run


@pytest.mark.parametrize(
    ("client", "nodes"),
    [
        ("san-edges", ["edge10", "edge11", "edge12"]),  # the certificate: DNS SANs edge10, edge11, edge12
        ("kubelet-san-edges", ["edge10", "edge11", "edge12"]),  # a kubelet CN does not make extra SANs harmless
        ("alice-masters", ["alice"]),  # CN=alice, O=system:masters from a shared CA
        ("two-cns", ["edge01", "edge02"]),
    ],
)
def test_a_certificate_not_naming_exactly_one_node_syncs_nothing(store: LogStore, pki: Pki, client: str,
                                                                 nodes: list[str], tmp_path: Path) -> None:
    for node in nodes:
        fill_node(store, node, pods=4, size=300)
    tls = ServerTls(cert_file=pki.server_cert, key_file=pki.server_key, client_ca_file=pki.ca)
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")

    async def scenario() -> None:
        async with serving(store, tls=tls) as s:
            for node in nodes * 2:  # each node twice: an agent retrying is logged once
                async with raw_stream(s.address, pki.credentials(client)) as st:
                    await st.send(hello=pb.Hello(node=node, record_format=1))
                    assert await st.status() == grpc.StatusCode.PERMISSION_DENIED
            assert s.observer.of("connected") == [] and s.observer.of("snapshot_sent") == []
            cert, key = pki.client("edge01")  # the node's own kubelet-style certificate still works
            fill_node(store, "edge01", pods=4, size=300)
            await legit_agent_syncs(s.address, store, "edge01", tmp_path / "replica",
                                    tls=ClientTls(ca_file=pki.ca, cert_file=cert, key_file=key))

    try:
        run(scenario())
    finally:
        logger.remove(sink)
    refusals = [line for line in lines if "refused (PERMISSION_DENIED)" in line]
    assert len(refusals) == len(nodes)  # once per distinct refusal, not once per try
