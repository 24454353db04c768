"""edge-agent joins with a bootstrap token: its key made on the node, a private pki/, syncing; restarts need no token.

Against the real edge-manager (joining on) and the real API server: tokens are kube-system
Secrets, the requests are CertificateSigningRequests kubectl shows.
"""

from __future__ import annotations

import json
import os
import signal
import stat

from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.kit.manifests import expected_files
from tests.kit.waits import wait_for
from tests.kit.builders import apply


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _csrs(cp, node: str) -> dict[str, list[str]]:
    """This node's CSRs with their condition types, as kubectl shows them."""
    items = json.loads(cp.kubectl("get", "csr", "-o", "json").stdout)["items"]
    return {c["metadata"]["name"]: [k["type"] for k in (c.get("status") or {}).get("conditions") or []]
            for c in items if c["metadata"]["name"].startswith(f"edge-agent-{node}-")}


def _synced(a, mgr, node: str) -> None:
    wait_for(lambda: mgr.desired(node) != {}, timeout=60, what="the manager to record")
    a.wait_files(expected_files(mgr.desired(node)))


def test_a_token_joins_writes_a_private_pki_and_syncs(control_plane, join_manager, namespace, agents):
    j = join_manager()
    cp, node = control_plane, "join-ok"
    apply(cp, node, namespace, {"web": "nginx:1.25"})
    before = set(_csrs(cp, node))
    token = j.token()
    a = agents(node=node, servers=[j.manager.address], insecure=False, extra=j.agent_args(j.token_file(token)))
    assert not (a.data_dir / "pki").exists()
    a.start()
    _synced(a, j.manager, node)

    pki = a.data_dir / "pki"
    assert sorted(p.name for p in pki.iterdir()) == ["agent.pem", "ca.crt"]  # no key, CSR or temp file left over
    assert (_mode(pki), _mode(pki / "agent.pem"), _mode(pki / "ca.crt")) == (0o700, 0o600, 0o600)
    assert (pki / "ca.crt").read_bytes() == j.pki.ca_cert  # the discovered bundle, pinned by its hash
    cert = x509.load_pem_x509_certificate((pki / "agent.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"system:node:{node}"
    assert b"PRIVATE KEY" in (pki / "agent.pem").read_bytes()
    new = {n: c for n, c in _csrs(cp, node).items() if n not in before}
    assert list(new.values()) == [["Approved"]], new  # one request, approved by the token (kubectl get csr)
    assert "Issued" in cp.kubectl("get", "csr", *new).stdout
    assert token.split(".")[1] not in a.log()  # the token id may show, the secret never
    assert f"joining the manager at {j.join_address} as node {node} with bootstrap token {token.split('.')[0]}" \
        in a.log()


def test_a_restart_reuses_the_pki_without_the_token(control_plane, join_manager, namespace, agents):
    j = join_manager()
    cp, node = control_plane, "join-restart"
    apply(cp, node, namespace, {"web": "nginx:1.25"})
    token = j.token()
    token_file = j.token_file(token)
    a = agents(node=node, servers=[j.manager.address], insecure=False, extra=j.agent_args(token_file))
    a.start()
    _synced(a, j.manager, node)
    pem = (a.data_dir / "pki" / "agent.pem").read_bytes()
    csrs = _csrs(cp, node)
    a.stop()

    token_file.unlink()  # tokens expire; a node keeps running on what it joined with
    cp.kubectl("delete", "secret", "-n", "kube-system", f"bootstrap-token-{token.split('.')[0]}")
    apply(cp, node, namespace, {"web": "nginx:1.26", "api": "api:1"})
    a.start()
    a.wait_log("no token needed")
    wait_for(lambda: len(j.manager.desired(node)) == 2, timeout=60, what="the manager to record the change")
    a.wait_files(expected_files(j.manager.desired(node)))
    assert (a.data_dir / "pki" / "agent.pem").read_bytes() == pem
    assert _csrs(cp, node) == csrs  # nothing asked again


def test_a_request_waits_for_a_human_when_approval_is_manual(control_plane, join_manager, namespace, agents):
    j = join_manager("--join-approval", "manual")
    cp, node = control_plane, "join-manual"
    apply(cp, node, namespace, {"web": "nginx:1.25"})
    a = agents(node=node, servers=[j.manager.address], insecure=False, extra=j.agent_args(j.token_file(j.token())))
    a.start()
    a.wait_log("is pending approval")
    assert not (a.data_dir / "pki").exists()  # nothing on the edge until a certificate is issued
    [name] = _csrs(cp, node)
    assert f"kubectl certificate approve {name}" in a.log()
    cp.kubectl("certificate", "approve", name)
    _synced(a, j.manager, node)
    assert (a.data_dir / "pki" / "agent.pem").exists()


def test_a_join_killed_after_its_request_leaves_nothing_and_the_next_start_joins(
        control_plane, join_manager, namespace, agents):
    j = join_manager()
    cp, node = control_plane, "join-crash"
    apply(cp, node, namespace, {"web": "nginx:1.25"})
    a = agents(node=node, servers=[j.manager.address], insecure=False, extra=j.agent_args(j.token_file(j.token())),
               env={"K8S_EDGE_FAULT": "crash-after-join-request"})
    a.start()
    wait_for(lambda: a.proc.poll() is not None, timeout=60, what="the agent to kill itself", on_timeout=a.log_tail)
    assert a.proc.returncode == -signal.SIGKILL and "TEST FAULT: SIGKILL at crash-after-join-request" in a.log()
    assert not (a.data_dir / "pki").exists() and not (a.data_dir / ".pki-new").exists()
    a.set_env(K8S_EDGE_FAULT=None)
    a.start()  # the same token, a new key: a new request, not a replay
    _synced(a, j.manager, node)
    assert len(_csrs(cp, node)) == 2


def test_pinning_another_managers_ca_joins_that_manager(control_plane, join_manager, namespace, agents, tmp_path):
    first = join_manager()
    cp, node = control_plane, "join-moved"
    apply(cp, node, namespace, {"web": "nginx:1.25"})
    a = agents(node=node, servers=[first.manager.address], insecure=False,
               extra=first.agent_args(first.token_file(first.token())))
    a.start()
    _synced(a, first.manager, node)
    a.stop()
    first.manager.kill()

    second = join_manager()  # a new CA (Secret replaced), a new hash to pin
    a.cmd = [*a.cmd[:a.cmd.index("--join-server")], *second.agent_args(second.token_file(second.token())),
             "--sync-server", second.manager.address]
    a.start()
    a.wait_log(f"no CA in it matches --discovery-token-ca-cert-hash {second.ca_hash}: joining again")
    a.wait_log("joined: certificate for node", count=2)
    assert (a.data_dir / "pki" / "ca.crt").read_bytes() == second.pki.ca_cert
    wait_for(lambda: f"agent {node} connected" in second.manager.log(), timeout=60, what="a stream to the new manager")
    _synced(a, second.manager, node)
