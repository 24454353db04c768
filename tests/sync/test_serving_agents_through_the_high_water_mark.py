"""Agents are sent an event only once every in-sync standby holds it; no standby, or one that lags, holds none back."""

from __future__ import annotations

import asyncio

from eventlog import LogStore, event_offset
from proto import sync_pb2 as pb
from tests.kit.builders import put
from tests.kit.fake_agents import raw_stream
from tests.kit.raw_follow import hello_of, raw_follow
from tests.kit.servers import serving
from tests.kit.waits import run, wait_until

STANDBY = "standby-1_0000abcd"


async def _no_batch_for(stream, seconds: float) -> pb.ManagerMessage:
    """The next message within `seconds` must not be a batch (a heartbeat is due every second); return it."""
    message = await stream.read(timeout=seconds)
    assert message.WhichOneof("kind") == "heartbeat", message
    return message


def test_with_no_standby_events_reach_agents_at_once(store: LogStore) -> None:
    store.append([put("edge01", "a")])

    async def scenario() -> None:
        async with serving(store, replicate=True) as s, raw_stream(s.address) as agent:
            welcome = await agent.hello("edge01", log_id=store.log_id, applied_offset=1,
                                        digest=store.digest_at("edge01", 1))
            assert welcome.mode == pb.Welcome.RESUME
            s.append([put("edge01", "b")])
            (event,) = await agent.read_events(1, timeout=0.9)  # before the first heartbeat is due
            assert event.offset == 2
            assert s.mark.visible() == 2

    run(scenario())


def test_an_agent_gets_an_event_only_after_the_in_sync_standby_acknowledged_it(store: LogStore) -> None:
    store.append([put("edge01", "a"), put("edge02", "x")])  # 1, 2

    async def scenario() -> None:
        async with serving(store, replicate=True) as s, raw_follow(s.address) as standby, \
                raw_stream(s.address) as agent:
            assert (await standby.hello(hello_of(store, STANDBY))).mode == pb.FollowWelcome.RESUME
            assert s.mark.standbys_in_sync == 1  # it said Hello at the head
            await agent.hello("edge01", log_id=store.log_id, applied_offset=1, digest=store.digest_at("edge01", 1))
            s.append([put("edge01", "b")])  # 3
            (record,) = await standby.read_records(1)
            assert s.mark.visible() == 2
            heartbeat = await _no_batch_for(agent, 3)
            assert heartbeat.heartbeat.head_offset == 1  # the node's newest visible event, not 3
            assert s.mark.lag() == {STANDBY: 1}
            await standby.ack(3)
            (event,) = await agent.read_events(1, timeout=0.9)
            assert event.offset == 3
            assert s.mark.visible() == 3

    run(scenario())


def test_an_agent_arriving_while_its_node_is_unacknowledged_sees_the_visible_head_and_waits(store: LogStore) -> None:
    store.append([put("edge01", "a")])  # 1

    async def scenario() -> None:
        async with serving(store, replicate=True) as s, raw_follow(s.address) as standby:
            await standby.hello(hello_of(store, STANDBY))
            s.append([put("edge01", "b"), put("edge01", "c")])  # 2, 3: not yet held by the standby
            await standby.read_records(2)
            async with raw_stream(s.address) as agent:
                welcome = await agent.hello("edge01", log_id=store.log_id, applied_offset=1,
                                            digest=store.digest_at("edge01", 1))
                assert (welcome.mode, welcome.head_offset) == (pb.Welcome.RESUME, 1)
                await _no_batch_for(agent, 3)
                await standby.ack(2)  # part of the append becomes visible: only that part is sent
                (event,) = await agent.read_events(1, timeout=0.9)
                assert event.offset == 2
                await standby.ack(3)
                (event,) = await agent.read_events(1, timeout=0.9)
                assert event.offset == 3

    run(scenario())


def test_a_snapshot_at_s_is_sent_only_once_the_standby_holds_s(store: LogStore) -> None:
    store.append([put("edge01", "a")])

    async def scenario() -> None:
        async with serving(store, replicate=True) as s, raw_follow(s.address) as standby:
            await standby.hello(hello_of(store, STANDBY))
            s.append([put("edge01", "b")])  # 2
            await standby.read_records(1)
            async with raw_stream(s.address) as agent:
                welcome = await agent.hello("edge01")  # an empty replica: a snapshot of the view at S = 2
                assert (welcome.mode, welcome.snapshot_offset) == (pb.Welcome.SNAPSHOT, 2)
                await _no_batch_for(agent, 3)  # no chunk either
                await standby.ack(2)
                last, entries = await agent.read_snapshot()
                assert last.offset == 2 and {e.name for e in entries} == {"a", "b"}

    run(scenario())


def test_a_standby_that_stops_acknowledging_stops_holding_agents_back_after_the_timeout(store: LogStore) -> None:
    store.append([put("edge01", "a")])

    async def scenario() -> None:
        async with serving(store, replicate=True, standby_timeout=1.5) as s, raw_follow(s.address) as standby, \
                raw_stream(s.address) as agent:
            await standby.hello(hello_of(store, STANDBY))
            await agent.hello("edge01", log_id=store.log_id, applied_offset=1, digest=store.digest_at("edge01", 1))
            await asyncio.sleep(2.0)  # current and idle for longer than the timeout: only time behind counts
            assert s.mark.standbys_in_sync == 1
            loop = asyncio.get_running_loop()
            appended_at = loop.time()
            s.append([put("edge01", "b")])  # 2: the standby receives it and never acknowledges
            (event,) = await agent.read_events(1, timeout=10)
            waited = loop.time() - appended_at
            assert event.offset == 2
            assert 1.4 <= waited < 5, waited
            assert (s.mark.standbys_in_sync, s.mark.timeouts) == (0, 1)
            # later events are not held back either, until it catches up with the head again
            s.append([put("edge01", "c")])  # 3
            (event,) = await agent.read_events(1, timeout=0.9)
            assert event.offset == 3
            await standby.read_records(2)
            await standby.ack(3)
            await wait_until(lambda: s.mark.standbys_in_sync == 1, what="back in sync")
            s.append([put("edge01", "d")])  # 4: held again
            await _no_batch_for(agent, 1.4)

    run(scenario())


def test_a_standby_still_copying_holds_no_agent_back(store: LogStore) -> None:
    store.append([put("edge01", "a")])

    async def scenario() -> None:
        async with serving(store, replicate=True) as s, raw_follow(s.address) as standby, \
                raw_stream(s.address) as agent:
            welcome = await standby.hello(pb.FollowHello(identity=STANDBY, record_format=1))  # an empty store
            assert welcome.mode == pb.FollowWelcome.COPY
            await agent.hello("edge01", log_id=store.log_id, applied_offset=1, digest=store.digest_at("edge01", 1))
            s.append([put("edge01", "b")])
            (event,) = await agent.read_events(1, timeout=0.9)
            assert event.offset == 2
            assert s.mark.standbys_in_sync == 0 and s.mark.lag() == {STANDBY: 2}

    run(scenario())


def test_a_standby_that_disconnects_releases_what_it_held_back(store: LogStore) -> None:
    store.append([put("edge01", "a")])

    async def scenario() -> None:
        async with serving(store, replicate=True) as s, raw_stream(s.address) as agent:
            async with raw_follow(s.address) as standby:
                await standby.hello(hello_of(store, STANDBY))
                await agent.hello("edge01", log_id=store.log_id, applied_offset=1,
                                  digest=store.digest_at("edge01", 1))
                s.append([put("edge01", "b")])
                await _no_batch_for(agent, 1.4)
            (event,) = await agent.read_events(1, timeout=5)
            assert event.offset == 2 and s.mark.standbys_in_sync == 0

    run(scenario())


def test_appends_told_from_the_recorder_thread_wake_agents_when_the_standby_acks(store: LogStore) -> None:
    store.append([put("edge01", "a")])

    async def scenario() -> None:
        async with serving(store, replicate=True) as s, raw_follow(s.address) as standby, \
                raw_stream(s.address) as agent:
            await standby.hello(hello_of(store, STANDBY))
            await agent.hello("edge01", log_id=store.log_id, applied_offset=1, digest=store.digest_at("edge01", 1))

            def record() -> None:  # as the recorder does, on its own thread
                appended = store.append([put("edge01", "b")])
                s.mark.appended(appended.head_offset, appended.nodes)

            await asyncio.to_thread(record)
            (record_2,) = await standby.read_records(1, timeout=5)  # the standby was woken from the thread too
            await _no_batch_for(agent, 1.4)
            await standby.ack(2)
            (event,) = await agent.read_events(1, timeout=0.9)
            assert event.offset == 2

    run(scenario())


def test_a_catching_up_standby_joins_though_the_head_moved_before_each_ack_and_the_mark_never_moves_back(
    store: LogStore,
) -> None:
    store.append([put("edge01", f"p{i}") for i in range(200)])

    async def scenario() -> None:
        async with serving(store, replicate=True) as s, raw_follow(s.address) as standby:
            await standby.hello(hello_of(store, STANDBY, head=50))  # 150 behind
            seen = [s.mark.visible()]
            for i in range(50):
                message = await standby.read()
                if message.WhichOneof("kind") != "records":
                    continue
                s.append([put("edge02", f"q{i}")])  # a steady writer: the head is never the acked offset
                seen.append(s.mark.visible())
                await standby.ack(event_offset(message.records.records[-1]))
                await wait_until(lambda: s.mark.lag()[STANDBY] <= 1, what="the ack taken")
                if s.mark.standbys_in_sync:
                    break
            # it was current when the records it acknowledged were sent: in sync, though never at the head
            await wait_until(lambda: s.mark.standbys_in_sync == 1, what="in sync")
            seen.append(s.mark.visible())
            assert seen == sorted(seen)  # the mark only grew, though the standby joined below it
            s.append([put("edge01", "held")])
            assert s.mark.visible() < store.head_offset  # the new standby holds agents back now

    run(scenario())


def test_a_new_leadership_term_starts_the_mark_again_at_the_head(store: LogStore) -> None:
    store.append([put("edge01", f"p{i}") for i in range(5)])

    async def scenario() -> None:
        async with serving(store, replicate=True) as s, raw_follow(s.address) as standby:
            await standby.hello(hello_of(store, STANDBY))
            assert (s.mark.visible(), s.mark.standbys_in_sync) == (5, 1)
            s.mark.reset()
            assert (s.mark.visible(), s.mark.standbys_in_sync, s.mark.lag()) == (5, 0, {})

    run(scenario())
