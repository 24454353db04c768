"""A standby finds the leader: a non-leader's "not the leader" hint is followed at once, failures back off quietly.

The hint is the trailing metadata `k8s-edge-leader`; without one (no leader known) the
standby retries with backoff. A repeating error is logged once, not once per try.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from eventlog import LogStore
from manager.following import Follower
from manager.peer_tls import peer_channel
from tests.kit.builders import put
from tests.kit.files import log_records
from tests.kit.follow_leaders import FakeLeader, Following, LostHelloChannels
from tests.kit.processes import free_port
from tests.kit.waits import run, wait_until


@pytest.fixture
def lines() -> Iterator[list[tuple[str, str]]]:
    """(level, message) of each log line while the test runs."""
    seen: list[tuple[str, str]] = []
    sink = logger.add(lambda m: seen.append((m.record["level"].name, m.record["message"])), level="DEBUG")
    yield seen
    logger.remove(sink)


def test_a_not_the_leader_answer_is_followed_to_the_hinted_leader_at_once(tmp_path: Path,
                                                                          lines: list[tuple[str, str]]) -> None:
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    leader_store.append([put("edge01", f"app{i}") for i in range(5)])
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> tuple[str, str]:
        async with FakeLeader(leader_store) as leader:
            async with FakeLeader(leader_store, leading=False, hint=leader.address) as stale:
                # the backoff would wait a minute: only an immediate move finishes in time
                follower = Follower(store_dir, LogStore(store_dir), identity="m1_00000000",
                                    leader_address=lambda: stale.address, channel=peer_channel(None),
                                    backoff_initial=60, backoff_max=60)
                async with Following(follower) as f:
                    await wait_until(lambda: follower.head_offset == 5, what="the hinted leader followed", timeout=10)
                    assert follower.address == leader.address
                assert stale.refused == 1 and follower.redirects == 1 and follower.reconnects == 0
                assert f.store is not None
                assert log_records(f.store) == log_records(leader_store)
                return stale.address, leader.address

    stale, leader = run(scenario())
    said = [m for level, m in lines if level == "INFO" and "is not the leader" in m]
    assert said == [f"follow: {stale} is not the leader; following the leader at {leader}"]


def test_without_a_known_leader_the_standby_backs_off_and_says_so_once(tmp_path: Path,
                                                                       lines: list[tuple[str, str]]) -> None:
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> None:
        async with FakeLeader(leader_store, leading=False) as stale:  # an election under way
            follower = Follower(store_dir, LogStore(store_dir), identity="m1_00000000",
                                leader_address=lambda: stale.address, channel=peer_channel(None),
                                backoff_initial=0.01, backoff_max=0.02)
            async with Following(follower):
                await wait_until(lambda: stale.refused >= 5, what="retries")
            assert follower.last_error == "UNAVAILABLE: not the leader; no leader known"
            assert follower.redirects == 0 and follower.reconnects >= 4

    run(scenario())
    about = [(level, m) for level, m in lines if "not the leader" in m and level != "DEBUG"]
    assert len(about) == 1 and about[0][0] == "INFO", about


def test_an_unreachable_leader_is_logged_once_per_distinct_error(tmp_path: Path,
                                                                 lines: list[tuple[str, str]]) -> None:
    store_dir = tmp_path / "standby" / "eventlog"
    address = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        follower = Follower(store_dir, LogStore(store_dir), identity="m1_00000000", leader_address=lambda: address,
                            channel=peer_channel(None), backoff_initial=0.01, backoff_max=0.02, connect_timeout=1)
        async with Following(follower):
            await wait_until(lambda: follower.reconnects >= 5, what="retries")

    run(scenario())
    warnings = [m for level, m in lines if level == "WARNING" and m.startswith(f"follow {address} ended")]
    assert len(warnings) == 1, warnings


def test_no_leader_address_known_waits_without_connecting(tmp_path: Path) -> None:
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> None:
        follower = Follower(store_dir, LogStore(store_dir), identity="m1_00000000", leader_address=lambda: None,
                            channel=peer_channel(None), backoff_initial=0.01, backoff_max=0.02)
        async with Following(follower):
            await wait_until(lambda: follower.reconnects >= 3, what="retries")
        assert follower.last_error == "no leader known" and follower.address == ""

    run(scenario())


def test_a_hello_lost_to_a_refusal_is_sent_again_at_once(tmp_path: Path) -> None:
    """A manager that ends the call before reading the Hello may make gRPC report INTERNAL, the hint lost."""
    leader_store = LogStore(tmp_path / "leader" / "eventlog")
    leader_store.append([put("edge01", "app")])
    store_dir = tmp_path / "standby" / "eventlog"

    async def scenario() -> None:
        async with FakeLeader(leader_store) as leader:
            follower = Follower(store_dir, LogStore(store_dir), identity="m1_00000000",
                                leader_address=lambda: leader.address, channel=LostHelloChannels(lost=2),
                                backoff_initial=60, backoff_max=60)  # a backoff would outlast the test
            async with Following(follower):
                await wait_until(lambda: follower.head_offset == 1, what="the leader followed", timeout=10)
            assert follower.reconnects == 0

    run(scenario())
