"""The node identity rule, proved against kube-apiserver: who it says a client certificate is, we agree (or are stricter).

The local control plane's CA signs client certificates; `kubectl auth whoami` shows the user
and groups kube-apiserver derives from each, and Kubernetes' node identity
(k8s.io/kubernetes/pkg/auth/nodeidentifier: user system:node:<name> in group system:nodes)
follows from them. The manager, trusting the same CA, must let the same certificate sync
exactly that node, and no node where Kubernetes sees none.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from eventlog import LogStore
from manager.sync_service import ServerTls
from proto import sync_pb2 as pb
from tests.kit.builders import fill_node
from tests.kit.fake_agents import raw_stream
from tests.kit.pki import issue
from tests.kit.servers import serving
from tests.kit.waits import run

SAME = [  # (subject, SANs): certificates on which the manager decides as Kubernetes does
    ("/CN=system:node:edge01/O=system:nodes", ""),
    ("/O=system:nodes/CN=system:node:edge04", ""),
    ("/CN=system:node:edge03/O=team-a/O=system:nodes", ""),
    ("/CN=system:node:edge01", ""),
    ("/CN=alice/O=system:masters", ""),
    ("/CN=edge02", ""),
    ("/CN=system:node:edge05/O=system:node", ""),
]
STRICTER = [  # Kubernetes sees one node; a certificate naming several is refused here (one certificate, one node)
    ("/CN=system:node:edge10/O=system:nodes", "subjectAltName=DNS:edge10,DNS:edge11\n"),
    ("/CN=system:node:edge01/CN=system:node:edge02/O=system:nodes", ""),
]


def _kubernetes_node(cp, d: Path, name: str) -> str | None:  # noqa: ANN001
    """The node kube-apiserver's identity of this client certificate names (None: not a node)."""
    res = subprocess.run(
        [str(cp.kubectl_path), "--kubeconfig", str(d / "empty-kubeconfig"), "--server", cp.server,
         "--certificate-authority", str(d / "ca.crt"), "--client-certificate", str(d / f"{name}.crt"),
         "--client-key", str(d / f"{name}.key"), "auth", "whoami", "-o", "json"],
        capture_output=True, text=True, timeout=60, check=True)
    user = json.loads(res.stdout)["status"]["userInfo"]
    username, groups = user["username"], user.get("groups", [])
    if not username.startswith("system:node:") or "system:nodes" not in groups:
        return None
    return username.removeprefix("system:node:") or None


def _candidate(subject: str) -> str:
    """The node a certificate might claim: its last CN without the kubelet prefix."""
    cn = [part for part in subject.split("/") if part.startswith("CN=")][-1][3:]
    return cn.removeprefix("system:node:")


@pytest.fixture
def signed(control_plane, tmp_path: Path) -> Path:  # noqa: ANN001
    pki = getattr(control_plane, "state_dir", None)
    if pki is None:
        pytest.skip("needs the local control plane's CA")
    d = tmp_path / "pki"
    d.mkdir()
    for f in ("ca.crt", "ca.key", "apiserver.crt", "apiserver.key"):
        shutil.copyfile(pki / "pki" / f, d / f)
    (d / "empty-kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    for i, (subject, san) in enumerate(SAME + STRICTER):
        issue(d, f"c{i}", subject, san + "extendedKeyUsage=clientAuth\n")
    return d


def test_the_manager_names_the_node_kube_apiserver_names(control_plane, signed: Path,  # noqa: ANN001
                                                         store: LogStore) -> None:
    d = signed
    tls = ServerTls(cert_file=d / "apiserver.crt", key_file=d / "apiserver.key", client_ca_file=d / "ca.crt")
    for subject, _ in SAME + STRICTER:
        fill_node(store, _candidate(subject), pods=1, size=200)

    async def ours(name: str, node: str) -> bool:
        creds = grpc.ssl_channel_credentials(root_certificates=(d / "ca.crt").read_bytes(),
                                             private_key=(d / f"{name}.key").read_bytes(),
                                             certificate_chain=(d / f"{name}.crt").read_bytes())
        async with serving(store, tls=tls) as s, raw_stream(s.address, creds) as st:
            await st.send(hello=pb.Hello(node=node, record_format=1))
            try:
                message = await st.call.read()
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, exc
                return False
            assert message.WhichOneof("kind") == "welcome", message
            return True

    decided = []
    for i, (subject, _) in enumerate(SAME + STRICTER):
        theirs = _kubernetes_node(control_plane, d, f"c{i}")
        accepted = run(ours(f"c{i}", theirs or _candidate(subject)))
        decided.append((subject, theirs, accepted))
    same = decided[: len(SAME)]
    assert [(s, accepted) for s, theirs, accepted in same] == [(s, theirs is not None) for s, theirs, _ in same]
    assert [theirs for _, theirs, _ in same if theirs] == ["edge01", "edge04", "edge03"]
    for subject, theirs, accepted in decided[len(SAME):]:
        assert theirs is not None and not accepted, subject
