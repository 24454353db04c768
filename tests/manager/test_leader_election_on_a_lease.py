"""Leader election against the real kube-apiserver: one leader, takeover, release, partition, racing electors.

Short timings (lease 3 s, renew deadline 2 s, retry period 0.5 s) keep each test to seconds;
the rules themselves are the same at 15/10/2.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from urllib.parse import urlparse

import pytest

from tests.kit.leases import RunningElector, lease_api, parse_micro, settings
from tests.kit.relay import TcpRelay
from tests.kit.waits import wait_for

NAME = "edge-manager"
LEASE, RENEW, RETRY = 3, 2.0, 0.5
SLACK = 0.3  # seconds a callback may run after the instant it is due (threads on a shared 2-core machine)


@pytest.fixture
def electors(control_plane, namespace, tmp_path):
    made: list[RunningElector] = []

    def start(identity: str, *, host: str | None = None, lease=LEASE, renew=RENEW, retry=RETRY,
              run: bool = True) -> RunningElector:
        s = settings(identity, namespace=namespace, lease=lease, renew=renew, retry=retry)
        e = RunningElector(lease_api(control_plane, host=host, workdir=tmp_path), s)
        made.append(e)
        return e.start() if run else e

    yield start
    for e in made:
        e.stop_event.set()
    for e in made:
        e.thread.join(timeout=15)


def read_lease(control_plane, namespace: str) -> dict:
    return json.loads(control_plane.kubectl("get", "lease", NAME, "-n", namespace, "-o", "json").stdout)


def sees(e: RunningElector, holder: str) -> bool:
    obs = e.elector.observed()
    return obs is not None and obs.holder_identity == holder


class TestOneLeaderAndTakeover:
    def test_one_leads_and_the_other_takes_over_only_after_the_lease_duration_of_an_unchanged_record(
            self, electors, control_plane, namespace):
        a = electors("a")
        wait_for(a.is_leader, 20, "a to lead")
        b = electors("b")
        wait_for(lambda: sees(b, "a"), 20, "b to see a lead")
        assert b.elector.observed().sync_address == "a:7000"  # the annotation, read back by the other
        until = time.monotonic() + 2 * LEASE
        while time.monotonic() < until:  # a renews; b never takes it
            assert a.is_leader() and not b.is_leader()
            time.sleep(0.05)
        lease = read_lease(control_plane, namespace)["spec"]
        assert lease["holderIdentity"] == "a" and lease["leaseDurationSeconds"] == LEASE
        assert lease["leaseTransitions"] == 0
        assert parse_micro(lease["renewTime"]) - parse_micro(lease["acquireTime"]) >= LEASE  # renewed, acquire kept

        a.stop()  # a crash, as b can tell: no release, the record just stops changing
        stopped_at = time.time()
        last = read_lease(control_plane, namespace)["spec"]
        assert last["holderIdentity"] == "a" and a.stop_reasons == ["stopping"]
        wait_for(b.is_leader, LEASE + 2.2 * RETRY + 10, "b to take over")
        took = read_lease(control_plane, namespace)["spec"]
        assert took["holderIdentity"] == "b" and took["leaseTransitions"] == 1
        assert parse_micro(took["acquireTime"]) - parse_micro(last["renewTime"]) >= LEASE
        assert parse_micro(took["acquireTime"]) - stopped_at <= LEASE + 2.2 * RETRY + 1.0
        assert b.started and b.elector.observed().sync_address == "b:7000"

    def test_release_hands_over_within_a_retry_period_and_transitions_count_each_change_of_holder(
            self, electors, control_plane, namespace):
        a = electors("a")
        wait_for(a.is_leader, 20, "a to lead")
        b = electors("b")
        wait_for(lambda: sees(b, "a"), 20, "b to see a lead")

        released_at = time.time()
        assert a.release()
        assert not a.is_leader() and a.stopped and a.stopped[0] <= time.time()
        wait_for(b.is_leader, 10, "b to take over after the release", interval=0.02)
        assert time.time() - released_at <= 2.2 * RETRY + 1.0
        spec = read_lease(control_plane, namespace)["spec"]
        assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
        assert a.stopped[0] < parse_micro(spec["acquireTime"])  # a stopped leading before b took over

        a2 = electors("a")  # a again, a new process with the same identity
        wait_for(lambda: sees(a2, "b"), 20, "a to see b lead")
        assert b.release()
        wait_for(a2.is_leader, 10, "a to take over again")
        spec = read_lease(control_plane, namespace)["spec"]
        assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 2
        assert [r.holder_identity for r in a2.leaders if r.holder_identity][-2:] == ["b", "a"]


class TestPartition:
    def test_a_leader_cut_off_from_the_api_stops_leading_within_the_renew_deadline_before_another_takes_over(
            self, electors, control_plane, namespace):
        server = urlparse(control_plane.server)
        relay = TcpRelay((server.hostname, server.port))
        try:
            a = electors("a", host=relay.address)
            wait_for(a.is_leader, 20, "a to lead")
            b = electors("b")
            wait_for(lambda: sees(b, "a"), 20, "b to see a lead")
            last_true = [0.0]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    if a.is_leader():
                        last_true[0] = time.time()  # taken after the call: a late bound
                    time.sleep(0.002)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            time.sleep(0.3)
            relay.black_hole()  # requests hang: only the bounded request timeout ends them
            wait_for(b.is_leader, LEASE + RENEW + 10, "b to take over", interval=0.02)
            done.set()
            sampler.join()
            a_last_renew = parse_micro(a.elector.observed().renew_time)
            took = read_lease(control_plane, namespace)["spec"]
            assert took["holderIdentity"] == "b"
            assert len(a.stopped) == 1 and "renew deadline" in a.stop_reasons[0]
            assert a.stopped[0] <= a_last_renew + RENEW + SLACK
            assert last_true[0] <= a_last_renew + RENEW + 0.05
            assert a.stopped[0] < parse_micro(took["acquireTime"])
            assert last_true[0] < parse_micro(took["acquireTime"])

            relay.heal()  # back on the API, a sees b and stays a standby
            wait_for(lambda: sees(a, "b"), 20, "a to see b lead")
            assert not a.is_leader() and b.is_leader()
        finally:
            relay.close()


class TestRacingElectors:
    def test_three_electors_restarting_for_30s_never_lead_at_once(self, electors, control_plane, namespace, caplog):
        caplog.set_level(logging.DEBUG, logger="manager.leader_election")
        timing = dict(lease=2, renew=1.5, retry=0.25)
        rng = random.Random(14)
        live = {i: electors(i, run=False, **timing) for i in "abc"}
        for e in live.values():  # started together, all three read no Lease and race on the create
            e.start()
        everyone = list(live.values())
        violations: list[tuple[str, ...]] = []
        samples = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                leading = tuple(e.settings.identity for e in list(everyone) if e.is_leader())
                if time.perf_counter() - t0 < 0.001:  # a sample cut by a thread switch proves nothing
                    samples[0] += 1
                    if len(leading) > 1:
                        violations.append(leading)
                time.sleep(0.001)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        end = time.monotonic() + 30
        while time.monotonic() < end:
            time.sleep(rng.uniform(1.0, 2.5))
            leader = next((i for i, e in live.items() if e.is_leader()), None)
            if leader is None:
                continue
            old = live.pop(leader)
            if rng.random() < 0.6:
                old.release()
            else:
                old.stop()  # a crash: the others wait for the lease to expire
            fresh = f"{leader[0]}{len(everyone)}"  # a new identity, or it would just renew its own lease
            live[fresh] = electors(fresh, **timing)
            everyone.append(live[fresh])
        done.set()
        sampler.join()
        for e in live.values():
            e.release()
        assert violations == []
        assert samples[0] > 1000
        spec = read_lease(control_plane, namespace)["spec"]
        assert spec["leaseTransitions"] >= 6
        intervals = sorted((e.started[i], e.stopped[i] if i < len(e.stopped) else float("inf"))
                           for e in everyone for i in range(len(e.started)))
        for (_, end1), (start2, _) in zip(intervals, intervals[1:]):
            assert end1 < start2, "two electors' leading callbacks overlapped"
        conflicts = sum("409" in r.getMessage() for r in caplog.records)
        print(f"\n{samples[0]} samples, {spec['leaseTransitions']} transitions, {conflicts} lost races (409)")
        assert conflicts >= 1
