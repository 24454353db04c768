"""An agent given several managers reaches the leader: a standby's "not the leader" sends it on at once.

The standbys are fakes (tests/kit/standbys.py) that answer as proto/sync.proto says a manager
that does not lead answers; the leader is the real sync service. The backoff is made
deterministic and long, so "no backoff" is a measurable gap.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from loguru import logger

from agent.sync_client import ELECTION_RETRY_MAX_SECONDS, Report, SyncClient
from edgecommon.backoff import NO_JITTER, Backoff
from eventlog import LogStore, ReplicaStore
from tests.kit.builders import put
from tests.kit.processes import free_port
from tests.kit.servers import serving
from tests.kit.standbys import FakeStandby
from tests.kit.waits import run, wait_until

FIRST_STEP = 5.0  # the backoff's first delay: a redirect that waited for it would take this long


async def _ok() -> Report:
    return Report(manifests_ok=True)


def _client(addresses: list[str], replica: ReplicaStore, *, initial: float = FIRST_STEP,
            maximum: float = FIRST_STEP) -> SyncClient:
    client = SyncClient(node=replica.node, addresses=addresses, replica=replica, after_apply=_ok)
    client.backoff = Backoff(initial=initial, maximum=maximum, jitter=NO_JITTER)  # exact delays
    return client


class _Lines:
    """The agent's log lines at INFO and above while the scenario runs: (level, message)."""

    def __enter__(self) -> list[tuple[str, str]]:
        self.lines: list[tuple[str, str]] = []
        self._sink = logger.add(lambda m: self.lines.append((m.record["level"].name, m.record["message"])),
                                level="INFO")
        return self.lines

    def __exit__(self, *exc: object) -> None:
        logger.remove(self._sink)


def _redirect_lines(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(level, m) for level, m in lines if "is not the leader" in m]


def test_a_standby_sends_the_agent_to_the_leader_it_names_at_once(store: LogStore, tmp_path: Path) -> None:
    store.append([put("edge01", "web")])
    replica = ReplicaStore(tmp_path / "replica", node="edge01")

    async def scenario() -> None:
        async with serving(store) as leader:
            with FakeStandby(leader=leader.address) as first, FakeStandby(leader=leader.address) as second, \
                    _Lines() as lines:
                # the hinted leader is preferred to the next address in the list
                client = _client([first.address, second.address, leader.address], replica)
                started = time.monotonic()
                task = asyncio.create_task(client.run())
                try:
                    await wait_until(lambda: client.applied_offset == 1, what="synced with the leader")
                    took = time.monotonic() - started
                finally:
                    task.cancel()
                assert took < FIRST_STEP / 5, f"reached the leader after {took:.2f}s: a backoff delay was waited"
                assert (len(first.attempts), len(second.attempts)) == (1, 0)
                assert client.address == leader.address and client.leader_redirects == 1
                assert client.backoff.attempt == 0 and client.snapshots_installed == 1
                assert _redirect_lines(lines) == [
                    ("INFO", f"sync: {first.address} is not the leader (the leader is at {leader.address}); "
                             f"trying {leader.address}")]
                assert not [m for level, m in lines if level in ("WARNING", "ERROR")], lines

    run(scenario())
    replica.close()


def test_without_a_hint_among_its_addresses_the_agent_tries_the_next_at_once(store: LogStore, tmp_path: Path) -> None:
    store.append([put("edge01", "web")])
    replica = ReplicaStore(tmp_path / "replica", node="edge01")

    async def scenario() -> None:
        async with serving(store) as leader:
            # one standby knows no leader yet, the other names an address the agent was not given
            with FakeStandby(leader=None) as unsure, FakeStandby(leader="10.9.9.9:50051") as elsewhere, \
                    _Lines() as lines:
                client = _client([unsure.address, elsewhere.address, leader.address], replica)
                started = time.monotonic()
                task = asyncio.create_task(client.run())
                try:
                    await wait_until(lambda: client.applied_offset == 1, what="synced with the leader")
                    took = time.monotonic() - started
                finally:
                    task.cancel()
                assert took < FIRST_STEP / 5, f"reached the leader after {took:.2f}s: a backoff delay was waited"
                assert (len(unsure.attempts), len(elsewhere.attempts), client.leader_redirects) == (1, 1, 2)
                assert [m for _, m in _redirect_lines(lines)] == [
                    f"sync: {unsure.address} is not the leader (it knows no leader); trying {elsewhere.address}",
                    f"sync: {elsewhere.address} is not the leader (the leader is at 10.9.9.9:50051, not one of the "
                    f"--sync-server addresses); trying {leader.address}",
                ]

    run(scenario())
    replica.close()


def test_only_standbys_back_off_as_any_failure_does(tmp_path: Path) -> None:
    replica = ReplicaStore(tmp_path / "replica", node="edge01")
    window = 5.0

    async def scenario() -> None:
        # an election under way: nobody leads, or they name each other
        with FakeStandby(leader=None) as a, FakeStandby(leader=None) as b, _Lines() as lines:
            client = _client([a.address, b.address], replica, initial=0.2, maximum=1.0)
            started = time.monotonic()
            task = asyncio.create_task(client.run())
            await asyncio.sleep(window)  # the observation window itself: attempts are counted over it
            task.cancel()
            attempts = sorted(a.attempts + b.attempts)
            # one round of the list at once, then the backoff (0.2, 0.4, 0.8, 1, 1...) before each next round:
            # 2 attempts per round, ~7 rounds in 5 s; a tight loop makes thousands
            assert 6 <= len(attempts) <= 2 * 8, attempts
            rounds = [t for t, before in zip(attempts[1:], attempts) if t - before >= 0.15]
            assert len(rounds) >= len(attempts) // 2 - 1, "more than one attempt per round went without a delay"
            assert attempts[0] - started < 0.5 and client.backoff.attempt >= 4
            assert client.leader_redirects == len(attempts) and not client.connected
            redirects = _redirect_lines(lines)
            assert redirects == [("INFO", f"sync: {a.address} is not the leader (it knows no leader); "
                                          f"trying {b.address}")]
            warnings = [m for level, m in lines if level == "WARNING"]
            assert len(warnings) == 1 and "not the leader; no leader known" in warnings[0], warnings

    run(scenario())
    replica.close()


def test_during_an_election_the_agent_retries_within_seconds_and_reaches_the_new_leader_soon(
        store: LogStore, tmp_path: Path) -> None:
    """A dead leader and a standby that knows no leader yet: the backoff would climb to 30 s; a failover must
    not wait for that, so while a manager answers "not the leader" the agent retries within 4 s."""
    store.append([put("edge01", "web")])
    replica = ReplicaStore(tmp_path / "replica", node="edge01")
    port = free_port()  # the new leader's address: nothing listens there until it takes over

    async def scenario() -> None:
        with FakeStandby(leader=None) as standby:
            client = _client([f"127.0.0.1:{port}", standby.address], replica, initial=0.5, maximum=30.0)
            task = asyncio.create_task(client.run())
            try:
                await asyncio.sleep(12)  # an election: the 30 s backoff would reach 8 s and 16 s by now
                attempts = standby.attempts
                gaps = [b - a for a, b in zip(attempts, attempts[1:])]
                assert len(attempts) >= 4 and max(gaps) <= ELECTION_RETRY_MAX_SECONDS + 0.5, gaps
                async with serving(store, port=port):  # the standby took over at the dead leader's address
                    started = time.monotonic()
                    await wait_until(lambda: client.applied_offset == 1, timeout=15, what="synced with the new leader")
                    took = time.monotonic() - started
                assert took <= ELECTION_RETRY_MAX_SECONDS + 1.0, f"reached the new leader {took:.1f}s after it led"
            finally:
                task.cancel()

    run(scenario())
    replica.close()


def test_the_agent_process_counts_its_redirects(logserver, agents) -> None:
    logserver.append([put("edge01", "web", ns="ns")])
    with FakeStandby(leader=logserver.address) as standby:
        a = agents(node="edge01", servers=[standby.address, logserver.address])
        a.start()
        a.wait_applied(logserver.head("edge01"))
        assert a.metrics()["k8s_edge_agent_leader_redirects_total"] == 1
        assert a.log().count(f"sync: {standby.address} is not the leader (the leader is at {logserver.address}); "
                             f"trying {logserver.address}") == 1
        assert len(standby.attempts) == 1
