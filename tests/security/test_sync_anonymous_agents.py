"""No anonymous agents: TLS without a client CA does not start unless explicitly allowed; an anonymous client gets nothing."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from agent.sync_client import ClientTls
from eventlog import LogStore
from manager.sync_service import ServerTls
from proto import sync_pb2 as pb
from tests.kit.builders import fill_node
from tests.kit.fake_agents import legit_agent_syncs, raw_stream
from tests.kit.manager import ManagerProcess
from tests.kit.pki import Pki
from tests.kit.processes import one_error_line, run_manager
from tests.kit.servers import serving
from tests.kit.waits import run


def test_tls_without_a_client_ca_refuses_to_start(pki: Pki, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with LogStore(data / "eventlog") as s:
        fill_node(s, "edge11", pods=3, size=200)
        before = s.info()
    res = run_manager("--tls-cert-file", str(pki.server_cert), "--tls-private-key-file", str(pki.server_key),
                      "--sync-server", "127.0.0.1:0", "--metrics-addr", "", "--kubeconfig", "/nonexistent",
                      data_dir=data)
    assert res.returncode == 2
    line = one_error_line(res.stderr)
    assert "--client-ca-file" in line and "--allow-unauthenticated-agents" in line
    with LogStore(data / "eventlog", readonly=True) as s:  # nothing lost, nothing touched
        assert (s.info().head_offset, s.info().log_id) == (before.head_offset, before.log_id)


def test_allowing_unauthenticated_agents_is_explicit_and_loud(control_plane, edgenode_crd, namespace, pki: Pki,
                                                              tmp_path: Path) -> None:
    mgr = ManagerProcess(kubeconfig=control_plane.kubeconfig, data_dir=tmp_path / "data",
                         log_path=tmp_path / "manager.log", namespace=namespace, insecure=False,
                         args=["--tls-cert-file", str(pki.server_cert), "--tls-private-key-file", str(pki.server_key),
                               "--allow-unauthenticated-agents"])
    try:
        mgr.start().wait_ready()
        warnings = [line for line in mgr.log().splitlines() if " WARNING " in line]
        assert any("--allow-unauthenticated-agents" in line and "any client" in line for line in warnings)
        assert mgr.stop() == 0
    finally:
        mgr.kill()


def test_an_anonymous_tls_client_gets_nothing_and_the_agent_still_syncs(store: LogStore, pki: Pki,
                                                                        tmp_path: Path) -> None:
    fill_node(store, "edge11", pods=8, size=500)
    tls = ServerTls(cert_file=pki.server_cert, key_file=pki.server_key, client_ca_file=pki.ca)
    anonymous = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())

    async def scenario() -> None:
        async with serving(store, tls=tls) as s:
            async with raw_stream(s.address, anonymous) as st:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await st.send(hello=pb.Hello(node="edge11", record_format=1))
                    await st.read(timeout=10)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # no certificate: no handshake
            assert s.observer.of("connected") == [] and s.observer.of("reported") == []
            cert, key = pki.client("stranger")
            await legit_agent_syncs(s.address, store, "stranger", tmp_path / "stranger-replica",
                                    tls=ClientTls(ca_file=pki.ca, cert_file=cert, key_file=key))
            assert [call[1] for call in s.observer.calls if call[0] == "connected"] == ["stranger"]

    fill_node(store, "stranger", pods=4, size=300)
    run(scenario())
