"""The manager labels its own Pod edge.k8s.io/manager-role=leader|standby, proven against kube-apiserver.

A Pod object is enough (no kubelet runs it): the label is metadata a Service selects on. A
Pod that cannot be labelled (missing, forbidden) costs one warning line, never the manager.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loguru import logger

from edgecommon.backoff import NO_JITTER, Backoff
from manager.pod_role import ROLE_LABEL, PodRoleLabel, Role
from tests.kit.waits import wait_for


def _pod(cp: Any, namespace: str, name: str) -> None:
    """A Pod object as a StatefulSet's template makes it: with its own labels."""
    cp.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "edge-manager"}},
        "spec": {"containers": [{"name": "edge-manager", "image": "edge-manager"}],
                 "automountServiceAccountToken": False},
    }))


def _labels(cp: Any, namespace: str, name: str) -> dict[str, str]:
    out = cp.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout
    return json.loads(out)["metadata"].get("labels") or {}


@contextmanager
def _labelling(cp: Any, namespace: str, name: str) -> Iterator[tuple[PodRoleLabel, list[tuple[str, str]]]]:
    """A PodRoleLabel on its thread over the real CoreV1Api, retrying quickly; and its log lines (level, text)."""
    from kubernetes import client

    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, m.record["message"])), level="INFO")
    labeller = PodRoleLabel(client.CoreV1Api(cp.api_client()), namespace=namespace, name=name,
                            backoff=Backoff(initial=0.05, maximum=0.2, jitter=NO_JITTER))
    stop = threading.Event()
    thread = threading.Thread(target=labeller.run, args=(stop,), name="pod-role", daemon=True)
    thread.start()
    try:
        yield labeller, lines
        assert thread.is_alive(), "the labeller's thread died"
    finally:
        stop.set()
        thread.join(10)
        logger.remove(sink)
    assert not thread.is_alive(), "the labeller did not stop"


def test_the_pod_is_labelled_leader_then_standby_and_keeps_its_other_labels(control_plane, namespace):
    cp = control_plane
    _pod(cp, namespace, "edge-manager-0")
    with _labelling(cp, namespace, "edge-manager-0") as (labeller, lines):
        labeller.set(Role.LEADER)
        wait_for(lambda: _labels(cp, namespace, "edge-manager-0").get(ROLE_LABEL) == "leader", 30, "label leader")
        # what deploy/manager.yaml's agent Service selects
        selected = cp.kubectl("get", "pods", "-n", namespace, "-l", f"{ROLE_LABEL}=leader", "-o", "name").stdout
        assert selected.split() == ["pod/edge-manager-0"]
        labeller.set(Role.STANDBY)
        wait_for(lambda: _labels(cp, namespace, "edge-manager-0").get(ROLE_LABEL) == "standby", 30,
                 "label standby")
        assert _labels(cp, namespace, "edge-manager-0") == {"app.kubernetes.io/name": "edge-manager",
                                                              ROLE_LABEL: "standby"}
        labeller.set(Role.STANDBY)  # already so: no request
        wait_for(lambda: labeller.labelled is Role.STANDBY, 30, "the labelled role known")
        assert (labeller.patches, labeller.failures) == (2, 0)
    assert [m for _, m in lines] == [f"labelled Pod {namespace}/edge-manager-0 {ROLE_LABEL}=leader",
                                     f"labelled Pod {namespace}/edge-manager-0 {ROLE_LABEL}=standby"]


def test_a_missing_pod_is_one_warning_and_is_labelled_once_it_exists(control_plane, namespace):
    cp = control_plane
    with _labelling(cp, namespace, "edge-manager-1") as (labeller, lines):
        labeller.set(Role.LEADER)
        wait_for(lambda: labeller.failures >= 5, 30, "retries of the patch")  # ~0.2 s apart
        warnings = [m for level, m in lines if level == "WARNING"]
        assert warnings == [f'could not label Pod {namespace}/edge-manager-1 {ROLE_LABEL}=leader: HTTP 404 Not '
                            f'Found: pods "edge-manager-1" not found (retrying with backoff; a Service selecting '
                            f'the leader has no endpoint here meanwhile, agents find the leader through their '
                            f'--sync-server addresses)'], warnings
        _pod(cp, namespace, "edge-manager-1")  # e.g. the API was slow to show the Pod just created
        wait_for(lambda: _labels(cp, namespace, "edge-manager-1").get(ROLE_LABEL) == "leader", 30, "label leader")
        wait_for(lambda: labeller.labelled is Role.LEADER, 30, "the labelled role known")
    assert len([m for level, m in lines if level == "WARNING"]) == 1
    assert [m for level, m in lines if level == "INFO"] == [
        f"labelled Pod {namespace}/edge-manager-1 {ROLE_LABEL}=leader after {labeller.failures} failed attempt(s); "
        f'the last error: HTTP 404 Not Found: pods "edge-manager-1" not found']


class _FlakyApi:
    """A CoreV1Api stand-in: records each patch; fails the first `failures` with a non-API error."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.bodies: list[dict] = []
        self.calls = 0

    def patch_namespaced_pod(self, name, namespace, body, **kw):  # noqa: ANN001, ANN003
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionResetError("connection reset by peer")
        assert kw["_content_type"] == "application/merge-patch+json"
        self.bodies.append(body)


def _run(labeller: PodRoleLabel) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=labeller.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def test_only_the_newest_role_is_written():
    api = _FlakyApi()
    labeller = PodRoleLabel(api, namespace="k8s-edge", name="edge-manager-0")
    labeller.set(Role.LEADER)
    labeller.set(Role.STANDBY)  # lost the lease before the first patch went out
    stop, thread = _run(labeller)
    wait_for(lambda: labeller.labelled is Role.STANDBY, 10, "the label written")
    stop.set()
    thread.join(10)
    assert api.bodies == [{"metadata": {"labels": {ROLE_LABEL: "standby"}}}]


def test_a_connection_error_is_retried_and_never_ends_the_labeller():
    api = _FlakyApi(failures=3)
    labeller = PodRoleLabel(api, namespace="k8s-edge", name="edge-manager-0",
                            backoff=Backoff(initial=0.01, maximum=0.05, jitter=NO_JITTER))
    stop, thread = _run(labeller)
    labeller.set(Role.LEADER)
    wait_for(lambda: labeller.labelled is Role.LEADER, 10, "the label written after the failures")
    assert (labeller.failures, labeller.patches, thread.is_alive()) == (3, 1, True)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
