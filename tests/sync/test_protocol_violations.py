"""A client that breaks the protocol gets INVALID_ARGUMENT (or FAILED_PRECONDITION); others are unaffected."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest

from eventlog import LogStore
from proto import sync_pb2 as pb
from tests.kit.builders import put
from tests.kit.fake_agents import RawStream, raw_stream
from tests.kit.servers import serving
from tests.kit.waits import run, wait_until


async def _ack_first(stream: RawStream, store: LogStore) -> None:
    await stream.ack(1)


async def _empty_message_first(stream: RawStream, store: LogStore) -> None:
    await stream.send()


async def _garbage(stream: RawStream, store: LogStore) -> None:
    raw = stream.channel.stream_stream("/k8sedge.sync.v1.Sync/Stream")  # no serializers: bytes as they are
    stream.call.cancel()
    stream.call = raw()
    await stream.call.write(b"\xff\xff\xff\xff\x0f garbage")


async def _invalid_node_name(stream: RawStream, store: LogStore) -> None:
    await stream.send(hello=pb.Hello(node="Edge_01/../x", record_format=1))


async def _empty_node_name(stream: RawStream, store: LogStore) -> None:
    await stream.send(hello=pb.Hello(node="", record_format=1))


async def _second_hello(stream: RawStream, store: LogStore) -> None:
    await stream.hello("edge01")
    await stream.send(hello=pb.Hello(node="edge01", record_format=1))


async def _ack_beyond_sent(stream: RawStream, store: LogStore) -> None:
    await stream.hello("edge01", log_id=store.log_id, applied_offset=2, digest=store.digest_at("edge01", 2))
    await stream.read_events(1)  # offset 3 is the newest sent
    await stream.ack(4)


async def _ack_going_backwards(stream: RawStream, store: LogStore) -> None:
    await stream.hello("edge01", log_id=store.log_id, applied_offset=1, digest=store.digest_at("edge01", 1))
    await stream.read_events(2)
    await stream.ack(3, store.digest_at("edge01", 3))
    await stream.ack(2, store.digest_at("edge01", 2))


async def _ack_below_resume_point(stream: RawStream, store: LogStore) -> None:
    await stream.hello("edge01", log_id=store.log_id, applied_offset=2, digest=store.digest_at("edge01", 2))
    await stream.ack(1)


VIOLATIONS: dict[str, Callable[[RawStream, LogStore], Awaitable[None]]] = {
    "ack before Hello": _ack_first,
    "empty message before Hello": _empty_message_first,
    "undecodable bytes": _garbage,
    "invalid node name": _invalid_node_name,
    "empty node name": _empty_node_name,
    "second Hello": _second_hello,
    "ack beyond the newest offset sent": _ack_beyond_sent,
    "ack going backwards": _ack_going_backwards,
    "ack below the resume point": _ack_below_resume_point,
}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
def test_violation_ends_only_that_stream_with_invalid_argument(store: LogStore, violation: str) -> None:
    store.append([put("edge01", f"a{i}") for i in range(3)])  # 1..3
    store.append([put("edge02", "b0")])  # 4
    before = (store.info(), store.nodes(), store.all_pods())

    async def scenario() -> None:
        async with serving(store) as s:
            async with raw_stream(s.address) as healthy:
                await healthy.hello("edge02", log_id=store.log_id, applied_offset=0, digest=0)
                async with raw_stream(s.address) as bad:
                    await VIOLATIONS[violation](bad, store)
                    assert await bad.status() == grpc.StatusCode.INVALID_ARGUMENT
                # the healthy stream still gets its events and may acknowledge them
                (event,) = await healthy.read_events(1)
                assert event.offset == 4
                await healthy.ack(4, store.digest_at("edge02", 4))
                assert await _still_open(healthy)
        assert (store.info(), store.nodes(), store.all_pods()) == before

    run(scenario())


def test_unsupported_record_format_fails_precondition(store: LogStore) -> None:
    async def scenario() -> None:
        async with serving(store) as s, raw_stream(s.address) as stream:
            await stream.send(hello=pb.Hello(node="edge01", record_format=99))
            assert await stream.status() == grpc.StatusCode.FAILED_PRECONDITION

    run(scenario())


async def _still_open(stream: RawStream) -> bool:
    """True when the stream delivers a heartbeat rather than ending."""
    message = await stream.read(timeout=10)
    return message.WhichOneof("kind") == "heartbeat"


def test_agent_closing_its_side_ends_the_stream_cleanly(store: LogStore) -> None:
    async def scenario() -> None:
        async with serving(store) as s, raw_stream(s.address) as stream:
            await stream.hello("edge01")
            await stream.read_snapshot()
            await stream.call.done_writing()
            assert await stream.status() == grpc.StatusCode.OK
            await wait_until(lambda: s.observer.of("disconnected", "edge01"), what="disconnected")

    run(scenario())


def test_a_connection_that_never_says_hello_is_ended(store: LogStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import manager.sync_session

    monkeypatch.setattr(manager.sync_session, "HELLO_TIMEOUT_SECONDS", 0.5)

    async def scenario() -> None:
        async with serving(store) as s, raw_stream(s.address) as stream:
            assert await stream.status() == grpc.StatusCode.INVALID_ARGUMENT
            assert not s.observer.of("connected")

    run(scenario())
