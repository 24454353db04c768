"""Leader election's timing rules (client-go's), one attempt at a time, over an in-memory Lease and a manual clock.

The behaviour against a real apiserver (threads, takeover, partitions, races) is in
test_leader_election_on_a_lease.py; here only what needs a clock the test moves.
"""

from __future__ import annotations

import logging
import re

import pytest

from manager.leader_election import SYNC_ADDRESS_ANNOTATION, LeaderElector
from manager.settings import LeaseSettings
from tests.kit.leases import FakeClock, FakeLeaseApi, settings

NAME = "edge-manager"


def make(api: FakeLeaseApi, clock: FakeClock, identity: str = "a", **kw) -> LeaderElector:
    return LeaderElector(api, settings(identity, **kw), on_started_leading=lambda: None,
                         on_stopped_leading=lambda: None, clock=clock)


def spec(api: FakeLeaseApi) -> dict:
    return api.leases[NAME]["spec"]


class TestTakingALeaseHeldByAnother:
    def test_only_after_the_record_stayed_unchanged_for_the_lease_duration_by_the_local_clock(self):
        api, clock = FakeLeaseApi(), FakeClock()
        api.put_holder(NAME, "b", renew="2000-01-01T00:00:00.000000Z")  # renewTime long past: not what counts
        a = make(api, clock)
        assert not a.try_acquire_or_renew()
        clock.advance(14.9)
        assert not a.try_acquire_or_renew()
        clock.advance(0.2)
        assert a.try_acquire_or_renew()
        assert spec(api)["holderIdentity"] == "a"

    def test_the_wait_starts_when_the_read_returned_not_when_it_was_sent(self):
        api, clock = FakeLeaseApi(), FakeClock()
        api.put_holder(NAME, "b")
        a = make(api, clock)
        api.during_call = lambda what: clock.advance(3) if what == "read" else None  # a slow read
        start = clock()
        assert not a.try_acquire_or_renew()
        clock.now = start + 15.5  # 15.5 s after the read was sent, 12.5 s after it was seen
        assert not a.try_acquire_or_renew()

    def test_a_change_of_the_record_restarts_the_wait(self):
        api, clock = FakeLeaseApi(), FakeClock()
        api.put_holder(NAME, "b", renew="2026-01-01T00:00:00.000000Z")
        a = make(api, clock)
        assert not a.try_acquire_or_renew()
        clock.advance(10)
        api.put_holder(NAME, "b", renew="2026-01-01T00:00:10.000000Z")  # b renewed
        assert not a.try_acquire_or_renew()
        clock.advance(10)
        assert not a.try_acquire_or_renew()
        clock.advance(5.1)
        assert a.try_acquire_or_renew()

    def test_the_wait_is_the_records_lease_duration_not_our_own(self):
        api, clock = FakeLeaseApi(), FakeClock()
        api.put_holder(NAME, "b", duration=30)
        a = make(api, clock)
        assert not a.try_acquire_or_renew()
        clock.advance(20)
        assert not a.try_acquire_or_renew()
        clock.advance(10.1)
        assert a.try_acquire_or_renew()

    def test_a_lease_without_holder_is_taken_at_once_and_counts_a_transition(self):
        api, clock = FakeLeaseApi(), FakeClock()
        api.put_holder(NAME, "", transitions=4)
        assert make(api, clock).try_acquire_or_renew()
        assert spec(api)["holderIdentity"] == "a" and spec(api)["leaseTransitions"] == 5

    def test_a_409_on_the_takeover_is_a_lost_race(self):
        api, clock = FakeLeaseApi(), FakeClock()
        api.put_holder(NAME, "")
        a = make(api, clock)
        api.conflict_next_replace = True
        assert not a.try_acquire_or_renew()
        assert not a.is_leader()
        assert spec(api)["holderIdentity"] == ""

    def test_a_409_on_create_is_a_lost_race(self):
        api, clock = FakeLeaseApi(), FakeClock()
        a = make(api, clock)
        api.during_call = lambda what: api.put_holder(NAME, "b") if what == "create" else None
        assert not a.try_acquire_or_renew()  # b created it between our read (404) and our create
        assert api.calls == ["read", "create"] and spec(api)["holderIdentity"] == "b"


class TestTheRecordWritten:
    def test_create_sets_what_client_go_sets_and_the_sync_address(self):
        api, clock = FakeLeaseApi(), FakeClock()
        assert make(api, clock, lease=15.9).try_acquire_or_renew()
        s = spec(api)
        assert s["holderIdentity"] == "a" and s["leaseDurationSeconds"] == 15  # whole seconds, truncated
        assert s["acquireTime"] == s["renewTime"] and s["renewTime"].endswith("Z") and len(s["renewTime"]) == 27
        assert s["leaseTransitions"] == 0
        assert api.leases[NAME]["metadata"]["annotations"][SYNC_ADDRESS_ANNOTATION] == "a:7000"

    def test_a_renew_keeps_acquire_time_and_transitions_and_updates_the_cached_object_first(self):
        api, clock = FakeLeaseApi(), FakeClock()
        a = make(api, clock)
        assert a.try_acquire_or_renew()
        first = dict(spec(api))
        clock.advance(2)
        api.calls.clear()
        assert a.try_acquire_or_renew()
        assert api.calls == ["replace"]
        assert spec(api)["acquireTime"] == first["acquireTime"]
        assert spec(api)["leaseTransitions"] == first["leaseTransitions"]
        assert spec(api)["renewTime"] >= first["renewTime"]

    def test_a_409_on_the_cached_object_falls_back_to_a_read(self):
        api, clock = FakeLeaseApi(), FakeClock()
        a = make(api, clock)
        assert a.try_acquire_or_renew()
        api.calls.clear()
        api.conflict_next_replace = True
        assert a.try_acquire_or_renew()
        assert api.calls == ["replace", "read", "replace"]

    def test_a_leader_that_reads_another_holder_is_not_leader(self):
        api, clock = FakeLeaseApi(), FakeClock()
        a = make(api, clock)
        assert a.try_acquire_or_renew()
        api.put_holder(NAME, "b", transitions=1)  # b took it (a's cached resourceVersion is now stale)
        assert not a.try_acquire_or_renew()
        assert a.observed().holder_identity == "b"


class TestTheFence:
    def test_is_leader_ends_renew_deadline_after_the_last_successful_renew_without_any_call(self):
        api, clock = FakeLeaseApi(), FakeClock()
        a = make(api, clock)
        assert a.try_acquire_or_renew()
        clock.advance(9.99)
        assert a.is_leader()
        clock.advance(0.02)
        assert not a.is_leader()

    def test_the_fence_counts_from_the_start_of_the_request(self):
        api, clock = FakeLeaseApi(), FakeClock()
        a = make(api, clock)
        api.during_call = lambda what: clock.advance(3)  # a slow API: the write lands 3 s after we asked
        start = clock()
        assert a.try_acquire_or_renew()
        clock.now = start + 9.99
        assert a.is_leader()
        clock.now = start + 10.01
        assert not a.is_leader()

    def test_requests_while_leading_time_out_before_the_fence(self):
        api, clock = FakeLeaseApi(), FakeClock()
        a = make(api, clock)
        assert api.timeouts == [] and a.try_acquire_or_renew()
        assert api.timeouts[-1] == pytest.approx(10)  # not leading: bounded by the renew deadline
        clock.advance(7)
        api.fail = True
        assert not a.try_acquire_or_renew()
        assert max(api.timeouts[-2:]) <= 3.0 + 1e-9  # the fast path and the read: only what is left

    def test_past_the_fence_no_request_is_sent(self):
        api, clock = FakeLeaseApi(), FakeClock()
        a = make(api, clock)
        assert a.try_acquire_or_renew()
        clock.advance(10)
        api.calls.clear()
        assert not a.try_acquire_or_renew()
        assert api.calls == []


class TestReleasing:
    def test_release_clears_the_holder_as_client_go_does_and_another_takes_over_at_once(self):
        api, clock = FakeLeaseApi(), FakeClock()
        a, b = make(api, clock), make(api, clock, "b")
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
        assert a.release()
        s = spec(api)
        assert s["holderIdentity"] == "" and s["leaseDurationSeconds"] == 1 and s["leaseTransitions"] == 0
        assert SYNC_ADDRESS_ANNOTATION not in api.leases[NAME]["metadata"]["annotations"]
        assert not a.is_leader()
        assert b.try_acquire_or_renew()
        assert spec(api)["holderIdentity"] == "b" and spec(api)["leaseTransitions"] == 1

    def test_release_of_a_lease_held_by_another_writes_nothing(self):
        api, clock = FakeLeaseApi(), FakeClock()
        api.put_holder(NAME, "b")
        a = make(api, clock)
        assert not a.try_acquire_or_renew()
        api.calls.clear()
        assert a.release()
        assert api.calls == ["read"] and spec(api)["holderIdentity"] == "b"


def test_a_failing_api_is_logged_once_per_error_not_once_per_retry(caplog):
    caplog.set_level(logging.DEBUG, logger="manager.leader_election")
    api, clock = FakeLeaseApi(fail=True), FakeClock()
    a = make(api, clock)
    for _ in range(5):
        assert not a.try_acquire_or_renew()
        clock.advance(2)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 1 and "reading the lease: HTTP" not in lines[0] and "connection refused" in lines[0]


@pytest.mark.parametrize("kw, message", [
    (dict(lease=15, renew=15, retry=2),
     "lease duration (15s, whole seconds in the Lease) must be longer than the renew deadline (15s)"),
    (dict(lease=10.9, renew=10, retry=2), "lease duration (10.9s, whole seconds in the Lease) must be longer"),
    (dict(lease=15, renew=2.4, retry=2), "renew deadline (2.4s) must be longer than 1.2 x the retry period (2s)"),
    (dict(lease=15, renew=10, retry=0), "retry period must be positive, not 0s"),
])
def test_timings_are_checked_as_client_go_checks_them(kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        settings("a", **kw)


def test_an_empty_identity_is_refused():
    with pytest.raises(ValueError, match="the lease identity must not be empty"):
        LeaseSettings(namespace="ns", name="n", identity="", lease_duration=15, renew_deadline=10,
                      retry_period=2, sync_address="x:1")
