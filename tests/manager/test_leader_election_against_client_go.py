"""Our elector and client-go's own (tools/leaderelection, built from the pinned modules) on one Lease.

Each must read the other's record as its own kind: never both leading, and each takes over
from the other both ways, after a crash (lease expiry) and after a release.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.kit.leases import ClientGoElector, RunningElector, build_clientgo_elector, lease_api, parse_micro, settings
from tests.kit.waits import wait_for

NAME = "edge-manager"
LEASE, RENEW, RETRY = 3, 2.0, 0.5


@pytest.fixture(scope="module")
def clientgo_elector(tmp_path_factory):
    return build_clientgo_elector(tmp_path_factory.mktemp("clientgo-elector"))


@pytest.fixture
def contenders(control_plane, namespace, clientgo_elector, tmp_path):
    ours: list[RunningElector] = []
    theirs: list[ClientGoElector] = []

    def python(identity: str) -> RunningElector:
        e = RunningElector(lease_api(control_plane), settings(identity, namespace=namespace, lease=LEASE,
                                                              renew=RENEW, retry=RETRY))
        ours.append(e)
        return e.start()

    def go(identity: str) -> ClientGoElector:
        s = settings(identity, namespace=namespace, lease=LEASE, renew=RENEW, retry=RETRY)
        g = ClientGoElector(clientgo_elector, kubeconfig=control_plane.kubeconfig, s=s,
                            log_path=tmp_path / f"clientgo-{identity}.log")
        theirs.append(g)
        return g

    yield python, go
    for e in ours:
        e.stop_event.set()
    for g in theirs:
        g.kill()
    for e in ours:
        e.thread.join(timeout=15)


def spec(control_plane, namespace: str) -> dict:
    return json.loads(control_plane.kubectl("get", "lease", NAME, "-n", namespace, "-o", "json").stdout)["spec"]


def never_both(a_leads, b_leads, seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert not (a_leads() and b_leads()), "both electors lead"
        time.sleep(0.02)


def test_client_go_leads_ours_waits_then_takes_over_after_a_crash_and_client_go_waits(
        contenders, control_plane, namespace):
    python, go = contenders
    g = go("go-1")
    wait_for(g.leading, 30, "client-go to lead")
    ours = python("py-1")
    wait_for(lambda: ours.elector.observed() is not None, 20, "ours to read the lease")
    never_both(g.leading, ours.is_leader, 2 * LEASE)
    assert g.leading() and not ours.is_leader() and ours.elector.observed().holder_identity == "go-1"
    last = spec(control_plane, namespace)
    g.kill()  # a crash: the Lease expires
    wait_for(ours.is_leader, LEASE + 2 * 2.2 * RETRY + 10, "ours to take over from client-go")
    took = spec(control_plane, namespace)
    assert took["holderIdentity"] == "py-1" and took["leaseTransitions"] == last["leaseTransitions"] + 1
    assert parse_micro(took["acquireTime"]) - parse_micro(last["renewTime"]) >= LEASE

    g2 = go("go-2")  # client-go reads our record and waits while we renew
    wait_for(lambda: "leader py-1" in g2.lines, 20, "client-go to see ours lead")
    never_both(g2.leading, ours.is_leader, 2 * LEASE)
    assert ours.is_leader() and not g2.leading()
    ours.stop()  # a crash of ours, as client-go can tell
    wait_for(g2.leading, LEASE + 2 * 2.2 * RETRY + 10, "client-go to take over from ours")
    took2 = spec(control_plane, namespace)
    assert took2["holderIdentity"] == "go-2"
    assert took2["leaseTransitions"] == took["leaseTransitions"] + 1
    assert g2.times("started")[0] > ours.stopped[0]


def test_releases_hand_over_both_ways_within_a_retry_period(contenders, control_plane, namespace):
    python, go = contenders
    ours = python("py-1")
    wait_for(ours.is_leader, 20, "ours to lead")
    g = go("go-1")
    wait_for(lambda: "leader py-1" in g.lines, 30, "client-go to see ours lead")
    released_at = time.time()
    assert ours.release()
    wait_for(g.leading, 10, "client-go to take over after our release", interval=0.02)
    assert g.times("started")[0] - released_at <= 2.2 * RETRY + 1.0
    assert spec(control_plane, namespace)["holderIdentity"] == "go-1"

    ours2 = python("py-2")
    wait_for(lambda: ours2.elector.observed() is not None
             and ours2.elector.observed().holder_identity == "go-1", 20, "ours to see client-go lead")
    released_at = time.time()
    g.terminate()  # ReleaseOnCancel
    assert g.times("stopped")
    wait_for(ours2.is_leader, 10, "ours to take over after client-go's release", interval=0.02)
    assert time.time() - released_at <= 2.2 * RETRY + 1.0
    s = spec(control_plane, namespace)
    assert s["holderIdentity"] == "py-2" and s["leaseTransitions"] == 2
