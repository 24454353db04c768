"""A watch that gets 410 Gone lists again and loses no deletion; an apiserver restart is survived.

410 is forced on a private control plane whose apiserver has no watch cache (so a watch
from a compacted resourceVersion goes to etcd and fails): the manager is SIGSTOPped, its
watch request times out server-side (--watch-timeout 3s), EdgeNodes change and etcd is
compacted; after SIGCONT the manager re-watches from its old resourceVersion, gets 410,
lists again and records exactly the differences.
"""

from __future__ import annotations

import re
import signal
import time

from tests.kit.builders import apply
from tests.kit.crd import CRD_FILE, wait_established
from tests.kit.manager import events, ops
from tests.kit.waits import wait_for


def restarts(metrics: str, reason: str) -> float:
    m = re.search(r'k8s_edge_manager_watch_restarts_total\{reason="%s",resource="edgenodes"\} (\S+)' % reason, metrics)
    return float(m.group(1)) if m else 0.0


def test_gone_relists_and_loses_no_deletion(control_plane_factory, manager_factory, tmp_path):
    cp = control_plane_factory(extra_apiserver_args=["--watch-cache=false"])
    cp.kubectl("apply", "-f", CRD_FILE)
    wait_established(cp)
    ns = "default"
    data = tmp_path / "data"
    mgr = manager_factory(kubeconfig=cp.kubeconfig, data_dir=data, namespace=ns, args=["--watch-timeout", "3s"])
    apply(cp, "edge01", ns, {"a": "nginx", "b": "nginx"})
    apply(cp, "edge02", ns, {"x": "nginx"})
    wait_for(lambda: len(events(data)) == 3, 60, "3 events")
    mark = events(data)[-1].offset

    mgr.signal(signal.SIGSTOP)
    try:
        time.sleep(5)  # the apiserver ends the paused manager's watch request (timeout 3s)
        revision_before = cp.etcd_revision()
        cp.kubectl("delete", "edgenode", "edge02", "-n", ns)
        apply(cp, "edge01", ns, {"a": "nginx:2", "c": "nginx"})
        assert cp.compact_etcd() > revision_before
    finally:
        mgr.signal(signal.SIGCONT)

    got = wait_for(lambda: len(e := events(data, mark)) >= 4 and e, 60, "the relist to catch up")
    assert ops(got) == [("edge01", "put", "a"), ("edge01", "put", "c"), ("edge01", "delete", "b"),
                        ("edge02", "delete", "x")]
    assert restarts(mgr.metrics(), "gone") >= 1, mgr.log()[-3000:]
    time.sleep(2)
    assert events(data, mark) == got  # nothing else
    assert mgr.stop() == 0


def test_apiserver_restart_is_survived(control_plane, edgenode_crd, namespace, manager_factory, tmp_path):
    data = tmp_path / "data"
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=data, namespace=namespace)
    apply(control_plane, "edge01", namespace, {"a": "nginx"})
    wait_for(lambda: len(events(data)) == 1, 60, "first event")
    control_plane.restart_apiserver()
    apply(control_plane, "edge01", namespace, {"a": "nginx", "b": "nginx"})
    wait_for(lambda: len(events(data)) >= 2, 90, "the change after the restart")
    control_plane.kubectl("delete", "edgenode", "edge01", "-n", namespace)
    got = wait_for(lambda: len(e := events(data)) >= 4 and e, 90, "the deletion after the restart")
    assert ops(got) == [("edge01", "put", "a"), ("edge01", "put", "b"), ("edge01", "delete", "a"),
                        ("edge01", "delete", "b")]
    assert mgr.proc.poll() is None
    assert mgr.stop() == 0
