"""The recorder's pure logic over a real LogStore: desired EdgeNodes to exactly the right events."""

from __future__ import annotations

import orjson
import pytest

from manager.validating import static_pod_problem
from manager.recording import (
    MANAGED_BY_LABEL,
    NODE_LABEL,
    Recorder,
    desired_node,
)
from tests.kit.builders import spec_pod as pod


def edgenode(name: str, ns: str, *pods: dict, uid: str = "u1", rv: str = "1", gen: int = 1) -> dict:
    return {"apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": rv, "generation": gen},
            "spec": {"pods": list(pods)}}


@pytest.fixture
def notified():
    return []


@pytest.fixture
def recorder(store, notified):
    return Recorder(store, notify=lambda nodes: notified.append(set(nodes)))


def ops(events):
    return [(e.node, e.op, e.namespace, e.name) for e in events]


def test_manifest_is_canonical_with_namespace_and_labels():
    d = desired_node(edgenode("edge01", "ns1", pod("web")))
    manifest = orjson.loads(d.pods[("ns1", "web")])
    assert manifest["metadata"]["namespace"] == "ns1"
    assert manifest["metadata"]["labels"] == {MANAGED_BY_LABEL: "k8s-edge", NODE_LABEL: "edge01"}
    assert d.pods[("ns1", "web")] == orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)


def test_add_change_remove_delete_append_exactly_the_differences(recorder, store, notified):
    rec = recorder.changed(edgenode("edge01", "ns1", pod("a"), pod("b"), rv="1"))
    assert ops(rec.events) == [("edge01", "put", "ns1", "a"), ("edge01", "put", "ns1", "b")]
    assert rec.events[0].source.uid == "u1" and rec.events[0].source.resource_version == "1"
    assert notified == [{"edge01"}]
    assert recorder.changed(edgenode("edge01", "ns1", pod("a"), pod("b"), rv="2")).events == ()
    rec = recorder.changed(edgenode("edge01", "ns1", pod("a", image="nginx:2"), pod("c"), rv="3", gen=2))
    assert ops(rec.events) == [("edge01", "put", "ns1", "a"), ("edge01", "put", "ns1", "c"),
                               ("edge01", "delete", "ns1", "b")]
    rec = recorder.deleted(edgenode("edge01", "ns1", rv="4"))
    assert ops(rec.events) == [("edge01", "delete", "ns1", "a"), ("edge01", "delete", "ns1", "c")]
    assert store.pods("edge01") == {}
    assert [e.offset for e in store.read()] == list(range(1, 8))


def test_same_node_in_two_namespaces_owns_separate_pods(recorder, store):
    recorder.changed(edgenode("edge01", "ns1", pod("web")))
    recorder.changed(edgenode("edge01", "ns2", pod("web")))
    assert set(store.pods("edge01")) == {("ns1", "web"), ("ns2", "web")}
    rec = recorder.deleted(edgenode("edge01", "ns1"))
    assert ops(rec.events) == [("edge01", "delete", "ns1", "web")]
    assert set(store.pods("edge01")) == {("ns2", "web")}


def test_listing_appends_differences_including_vanished_edgenodes(recorder, store):
    recorder.listed([edgenode("edge01", "ns1", pod("a")), edgenode("edge02", "ns1", pod("x"))])
    head = store.head_offset
    assert recorder.listed([edgenode("edge01", "ns1", pod("a")), edgenode("edge02", "ns1", pod("x"))]).events == ()
    rec = recorder.listed([edgenode("edge01", "ns1", pod("a"), pod("b"))])
    assert ops(rec.events) == [("edge01", "put", "ns1", "b"), ("edge02", "delete", "ns1", "x")]
    assert store.head_offset == head + 2


def test_listing_one_namespace_leaves_other_namespaces_alone(store):
    Recorder(store, notify=lambda n: None).listed([edgenode("edge01", "other", pod("a"))])
    rec = Recorder(store, notify=lambda n: None, namespace="ns1").listed([edgenode("edge01", "ns1", pod("b"))])
    assert ops(rec.events) == [("edge01", "put", "ns1", "b")]


@pytest.mark.parametrize("spec, why", [
    ({"containers": []}, "no containers"),
    ({"volumes": [{"name": "s", "secret": {"secretName": "x"}}]}, "Secret"),
    ({"volumes": [{"name": "c", "configMap": {"name": "x"}}]}, "ConfigMap"),
    ({"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}, "projected"),
    ({"nodeName": "edge02"}, "another node"),
    ({"serviceAccountName": "builder"}, "service account"),
])
def test_pods_kubelet_cannot_run_statically_are_rejected(recorder, store, spec, why):
    p = pod("bad")
    p["spec"].update(spec)
    d = desired_node(edgenode("edge01", "ns1", p, pod("good")))
    assert [r.name for r in d.rejected] == ["bad"] and why in d.rejected[0].reason
    assert static_pod_problem(pod("good", nodeName="edge01"), namespace="ns1", node="edge01") is None
    recorder.changed(edgenode("edge01", "ns1", p, pod("good")))
    assert set(store.pods("edge01")) == {("ns1", "good")}


def test_a_pod_that_becomes_invalid_is_deleted(recorder, store):
    recorder.changed(edgenode("edge01", "ns1", pod("a")))
    rec = recorder.changed(edgenode("edge01", "ns1", pod("a", volumes=[{"name": "s", "secret": {}}])))
    assert ops(rec.events) == [("edge01", "delete", "ns1", "a")]
