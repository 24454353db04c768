"""A manager that does not lead refuses Stream and Follow with UNAVAILABLE and the leader's address, and stops
serving the streams it had the moment it stops leading."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from eventlog import LogStore
from proto import sync_pb2 as pb
from tests.kit.builders import put
from tests.kit.fake_agents import raw_stream
from tests.kit.raw_follow import hello_of, raw_follow
from manager.sync_session import SyncSettings
from tests.kit.servers import Leader, serving
from tests.kit.waits import run

LEADER_AT = "10.0.0.2:50051"


async def _ended(call: grpc.aio.StreamStreamCall) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """Read a call until it ends: (code, details, trailing metadata)."""
    try:
        while await call.read() is not grpc.aio.EOF:
            pass
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or "", dict(exc.trailing_metadata() or ())
    return await call.code(), await call.details(), dict(await call.trailing_metadata() or ())


@pytest.mark.parametrize(("address", "details", "trailing"), [
    (LEADER_AT, f"not the leader; the leader is at {LEADER_AT}", {"k8s-edge-leader": LEADER_AT}),
    ("", "not the leader; no leader known", {}),
])
def test_stream_and_follow_are_refused_with_the_leaders_address(
    store: LogStore, address: str, details: str, trailing: dict[str, str]
) -> None:
    store.append([put("edge01", "a")])

    async def scenario() -> None:
        async with serving(store, leadership=Leader(leads=False, address=address), replicate=True) as s:
            async with raw_stream(s.address) as agent:
                await agent.send(hello=pb.Hello(node="edge01", record_format=1))
                code, got, meta = await _ended(agent.call)
                assert (code, got) == (grpc.StatusCode.UNAVAILABLE, details)
                assert {k: v for k, v in meta.items() if k == "k8s-edge-leader"} == trailing
            async with raw_follow(s.address) as standby:
                await standby.send(hello=hello_of(store))
                code, got, meta = await standby.ended()
                assert (code, got) == (grpc.StatusCode.UNAVAILABLE, details)
                assert {k: v for k, v in meta.items() if k == "k8s-edge-leader"} == trailing
            assert not s.observer.calls and s.mark.lag() == {}

    run(scenario())


def test_a_client_writing_its_hello_always_gets_the_refusal_itself(store: LogStore) -> None:
    async def scenario() -> None:
        async with serving(store, leadership=Leader(leads=False, address=LEADER_AT), replicate=True) as s:
            codes = set()
            for _ in range(400):  # refusing before reading the Hello: ~1 in 200 clients saw INTERNAL instead
                async with raw_follow(s.address) as standby:
                    try:
                        await standby.send(hello=hello_of(store))
                    except grpc.aio.AioRpcError:
                        pass  # the refusal already arrived; ended() reads it
                    code, details, meta = await standby.ended()
                    codes.add((code, details, meta.get("k8s-edge-leader")))
            assert codes == {(grpc.StatusCode.UNAVAILABLE, f"not the leader; the leader is at {LEADER_AT}", LEADER_AT)}

    run(scenario())


def test_an_agent_stream_ends_with_the_hint_when_leadership_is_lost_and_gets_nothing_after(store: LogStore) -> None:
    store.append([put("edge01", "a")])
    leader = Leader(leads=True)

    async def scenario() -> None:
        async with serving(store, leadership=leader) as s, raw_stream(s.address) as agent:
            welcome = await agent.hello("edge01", log_id=store.log_id, applied_offset=1,
                                        digest=store.digest_at("edge01", 1))
            assert welcome.mode == pb.Welcome.RESUME
            leader.leads, leader.address = False, LEADER_AT
            s.append([put("edge01", "b")])  # appended by no one who leads: never sent
            code, details, meta = await _ended(agent.call)
            assert (code, details) == (grpc.StatusCode.UNAVAILABLE, f"not the leader; the leader is at {LEADER_AT}")
            assert meta.get("k8s-edge-leader") == LEADER_AT
            assert s.observer.of("disconnected", "edge01")

    run(scenario())


def test_an_idle_agent_stream_ends_by_its_next_heartbeat(store: LogStore) -> None:
    leader = Leader(leads=True)

    async def scenario() -> None:
        async with serving(store, leadership=leader) as s, raw_stream(s.address) as agent:
            await agent.hello("edge01")
            await agent.read_snapshot()
            leader.leads = False
            code, details, _ = await _ended(agent.call)
            assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "not the leader; no leader known")

    run(scenario())


def test_a_follow_stream_ends_with_the_hint_when_leadership_is_lost(store: LogStore) -> None:
    store.append([put("edge01", "a")])
    leader = Leader(leads=True)

    async def scenario() -> None:
        async with serving(store, leadership=leader, replicate=True) as s, raw_follow(s.address) as standby:
            assert (await standby.hello(hello_of(store))).mode == pb.FollowWelcome.RESUME
            leader.leads, leader.address = False, LEADER_AT
            s.append([put("edge01", "b")])
            code, details, meta = await standby.ended()
            assert (code, details) == (grpc.StatusCode.UNAVAILABLE, f"not the leader; the leader is at {LEADER_AT}")
            assert meta.get("k8s-edge-leader") == LEADER_AT

    run(scenario())


def test_wake_all_ends_idle_streams_at_once_when_leadership_is_lost(store: LogStore) -> None:
    store.append([put("edge01", "a")])
    leader = Leader(leads=True)

    async def scenario() -> None:
        slow = SyncSettings(heartbeat_seconds=60.0)  # no heartbeat would end them in this test's time
        async with serving(store, leadership=leader, replicate=True, settings=slow) as s, \
                raw_stream(s.address) as agent, raw_follow(s.address) as standby:
            await agent.hello("edge01", log_id=store.log_id, applied_offset=1, digest=store.digest_at("edge01", 1))
            await standby.hello(hello_of(store))
            leader.leads, leader.address = False, LEADER_AT
            await asyncio.to_thread(s.mark.wake_all)  # as the elector's on_stopped_leading would, on its thread
            code, details, _ = await _ended(agent.call)
            assert code == grpc.StatusCode.UNAVAILABLE and LEADER_AT in details
            code, details, _ = await standby.ended(timeout=5)
            assert code == grpc.StatusCode.UNAVAILABLE and LEADER_AT in details

    run(scenario())
