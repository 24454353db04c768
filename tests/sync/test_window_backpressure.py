"""A bounded window of unacknowledged events: a slow agent only slows itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.sync_client import SyncClient
from eventlog import Change, LogStore, ReplicaStore, event_offset
from manager.sync_service import SyncSettings
from tests.kit.builders import put
from tests.kit.fake_agents import raw_stream
from tests.kit.servers import serving
from tests.kit.waits import run, wait_until

SETTINGS = SyncSettings(window=64, batch_size=16, heartbeat_seconds=1.0)


def test_an_agent_that_does_not_ack_gets_at_most_window_events(store: LogStore, tmp_path: Path) -> None:
    store.append([put("slow", f"p{i}") for i in range(500)])
    replica = ReplicaStore(tmp_path / "fast", node="fast")

    async def reconciled() -> None:
        return None

    async def scenario() -> None:
        async with serving(store, settings=SETTINGS) as s, raw_stream(s.address) as slow:
            welcome = await slow.hello("slow", log_id=store.log_id, applied_offset=0, digest=0)
            assert welcome.window == 64
            # take everything the manager sends until it falls silent (its next message is a heartbeat)
            offsets: list[int] = []
            while True:
                message = await slow.read()
                if message.WhichOneof("kind") == "heartbeat":
                    break
                assert len(message.batch.events) <= 16
                offsets.extend(event_offset(raw) for raw in message.batch.events)
            assert offsets == list(range(1, 65))

            # meanwhile another agent on the same server syncs promptly
            fast = SyncClient(node="fast", addresses=[s.address], replica=replica, after_apply=reconciled,
                              backoff_initial=0.05, backoff_max=0.2)
            task = asyncio.create_task(fast.run())
            try:
                await wait_until(lambda: fast.connected, what="fast agent connected")
                for round_ in range(3):
                    events = store.append([put("fast", f"f{i}", rev=round_) for i in range(100)])
                    s.notifier.notify(["fast"])
                    started = time.monotonic()
                    await wait_until(lambda: fast.applied_offset == events[-1].offset, timeout=10,
                                     what="fast agent applied")
                    assert time.monotonic() - started < 5
            finally:
                task.cancel()

            # acknowledging half the window lets exactly that much more through
            await slow.ack(32, store.digest_at("slow", 32))
            more = await slow.read_events(32)
            assert [e.offset for e in more] == list(range(65, 97))
            message = await slow.read()
            assert message.WhichOneof("kind") == "heartbeat" and message.heartbeat.head_offset == 500

    run(scenario())
    replica.close()


def test_an_agent_that_stops_reading_does_not_hold_up_the_others(store: LogStore, tmp_path: Path) -> None:
    big = b'{"data":"' + b"x" * 60_000 + b'"}'  # ~16 MiB in flight: far beyond HTTP/2 flow-control windows
    store.append([Change("stuck", "put", "default", f"p{i}", big + str(i).encode()) for i in range(270)])
    replica = ReplicaStore(tmp_path / "fast", node="fast")

    async def reconciled() -> None:
        return None

    async def scenario() -> None:
        async with serving(store, settings=SETTINGS) as s, raw_stream(s.address) as stuck:
            await stuck.hello("stuck", log_id=store.log_id, applied_offset=0, digest=0)
            # never reads again: the manager's writes to it block on flow control
            fast = SyncClient(node="fast", addresses=[s.address], replica=replica, after_apply=reconciled,
                              backoff_initial=0.05, backoff_max=0.2)
            task = asyncio.create_task(fast.run())
            try:
                for round_ in range(3):
                    events = store.append([put("fast", f"f{i}", rev=round_) for i in range(50)])
                    s.notifier.notify(["fast", "stuck"])
                    started = time.monotonic()
                    await wait_until(lambda: fast.applied_offset == events[-1].offset, timeout=10,
                                     what="fast agent applied")
                    assert time.monotonic() - started < 5
            finally:
                task.cancel()

    run(scenario())
    replica.close()
