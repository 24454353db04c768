"""The role loop of --leader-elect (manager/standing.py): standby and leader in turn, fenced at once when the Lease goes.

Pure logic with small stand-ins for the elector, the follower, the standby server and the
leader term; the real pieces are proven in their own tests and together in tests/e2e/test_failover.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from eventlog import LogStore
from manager.settings import HighAvailability, LeaseSettings
from manager.standing import Parts, Role, Standing
from tests.kit.waits import run, wait_until

SETTINGS = HighAvailability(lease=LeaseSettings(namespace="default", name="edge-manager", identity="me",
                                                lease_duration=3, renew_deadline=2, retry_period=0.5,
                                                sync_address="127.0.0.1:1"))


class FakeElector:
    """Leads when the test says so; is_leader() is the fence the term reads."""

    def __init__(self, started, stopped) -> None:
        self.started, self.stopped = started, stopped
        self.leader = False
        self.released = False
        self.ran = threading.Event()

    def run(self, stop: threading.Event) -> None:
        self.ran.set()
        stop.wait()

    def is_leader(self) -> bool:
        return self.leader

    def release(self) -> None:
        self.released = True

    def win(self) -> None:
        self.leader = True
        self.started()

    def lose(self, *, tell: bool = True) -> None:
        self.leader = False
        if tell:
            self.stopped()


class Log:
    """What happened, in order, across the stand-ins."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.t: dict[str, float] = {}

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.t[line] = time.monotonic()


def build(store: LogStore, log: Log, electors: list[FakeElector], replacement: LogStore | None = None) -> Parts:
    def elector(started, stopped):
        e = FakeElector(started, stopped)
        electors.append(e)
        return e

    class Follower:
        def __init__(self, current: LogStore) -> None:
            self.current = current

        async def run(self, stop: asyncio.Event) -> LogStore:
            log.add("follow")
            await stop.wait()
            log.add("follow stopped")
            return replacement if replacement is not None else self.current

    class Server:
        async def start(self) -> None:
            log.add("standby server up")

        async def stop(self) -> None:
            log.add("standby server down")

    async def lead(st: LogStore, until: asyncio.Event, fenced) -> None:
        log.add(f"lead {st.path.name}")
        await until.wait()
        log.add("term fenced" if fenced() else "term ended")

    return Parts(elector=elector, follower=Follower, standby_server=lambda st: Server(), lead=lead,
                 on_role=lambda role: log.add(f"role {role.value}"))


def test_a_standby_follows_until_it_wins_then_leads_with_the_followed_store(tmp_path):
    log, electors = Log(), []
    with LogStore(tmp_path / "a") as store, LogStore(tmp_path / "copy") as copy:
        standing = Standing(store, settings=SETTINGS, parts=build(store, log, electors, replacement=copy))

        async def scenario() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(standing.run(stop))
            await wait_until(lambda: "follow" in log.lines)
            assert standing.role is Role.STANDBY
            electors[0].win()
            await wait_until(lambda: "lead copy" in log.lines)  # the follower's store (a copy replaced ours) leads
            assert standing.role is Role.LEADER and standing.transitions == 1
            stop.set()
            assert await task is copy
        run(scenario())
    order = [line for line in log.lines if not line.startswith("role")]
    assert order == ["standby server up", "follow", "follow stopped", "standby server down", "lead copy",
                     "term ended"]
    assert electors[0].released, "a leader that stops gives the Lease back, so the next need not wait it out"


@pytest.mark.parametrize("tell", [True, False], ids=["told", "fence-only"])
def test_a_lost_lease_ends_the_term_fenced_at_once_and_the_manager_follows_again(tmp_path, tell):
    log, electors = Log(), []
    with LogStore(tmp_path / "a") as store:
        standing = Standing(store, settings=SETTINGS, parts=build(store, log, electors))

        async def scenario() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(standing.run(stop))
            await wait_until(lambda: electors and electors[0].ran.is_set())
            electors[0].win()
            await wait_until(lambda: "lead a" in log.lines)
            lost_at = time.monotonic()
            electors[0].lose(tell=tell)
            await wait_until(lambda: "term fenced" in log.lines)
            assert log.t["term fenced"] - lost_at < 1.0, "the term must end well inside lease - renew deadline"
            await wait_until(lambda: log.lines.count("follow") == 2)
            assert standing.role is Role.STANDBY
            stop.set()
            await task
        run(scenario())
    assert not electors[0].released, "a Lease that is not ours is not released"

