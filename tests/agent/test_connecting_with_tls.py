"""edge-agent over mTLS: its certificate must name its node; a mismatch is retried with one clear line."""

from __future__ import annotations

import pytest

from eventlog import ReplicaStore
from manager.sync_service import ServerTls
from tests.kit.builders import put
from tests.kit.manifests import expected_files, managed_files
from tests.kit.pki import make_pki
from tests.kit.servers import LogServer


@pytest.fixture
def tls_server(tmp_path):
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    pki = make_pki(pki_dir)
    srv = LogServer(tmp_path / "tls-log", tls=ServerTls(cert_file=pki.server_cert, key_file=pki.server_key,
                                                       client_ca_file=pki.ca)).start()
    srv.append([put("edge01", "a", ns="ns"), put("edge01", "b", ns="ns")])
    yield srv, pki
    srv.close()


def tls_args(pki, client: str) -> list[str]:
    cert, key = pki.client(client)
    return ["--ca-file", str(pki.ca), "--cert-file", str(cert), "--key-file", str(key)]


def test_agent_with_its_node_certificate_syncs(tls_server, agents):
    srv, pki = tls_server
    a = agents(node="edge01", servers=[srv.address], insecure=False, extra=tls_args(pki, "edge01"))
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    assert "plaintext" not in a.log()
    # a hand-made certificate is the operator's to renew: no renewal metrics
    assert not [k for k in a.metrics() if "client_certificate" in k]


def test_certificate_of_another_node_is_refused_and_retried(tls_server, agents):
    srv, pki = tls_server
    a = agents(node="edge01", servers=[srv.address], insecure=False, extra=tls_args(pki, "stranger"))
    a.start()
    a.wait_log("PERMISSION_DENIED", count=2)
    assert "Traceback" not in a.log()
    assert managed_files(a.manifests) == {}
    a.stop()
    with ReplicaStore(a.data_dir / "replica", readonly=True) as r:
        assert r.cursor().applied_offset == 0
