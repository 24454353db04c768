"""kubectl changes to EdgeNodes become exactly the right events in the manager's log, also across restarts.

The manager runs as a real process against the real apiserver; the log is read from outside,
read-only. "Nothing else" is checked with a sentinel: a change to another EdgeNode made after
the ones under test; once its event is in the log, every earlier change has been handled.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import orjson

from tests.kit.builders import apply
from tests.kit.manager import events, ops
from tests.kit.waits import wait_for


EDGE_EVENTLOG = Path(sys.executable).parent / "edge-eventlog"


def settle(cp, namespace: str, data_dir: Path, after: int) -> list:
    """Events after `after` up to a fresh sentinel change, sentinel events left out."""
    tag = f"s-{uuid.uuid4().hex[:8]}"
    apply(cp, "sentinel", namespace, {tag: "pause"})
    evs = wait_for(lambda: (e := events(data_dir, after)) and any(x.name == tag for x in e) and e,
                   60, f"the sentinel {tag} to be recorded")
    return [e for e in evs if e.node != "sentinel"]


def head(data_dir: Path) -> int:
    evs = events(data_dir)
    return evs[-1].offset if evs else 0


def test_create_update_delete_append_exactly_the_changes(control_plane, edgenode_crd, namespace, manager_factory,
                                                         tmp_path):
    data = tmp_path / "data"
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=data, namespace=namespace)
    assert mgr.get("/healthz") == 200 and mgr.get("/readyz") == 200

    apply(control_plane, "edge01", namespace, {"web": "nginx:1"})
    evs = settle(control_plane, namespace, data, 0)
    assert ops(evs) == [("edge01", "put", "web")]
    obj = json.loads(control_plane.kubectl("get", "edgenode", "edge01", "-n", namespace, "-o", "json").stdout)
    e = evs[0]
    assert e.namespace == namespace
    assert (e.source.uid, e.source.generation) == (obj["metadata"]["uid"], 1)
    manifest = orjson.loads(e.manifest)
    assert manifest["metadata"]["namespace"] == namespace
    assert manifest["metadata"]["labels"]["edge.k8s.io/node"] == "edge01"
    assert manifest["spec"]["containers"][0]["image"] == "nginx:1"

    mark = head(data)
    apply(control_plane, "edge01", namespace, {"web": "nginx:1"})  # reapplying the same manifest
    assert settle(control_plane, namespace, data, mark) == []

    steps = [
        ({"web": "nginx:1", "db": "redis:7"}, [("edge01", "put", "db")]),        # pod added
        ({"web": "nginx:2", "db": "redis:7"}, [("edge01", "put", "web")]),       # pod changed
        ({"web": "nginx:2"}, [("edge01", "delete", "db")]),                      # pod removed
    ]
    for pods, expected in steps:
        mark = head(data)
        apply(control_plane, "edge01", namespace, pods)
        assert ops(settle(control_plane, namespace, data, mark)) == expected, pods

    mark = head(data)
    apply(control_plane, "edge02", namespace, {"a": "busybox", "b": "busybox"})
    control_plane.kubectl("delete", "edgenode", "edge01", "-n", namespace)
    evs = settle(control_plane, namespace, data, mark)
    assert ops(evs) == [("edge02", "put", "a"), ("edge02", "put", "b"), ("edge01", "delete", "web")]
    assert [x.offset for x in events(data)] == list(range(1, head(data) + 1))  # gap-free

    assert mgr.stop() == 0
    res = subprocess.run([str(EDGE_EVENTLOG), "verify", str(data)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_changes_made_while_the_manager_was_down_are_recorded_once_it_is_back(
        control_plane, edgenode_crd, namespace, manager_factory, tmp_path):
    data = tmp_path / "data"
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=data, namespace=namespace)
    apply(control_plane, "edge01", namespace, {"a": "nginx:1", "b": "nginx:1"})
    apply(control_plane, "edge02", namespace, {"x": "nginx:1"})
    apply(control_plane, "edge03", namespace, {"y": "nginx:1"})
    assert len(settle(control_plane, namespace, data, 0)) == 4
    assert mgr.stop() == 0
    mark = head(data)

    apply(control_plane, "edge01", namespace, {"a": "nginx:2", "c": "nginx:1"})  # change a, drop b, add c
    control_plane.kubectl("delete", "edgenode", "edge02", "-n", namespace)
    apply(control_plane, "edge04", namespace, {"z": "nginx:1"})

    manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=data, namespace=namespace)
    # the catch-up is appended before /readyz turns ready: exactly the differences, deletions included
    assert ops(events(data, mark)) == [
        ("edge01", "put", "a"), ("edge01", "put", "c"), ("edge01", "delete", "b"),
        ("edge04", "put", "z"),
        ("edge02", "delete", "x"),
    ]
    mark = head(data)
    assert settle(control_plane, namespace, data, mark) == []


def test_a_restart_without_changes_appends_nothing(control_plane, edgenode_crd, namespace, manager_factory, tmp_path):
    data = tmp_path / "data"
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=data, namespace=namespace)
    apply(control_plane, "edge01", namespace, {"a": "nginx:1"})
    settle(control_plane, namespace, data, 0)
    assert mgr.stop() == 0
    mark = head(data)
    manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=data, namespace=namespace)
    assert events(data, mark) == []


def test_same_node_in_two_namespaces(control_plane, edgenode_crd, namespace, manager_factory, tmp_path):
    other = f"{namespace[:50]}-b"
    control_plane.kubectl("create", "namespace", other)
    try:
        data = tmp_path / "data"
        manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=data)  # all namespaces
        apply(control_plane, "edge-shared", namespace, {"web": "nginx"})
        apply(control_plane, "edge-shared", other, {"web": "nginx"})
        wait_for(lambda: len([e for e in events(data) if e.node == "edge-shared"]) >= 2, 60, "two puts")
        control_plane.kubectl("delete", "edgenode", "edge-shared", "-n", other)
        evs = wait_for(lambda: [e for e in events(data) if e.node == "edge-shared" and e.op == "delete"], 60,
                       "the delete")
        assert [(e.namespace, e.name) for e in evs] == [(other, "web")]
        puts = [(e.namespace, e.name) for e in events(data) if e.node == "edge-shared" and e.op == "put"]
        assert sorted(puts) == sorted([(namespace, "web"), (other, "web")])
    finally:
        control_plane.kubectl("delete", "namespace", other, "--wait=false", check=False)
