"""A standby's Follow stream on the leader: resume or copy, the log's records byte for byte, bounded batches, acks."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from eventlog import Change, LogStore, event_offset
from manager.replication import FollowSettings
from proto import sync_pb2 as pb
from tests.kit.builders import big_manifest, delete, put
from tests.kit.files import log_records
from tests.kit.raw_follow import hello_of, raw_follow
from tests.kit.servers import serving
from tests.kit.waits import run, wait_until


def _fill(store: LogStore, n: int, *, node: str = "edge01") -> None:
    store.append([put(node, f"p{i}") for i in range(n)])


def test_resume_sends_every_later_record_of_every_node_byte_identical(store: LogStore) -> None:
    _fill(store, 3)
    store.append([put("edge02", "x"), delete("edge01", "p0")])  # 1..5

    async def scenario() -> None:
        async with serving(store, replicate=True) as s, raw_follow(s.address) as f:
            welcome = await f.hello(hello_of(store, head=3))  # the standby holds 1..3 exactly as the leader does
            assert (welcome.mode, welcome.log_id, welcome.head_offset) == (pb.FollowWelcome.RESUME, store.log_id, 5)
            assert welcome.heartbeat_seconds == 1
            records = await f.read_records(2, ack=True)
            assert records == log_records(store)[3:]
            assert [event_offset(r) for r in records] == [4, 5]
            # later appends of any node follow at once, as stored
            s.append([put("edge03", "y")])
            s.append([put("edge01", "p1", rev=1)])
            records = await f.read_records(2, ack=True)
            assert records == log_records(store)[5:]
            await wait_until(lambda: s.mark.lag() == {"standby-1_0000abcd": 0}, what="the standby's ack")

    run(scenario())


def test_batches_are_bounded_in_records_and_bytes_and_wait_for_acks(store: LogStore) -> None:
    store.append([put("edge01", f"p{i}") for i in range(40)])
    settings = FollowSettings(batch_records=8, window_records=16, batch_bytes=8 << 20)

    async def scenario() -> None:
        async with serving(store, replicate=True, follow_settings=settings) as s, raw_follow(s.address) as f:
            empty = pb.FollowHello(identity="standby-1_0000abcd", log_id=store.log_id, head_offset=0, head_hash=0,
                                   record_format=1)
            welcome = await f.hello(empty)
            assert welcome.mode == pb.FollowWelcome.RESUME
            sizes = []
            got: list[bytes] = []
            while len(got) < 16:  # the window: 16 unacknowledged records, in batches of at most 8
                message = await f.read()
                if message.WhichOneof("kind") == "records":
                    sizes.append(len(message.records.records))
                    got.extend(message.records.records)
            assert sizes == [8, 8]
            assert got == log_records(store)[:16]
            # nothing more until an ack frees room
            message = await f.read(timeout=3)
            assert message.WhichOneof("kind") == "heartbeat"
            await f.ack(8)
            message = await f.read()
            assert message.WhichOneof("kind") == "records"
            assert [event_offset(r) for r in message.records.records] == list(range(17, 25))

    run(scenario())


def test_a_batch_stops_growing_at_its_byte_bound_but_carries_at_least_one_record(store: LogStore) -> None:
    store.append([Change("edge01", "put", "default", f"b{i}", big_manifest("edge01", f"b{i}", 20_000))
                  for i in range(5)])
    settings = FollowSettings(batch_bytes=45_000)

    async def scenario() -> None:
        async with serving(store, replicate=True, follow_settings=settings) as s, raw_follow(s.address) as f:
            await f.hello(pb.FollowHello(identity="s_1", log_id=store.log_id, record_format=1))
            counts = []
            while sum(counts) < 5:
                message = await f.read()
                if message.WhichOneof("kind") == "records":
                    counts.append(len(message.records.records))
                    assert message.ByteSize() <= 45_000 or len(message.records.records) == 1
            assert counts == [2, 2, 1]

    run(scenario())


@pytest.mark.parametrize("case", ["unknown log_id", "empty store", "beyond", "compacted", "diverged"])
def test_a_standby_that_cannot_resume_gets_a_copy_of_the_store_then_the_later_records(
    store: LogStore, tmp_path: Path, case: str
) -> None:
    _fill(store, 6)
    hello = hello_of(store)
    if case == "unknown log_id":
        hello.log_id = "f" * 32
    elif case == "empty store":
        hello.log_id, hello.head_offset, hello.head_hash = "", 0, 0
    elif case == "beyond":
        hello.head_offset = 7
    elif case == "compacted":
        store.compact(keep_last=2)  # the log starts at 5: a standby at 2 lacks 3 and 4
        hello.head_offset = 2
    else:
        hello.head_hash ^= 1  # the same offset holds other bytes: a deposed leader's tail
    settings = FollowSettings(chunk_bytes=4096)

    async def scenario() -> None:
        async with serving(store, replicate=True, follow_settings=settings) as s, raw_follow(s.address) as f:
            welcome = await f.hello(hello)
            assert welcome.mode == pb.FollowWelcome.COPY
            assert case in welcome.reason
            copy = await f.read_copy()
            assert copy.head_offset == 6 and copy.size == len(copy.data) and copy.chunks == -(-copy.size // 4096)
            received = tmp_path / "received"
            received.mkdir()
            (received / "data.mdb").write_bytes(copy.data)
            with LogStore(received) as got:  # a store of the same log, same records
                assert (got.log_id, got.head_offset) == (store.log_id, 6)
                assert log_records(got) == log_records(store)
            # the temp dir of the copy is gone once sent
            await wait_until(lambda: not list(store.path.parent.glob(".follow-copy-*")), what="copy dir removed")
            # then the records after the copy's head, and acks move the standby in sync
            s.append([put("edge02", "after")])
            (record,) = await f.read_records(1)
            assert record == log_records(store)[-1]
            assert s.mark.standbys_in_sync == 0
            await f.ack(7)
            await wait_until(lambda: s.mark.standbys_in_sync == 1, what="in sync after the copy")

    run(scenario())


def test_a_cancelled_copy_leaves_no_temp_dir(store: LogStore) -> None:
    _fill(store, 50)

    async def scenario() -> None:
        async with serving(store, replicate=True, follow_settings=FollowSettings(chunk_bytes=1024)) as s:
            async with raw_follow(s.address) as f:
                welcome = await f.hello(pb.FollowHello(identity="s_1", record_format=1))
                assert welcome.mode == pb.FollowWelcome.COPY
                message = await f.read()
                assert message.WhichOneof("kind") == "store" and not message.store.last
            # the standby went away mid-copy
            await wait_until(lambda: not list(store.path.parent.glob(".follow-copy-*")), what="copy dir removed")
            await wait_until(lambda: s.built.follow_streams.open == 0, what="stream ended")

    run(scenario())


def test_a_newer_stream_of_the_same_standby_replaces_the_older(store: LogStore) -> None:
    _fill(store, 2)

    async def scenario() -> None:
        async with serving(store, replicate=True) as s, raw_follow(s.address) as old, raw_follow(s.address) as new:
            assert (await old.hello(hello_of(store))).mode == pb.FollowWelcome.RESUME
            await wait_until(lambda: s.mark.standbys_in_sync == 1, what="in sync")
            assert (await new.hello(hello_of(store))).mode == pb.FollowWelcome.RESUME
            code, details, _ = await old.ended()
            assert code == grpc.StatusCode.ABORTED and "replaced by a newer follow stream" in details
            assert s.mark.standbys_in_sync == 1  # the newer stream's standby, not none
            s.append([put("edge01", "more")])
            (record,) = await new.read_records(1)
            assert event_offset(record) == 3

    run(scenario())


@pytest.mark.parametrize(
    ("first", "why", "code"),
    [
        (pb.StandbyMessage(ack=pb.FollowAck(head_offset=1)), "must be a FollowHello", grpc.StatusCode.INVALID_ARGUMENT),
        (pb.StandbyMessage(hello=pb.FollowHello(identity="", record_format=1)), "empty identity",
         grpc.StatusCode.INVALID_ARGUMENT),
        (pb.StandbyMessage(hello=pb.FollowHello(identity="x" * 300, record_format=1)), "invalid identity",
         grpc.StatusCode.INVALID_ARGUMENT),
        (pb.StandbyMessage(hello=pb.FollowHello(identity="a b", record_format=1)), "invalid identity",
         grpc.StatusCode.INVALID_ARGUMENT),
        (pb.StandbyMessage(hello=pb.FollowHello(identity="s_1", log_id="f" * 65, record_format=1)),
         "log_id of 65 characters", grpc.StatusCode.INVALID_ARGUMENT),
        (pb.StandbyMessage(hello=pb.FollowHello(identity="s_1", record_format=99)), "record format 99",
         grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_a_bad_follow_hello_is_refused_with_one_line(store: LogStore, first: pb.StandbyMessage, why: str,
                                                      code: grpc.StatusCode) -> None:
    async def scenario() -> None:
        async with serving(store, replicate=True) as s, raw_follow(s.address) as f:
            await f.call.write(first)
            got, details, _ = await f.ended()
            assert got == code and why in details and "\n" not in details
            assert s.mark.lag() == {}

    run(scenario())


def test_undecodable_or_oversized_messages_from_a_peer_end_its_stream(store: LogStore) -> None:
    async def scenario() -> None:
        async with serving(store, replicate=True) as s:
            async with raw_follow(s.address) as f:
                f.call.cancel()
                f.call = f.channel.stream_stream("/k8sedge.sync.v1.Sync/Follow")()  # bytes as they are
                await f.call.write(b"\xff\xff\xff\xff\x0f garbage")
                code, details, _ = await f.ended()
                assert code == grpc.StatusCode.INVALID_ARGUMENT and "undecodable" in details
            async with raw_follow(s.address) as f:
                await f.call.write(pb.StandbyMessage(hello=pb.FollowHello(identity="x" * (5 << 20))))
                code, _, _ = await f.ended()
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # gRPC's 4 MiB cap on what a server receives
            assert s.mark.lag() == {}

    run(scenario())


def test_an_ack_beyond_what_was_sent_or_going_back_ends_the_stream(store: LogStore) -> None:
    _fill(store, 3)

    async def scenario() -> None:
        async with serving(store, replicate=True) as s:
            async with raw_follow(s.address) as f:
                await f.hello(hello_of(store))
                await f.ack(4)  # nothing after 3 was sent
                code, details, _ = await f.ended()
                assert code == grpc.StatusCode.INVALID_ARGUMENT and "newest offset sent 3" in details
            async with raw_follow(s.address) as f:
                await f.hello(pb.FollowHello(identity="s_1", log_id=store.log_id, record_format=1))
                await f.read_records(3)
                await f.ack(2)
                await f.ack(1)
                code, details, _ = await f.ended()
                assert code == grpc.StatusCode.INVALID_ARGUMENT and "previous ack 2" in details
            async with raw_follow(s.address) as f:
                await f.hello(hello_of(store))
                await f.call.write(pb.StandbyMessage(hello=hello_of(store)))
                code, details, _ = await f.ended()
                assert code == grpc.StatusCode.INVALID_ARGUMENT and "second FollowHello" in details
            await wait_until(lambda: s.mark.lag() == {}, what="every standby gone")

    run(scenario())


def test_a_manager_without_replication_does_not_serve_follow(store: LogStore) -> None:
    async def scenario() -> None:
        async with serving(store) as s, raw_follow(s.address) as f:
            await f.send(hello=hello_of(store))
            code, details, _ = await f.ended()
            assert code == grpc.StatusCode.UNIMPLEMENTED and "without --leader-elect" in details

    run(scenario())


def test_a_standby_whose_next_records_were_compacted_away_is_told_to_reconnect_for_a_copy(store: LogStore) -> None:
    _fill(store, 10)

    async def scenario() -> None:
        settings = FollowSettings(batch_records=2, window_records=2)
        async with serving(store, replicate=True, follow_settings=settings) as s, raw_follow(s.address) as f:
            await f.hello(pb.FollowHello(identity="s_1", log_id=store.log_id, record_format=1))
            assert [event_offset(r) for r in await f.read_records(2)] == [1, 2]
            store.compact(keep_last=3)  # 3..7 go before the standby had them
            await f.ack(2)
            code, details, _ = await f.ended()
            assert code == grpc.StatusCode.ABORTED and "reconnect for a copy" in details
        async with serving(store, replicate=True) as s, raw_follow(s.address) as f:
            welcome = await f.hello(hello_of(store, "s_1", head=2))
            assert welcome.mode == pb.FollowWelcome.COPY and "compacted" in welcome.reason

    run(scenario())
