"""A malformed EdgeNode or pod is refused with the field path, alone: its siblings are recorded.

Pure logic over a real LogStore: the manager's admission (manager.validating) and the
recorder's per-object isolation and retry (manager.retrying), and hypothesis feeding
arbitrary JSON at every level of spec.pods[] through the real Recorder.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eventlog import LogStore
from manager import recording
from manager.validating import EDGENODE_SELF, MAX_MANIFEST_BYTES, PodCheck, pod_problem
from manager.recording import Recorder, desired_node
from manager.retrying import Backoff, RetryQueue
from tests.kit.builders import spec_pod as pod
from tests.kit.kubelet_shape import kubelet_refusal
from tests.kit.logs import captured_logs
from tests.kit.malformed import MALFORMED_PODS


def edgenode(name: str, ns: str, *pods: Any, spec: Any = None) -> dict:
    return {"apiVersion": "edge.k8s.io/v1alpha1", "kind": "EdgeNode",
            "metadata": {"name": name, "namespace": ns, "uid": f"u-{name}", "resourceVersion": "1", "generation": 1},
            "spec": {"pods": list(pods)} if spec is None else spec}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- each malformed pod of the issue --------------------------------------------------------
class TestRefusingMalformedPods:
    @pytest.mark.parametrize("case, bad, path", MALFORMED_PODS, ids=[m[0] for m in MALFORMED_PODS])
    def test_refused_with_its_field_path_and_siblings_recorded(self, store, case, bad, path):
        rec = Recorder(store, notify=lambda nodes: None)
        rec.changed(edgenode("edge01", "tenant", pod("good"), bad))
        rec.listed([edgenode("edge01", "tenant", pod("good"), bad), edgenode("edge02", "other", pod("web"))])
        assert set(store.pods("edge01")) == {("tenant", "good")}
        assert set(store.pods("edge02")) == {("other", "web")}
        d = desired_node(edgenode("edge01", "tenant", pod("good"), bad))
        (r,) = d.rejected
        assert r.name == "bad" and r.reason.startswith(f"{path}: "), r.reason
        assert not rec.retries.pending()

    @pytest.mark.parametrize("spec, reason", [
        ([], "spec: must be an object, got array"),
        ("pods", "spec: must be an object, got string"),
        ({"pods": {"web": {}}}, "spec.pods: must be an array, got object"),
        ({"pods": 7}, "spec.pods: must be an array, got integer"),
    ])
    def test_a_malformed_edgenode_is_refused_as_a_whole(self, store, spec, reason):
        rec = Recorder(store, notify=lambda nodes: None)
        rec.changed(edgenode("edge01", "tenant", pod("a")))
        rec.changed(edgenode("edge01", "tenant", spec=spec))
        assert store.pods("edge01") == {}  # a rejected object sends nothing: its old pods go
        d = desired_node(edgenode("edge01", "tenant", spec=spec))
        assert [(r.name, r.reason) for r in d.rejected] == [(EDGENODE_SELF, reason)]

    @pytest.mark.parametrize("bad, reason", [
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Web_1"}, "spec": pod("x")["spec"]},
         "metadata.name: Invalid value: 'Web_1'"),
        (pod("a", containers=[{"name": "c", "image": ""}]), "spec.containers[0].image: Required value"),
        (pod("a", containers=[{"name": "c", "image": "x"}, {"name": "c", "image": "y"}]),
         "spec.containers[1].name: Duplicate value"),
        (pod("a", containers=[{"name": "C", "image": "x"}]), "spec.containers[0].name: Invalid value"),
        (pod("a", containers=[{"name": "c", "image": "x", "ports": [{"containerPort": 70000}]}]),
         "spec.containers[0].ports[0].containerPort: Invalid value: 70000"),
        (pod("a", containers=[{"name": "c", "image": "x", "ports": [{"containerPort": 2 ** 70}]}]),
         "spec.containers[0].ports[0].containerPort: Invalid value"),
        (pod("a", volumes=[{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]),
         "spec.volumes[1].name: Duplicate value"),
        ({**pod("a"), "metadata": {"name": "a", "labels": {"k": "not a value!"}}},
         "metadata.labels[k]: Invalid value"),
        (pod("a", ephemeralContainers=[{"name": "e", "image": "x"}]), "spec.ephemeralContainers: Forbidden"),
        (pod("a", hostname=["x"]), "spec.hostname: must be a string, got array"),
        (pod("a", containers=[{"name": "c", "image": "x", "resources": {"limits": {"cpu": True}}}]),
         "spec.containers[0].resources.limits.cpu: must be number or string, got boolean"),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}, "spec: Required value"),
        (pod("a", containers=[{"image": "x"}]), "spec.containers[0].name: Required value"),
    ])
    def test_kubelet_rules_beyond_types(self, bad, reason):
        problem = pod_problem(bad, namespace="ns", node="edge01")
        assert problem is not None and problem.startswith(reason), problem

    def test_unnamed_and_duplicate_pods_are_named_by_index(self):
        d = desired_node(edgenode("edge01", "ns", "nginx", pod("a"), pod("a", image="other"), {"kind": "Pod"}))
        assert [r.name for r in d.rejected] == ["spec.pods[0]", "spec.pods[2]", "spec.pods[3]"]
        assert d.pod_names == ("a",)
        assert "Duplicate value: 'a'" in d.rejected[1].reason

    def test_a_name_too_long_for_the_status_is_named_by_its_index(self):
        # the status's rejected list is a list-map keyed by name: a key holds 1-253 characters (fuzzer find, #11)
        d = desired_node(edgenode("edge01", "ns", pod("good"), pod("a" * 254), pod("b" * 253)))
        assert d.pod_names == ("good",)
        assert [r.name for r in d.rejected] == ["spec.pods[1]", "b" * 253]
        assert d.rejected[0].reason.startswith("metadata.name: Invalid value: "), d.rejected[0].reason

    def test_huge_and_deep_pods_are_refused(self):
        big = pod("big", containers=[{"name": "c", "image": "x", "command": ["y" * 1000] * 300}])
        assert "more than the 262144 allowed" in desired_node(edgenode("e", "ns", big)).rejected[0].reason
        deep: Any = "leaf"
        for _ in range(40):
            deep = {"a": deep}
        assert pod_problem(pod("deep", extra=deep), namespace="ns", node="e") == "nested deeper than 32 levels"
        assert MAX_MANIFEST_BYTES == 256 * 1024

    def test_unknown_fields_and_nulls_are_not_sent(self):
        p = pod("a", unknownField={"x": 1}, hostname=None)
        p["status"] = {"phase": "Running"}
        p["extra"] = 1
        (manifest,) = desired_node(edgenode("edge01", "ns", p)).pods.values()
        sent = orjson.loads(manifest)
        assert set(sent) == {"apiVersion", "kind", "metadata", "spec"}
        assert set(sent["spec"]) == {"containers"}

    def test_a_pod_check_refuses_only_pods_that_passed_the_shape(self):
        seen: list[str] = []

        class NoNginx:
            def __call__(self, pod, *, namespace, node):
                seen.append(pod["metadata"]["name"])
                return "nginx is not allowed here" if pod["spec"]["containers"][0]["image"] == "nginx" else None

        check: PodCheck = NoNginx()
        d = desired_node(edgenode("edge01", "ns", pod("a"), pod("b", image="redis"), MALFORMED_PODS[0][1]),
                         pod_check=check)
        assert seen == ["a", "b"]
        assert [(r.name, r.reason) for r in d.rejected] == [("a", "nginx is not allowed here"),
                                                           ("bad", "spec.containers[0]: must be an object, got string")]


# -- an unexpected exception is one object's problem ---------------------------------------
class TestIsolatingFailures:
    @pytest.fixture
    def flaky(self, monkeypatch):
        """desired_node raises for EdgeNodes in namespace 'boom' while `failing` is set."""
        failing = {"on": True}
        real = recording.desired_node

        def desired(obj, **kw):
            if failing["on"] and obj["metadata"]["namespace"] == "boom":
                raise RuntimeError("a bug triggered by this object")
            return real(obj, **kw)

        monkeypatch.setattr(recording, "desired_node", desired)
        return failing

    def test_relist_diffs_the_others_and_keeps_the_failing_objects_pods(self, store, flaky):
        errors: list = []
        clock = FakeClock()
        rec = Recorder(store, notify=lambda nodes: None, on_error=lambda key, exc: errors.append(key),
                       retries=RetryQueue(backoff=Backoff(base_seconds=1, max_seconds=8), clock=clock))
        flaky["on"] = False
        rec.listed([edgenode("edge01", "boom", pod("old")), edgenode("edge02", "ok", pod("a"))])
        flaky["on"] = True
        rec.listed([edgenode("edge01", "boom", pod("new")), edgenode("edge02", "ok", pod("a"), pod("b"))])
        assert set(store.pods("edge02")) == {("ok", "a"), ("ok", "b")}  # the others are diffed
        assert set(store.pods("edge01")) == {("boom", "old")}  # last good state kept, not deleted
        assert errors == [("boom", "edge01")]
        # retried alone, with exponential backoff, until it succeeds
        delays = []
        for _ in range(4):
            delays.append(rec.retries.next_due())
            clock.now += rec.retries.next_due()
            assert rec.retry_due() == 1
        assert delays == [1, 2, 4, 8]
        flaky["on"] = False
        clock.now += rec.retries.next_due()
        rec.retry_due()
        assert set(store.pods("edge01")) == {("boom", "new")}
        assert rec.retries.pending() == set() and rec.retries.failures(("boom", "edge01")) == 0

    def test_changed_and_deleted_failures_are_retried_and_a_newer_event_wins(self, store, flaky):
        clock = FakeClock()
        rec = Recorder(store, notify=lambda nodes: None, retries=RetryQueue(clock=clock))
        with captured_logs("WARNING") as lines:
            assert rec.changed(edgenode("edge01", "boom", pod("v1"))).events == ()
        (line,) = lines  # one ERROR line naming the object and the exception
        assert line.level == "ERROR" and line.message.startswith("EdgeNode boom/edge01 could not be handled "
                                                                  "(RuntimeError: a bug triggered by this object)")
        rec.changed(edgenode("edge02", "ok", pod("a")))
        assert set(store.pods("edge02")) == {("ok", "a")}
        assert rec.retries.pending() == {("boom", "edge01")}
        flaky["on"] = False
        rec.changed(edgenode("edge01", "boom", pod("v2")))  # a newer event succeeds: the retry is dropped
        assert rec.retries.pending() == set()
        clock.now += 1000
        assert rec.retry_due() == 0
        assert set(store.pods("edge01")) == {("boom", "v2")}

    def test_a_vanished_object_is_not_retried(self, store, flaky):
        rec = Recorder(store, notify=lambda nodes: None)
        rec.changed(edgenode("edge01", "boom", pod("v1")))
        assert rec.retries.pending() == {("boom", "edge01")}
        rec.listed([edgenode("edge02", "ok", pod("a"))])
        assert rec.retries.pending() == set()

    def test_backoff_is_exponential_and_capped(self):
        b = Backoff(base_seconds=0.5, max_seconds=300)
        assert [b.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1, 2, 4]
        assert b.delay(10) == 256 and b.delay(11) == 300 and b.delay(10_000) == 300


# -- arbitrary JSON at every level of spec.pods[] -------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 80), max_value=2 ** 80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)
names = st.sampled_from(["main", "c", "", "C", "a" * 64, "ü", " x"]) | st.text(max_size=8)
container = st.fixed_dictionaries({"name": names, "image": st.sampled_from(["nginx", "", " x"]) | json_values},
                                  optional={f: json_values for f in ("env", "ports", "resources", "securityContext",
                                                                     "command", "volumeMounts", "envFrom")})
pod_spec = st.fixed_dictionaries({"containers": st.lists(container | json_values, max_size=3) | json_values},
                                 optional={f: json_values for f in ("volumes", "initContainers", "hostNetwork",
                                                                    "nodeName", "securityContext", "affinity")})
pod_meta = st.fixed_dictionaries({"name": st.sampled_from(["web", "Web", "a.b", ""]) | json_values},
                                 optional={"labels": st.dictionaries(st.text(max_size=8), json_values, max_size=3)
                                           | json_values, "namespace": json_values})
arbitrary_pod = (st.fixed_dictionaries({"apiVersion": st.just("v1"), "kind": st.just("Pod"),
                                        "metadata": pod_meta | json_values, "spec": pod_spec | json_values})
                 | json_values)


def _deep(depth: int) -> Any:
    v: Any = "x"
    for _ in range(depth):
        v = [v] if depth % 2 else {"k": v}
    return v


hostile = arbitrary_pod | st.builds(lambda d: pod("deep", affinity=_deep(d)), st.integers(1, 200)) \
    | st.builds(lambda n: pod("huge", containers=[{"name": "c", "image": "x" * n}]), st.integers(1, 400_000))


class TestFuzzingTheRecorder:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(bad=st.lists(hostile, min_size=1, max_size=4), at=st.integers(0, 4))
    @example(bad=[pod("a" * 254)], at=0)  # the strategies make names of <= 20 characters; the status holds <= 253
    def test_no_exception_escapes_valid_siblings_recorded_nothing_kubelet_refuses(self, bad, at):
        errors: list = []
        good = [pod("good-one"), pod("good-two", image="redis")]
        pods = [*copy.deepcopy(bad)]
        pods[at % (len(pods) + 1):at % (len(pods) + 1)] = good
        with tempfile.TemporaryDirectory() as tmp:
            store = LogStore(Path(tmp) / "log")
            try:
                rec = Recorder(store, notify=lambda nodes: None, on_error=lambda key, exc: errors.append(exc))
                rec.listed([edgenode("edge01", "tenant", *pods), edgenode("edge02", "other", pod("web"))])
                rec.changed(edgenode("edge01", "tenant", *reversed(pods)))
                assert errors == []
                assert {("other", "web")} == set(store.pods("edge02"))
                names = set(store.pods("edge01"))
                assert {("tenant", "good-one"), ("tenant", "good-two")} <= names
                for node in ("edge01", "edge02"):
                    for key, entry in store.pods(node).items():
                        assert kubelet_refusal(entry.manifest) is None, (key, entry.manifest[:300])
                # the status can list every rejection: its list-map needs unique names of 1-253 characters
                rejected = [r.name for r in desired_node(edgenode("edge01", "tenant", *pods)).rejected]
                assert len(set(rejected)) == len(rejected) and all(0 < len(n) <= 253 for n in rejected)
            finally:
                store.close()

    @settings(max_examples=150, deadline=None)
    @given(whole=json_values)
    def test_arbitrary_edgenode_specs_never_raise(self, whole):
        d = desired_node(edgenode("edge01", "tenant", spec=whole))
        for manifest in d.pods.values():
            assert kubelet_refusal(manifest) is None


# -- the daemon's wiring: a failing watch event is counted and retried alone ---------------
class TestDaemonHandlingOneObject:
    def test_a_watch_event_that_fails_is_counted_and_retried_not_raised(self, store, monkeypatch):
        from manager.daemon import Daemon
        from manager.sync_service import SyncSettings
        from manager.watching import Changed, Listed

        daemon = Daemon(store=store, custom=None, core=None, namespace=None, retention=None,
                        compaction_interval=60, status_refresh_seconds=90, sync_settings=SyncSettings())

        def boom(obj):
            raise RuntimeError("a bug outside the recorder's own guard")

        monkeypatch.setattr(daemon.recorder, "changed", boom)
        with captured_logs("WARNING") as lines:
            daemon.intake.edgenode_item(Changed("MODIFIED", edgenode("edge01", "boom", pod("a"))))
        assert [(line.level, line.message.split(";")[0]) for line in lines] == [
            ("ERROR", "EdgeNode boom/edge01 could not be handled")]  # logged once, naming the object
        assert daemon.metrics.object_errors._value.get() == 1
        assert daemon.recorder.retries.pending() == {("boom", "edge01")}
        monkeypatch.undo()
        daemon.intake.edgenode_item(Listed([edgenode("edge01", "boom", pod("a")), edgenode("edge02", "ok", pod("b"))], "9"))
        assert daemon.ready() is False and daemon.intake.edgenodes_listed.is_set()  # listed (ready once serving agents)
        assert set(store.pods("edge01")) == {("boom", "a")} and daemon.recorder.retries.pending() == set()
