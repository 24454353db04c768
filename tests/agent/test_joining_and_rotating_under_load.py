"""Certificate rotation under load: a joined agent renews its 60 s certificate again and again while EdgeNode
changes stream in, without losing, repeating or reconnecting; the next connection uses the renewed certificate.

Against the real edge-manager (--agent-certificate-duration 60s) and the real API server.
"""

from __future__ import annotations

import time

from cryptography import x509

from tests.kit.agents import journal_kinds
from tests.kit.manifests import expected_files
from tests.kit.waits import wait_for
from tests.kit.builders import apply

MAX_LOAD_SECONDS = 150.0  # a 60 s certificate (the manager's shortest) is renewed 42-54 s after it arrives


def _certificate(a) -> x509.Certificate:
    return x509.load_pem_x509_certificate((a.data_dir / "pki" / "agent.pem").read_bytes())


def _serial(a) -> int:
    return _certificate(a).serial_number


def _caught_up(a, mgr, node: str) -> None:
    """Until the agent applied the manager's head for its node and its files equal the manager's view."""
    wait_for(lambda: a.metrics()["k8s_edge_agent_applied_offset"] == mgr.head(node) > 0, timeout=90,
             what="the agent to apply the manager's head", on_timeout=a.log_tail)
    a.wait_files(expected_files(mgr.desired(node)))


def test_renewals_during_a_stream_of_changes_lose_repeat_and_interrupt_nothing(
        control_plane, join_manager, namespace, agents):
    j = join_manager("--agent-certificate-duration", "60s")
    cp, mgr, node = control_plane, j.manager, "edge-rotating"
    apply(cp, node, namespace, {"p0": "nginx:0"})
    a = agents(node=node, servers=[mgr.address], insecure=False, extra=j.agent_args(j.token_file(j.token())))
    a.start()
    _caught_up(a, mgr, node)
    serials = {_serial(a)}

    changes, deadline = 0, time.monotonic() + MAX_LOAD_SECONDS
    while a.log().count(f"renewed the certificate of node {node}") < 2:  # changes flow through both renewals
        assert time.monotonic() < deadline, f"fewer than 2 renewals in {MAX_LOAD_SECONDS:g}s\n{a.log_tail()}"
        # every change moves pods: puts, image updates and deletes
        changes += 1
        pods = {f"p{(changes + k) % 7}": f"nginx:{changes}" for k in range(1 + changes % 4)}
        apply(cp, node, namespace, pods)
        serials.add(_serial(a))
        time.sleep(0.2)
    _caught_up(a, mgr, node)
    serials.add(_serial(a))  # the second renewal's

    renewed = a.log().count(f"renewed the certificate of node {node}")
    assert renewed >= 2 and len(serials) >= 3, (renewed, serials)
    # what an operator alerts on, as kubelet_certificate_manager_client_expiration_seconds
    before, m, after = _certificate(a), a.metrics(), _certificate(a)  # a renewal may fall between two reads
    assert m["k8s_edge_agent_client_certificate_renewals_total"] >= 2
    assert m["k8s_edge_agent_client_certificate_expiration_seconds"] in {
        c.not_valid_after_utc.timestamp() for c in (before, after)}
    # exact: one snapshot (the first sync), then every event of the node's log once, in order
    with a.replica() as r:
        snapshots, events = journal_kinds(r)
    assert len(snapshots) == 1, snapshots
    assert events == mgr.node_events(node, after=snapshots[0])
    assert len(events) >= changes  # each apply recorded at least one event
    # not interrupted: one stream from start to end
    assert a.metrics()["k8s_edge_agent_reconnects_total"] == 0
    assert mgr.log().count(f"agent {node} connected") == 1
    assert "TLS files changed" not in a.log()  # no new connection needed reloading

    # the next connection uses the renewed certificate (the one it joined with expired long ago)
    mgr.kill()
    mgr.start().wait_ready()
    apply(cp, node, namespace, {"after": "nginx:1"})
    wait_for(lambda: mgr.desired(node) == {(namespace, "after"): mgr.desired(node).get((namespace, "after"))},
             timeout=60, what="the manager to record the last change")
    _caught_up(a, mgr, node)
    assert "TLS files changed: reloaded" in a.log()
    with a.replica() as r:
        assert journal_kinds(r)[0] == snapshots  # resumed, not re-snapshotted
