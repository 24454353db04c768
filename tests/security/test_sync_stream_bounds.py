"""Bounded streams: one live stream per node (the newest wins), a global cap, strings from agents cut to size."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from eventlog import RECORD_FORMAT, Change, LogStore
from proto import sync_pb2 as pb
from proto import sync_pb2_grpc as pb_grpc
from tests.kit.builders import big_manifest, fill_node
from tests.kit.fake_agents import legit_agent_syncs, raw_stream
from tests.kit.servers import FAST, serving
from tests.kit.waits import run, wait_until


async def _silent_streams(channel: grpc.aio.Channel, nodes: list[str]) -> list[grpc.aio.StreamStreamCall]:
    """Streams that say Hello and never read."""
    calls = []
    for node in nodes:
        call = pb_grpc.SyncStub(channel).Stream()
        with contextlib.suppress(grpc.aio.AioRpcError):  # a stream refused at once (the cap) cannot be written
            await call.write(pb.AgentMessage(hello=pb.Hello(node=node, record_format=RECORD_FORMAT)))
        calls.append(call)
    return calls


def _net_connected(observer: object, node: str) -> int:
    return len(observer.of("connected", node)) - len(observer.of("disconnected", node))  # type: ignore[attr-defined]


def test_400_silent_streams_for_one_node_hold_at_most_8_and_the_agent_then_syncs(store: LogStore,
                                                                                  tmp_path: Path) -> None:
    fill_node(store, "edge11")  # 256 pods x 5 KB, as in the issue

    async def scenario() -> None:
        async with serving(store) as s:
            table = s.built.streams
            async with grpc.aio.insecure_channel(s.address) as attacker:
                calls = await _silent_streams(attacker, ["edge11"] * 400)
                # each new one replaced the live one; replaced ones that cannot end yet count against the node
                await wait_until(lambda: table.replaced + table.refused == 399, timeout=60, what="400 Hellos handled")
                assert table.live_count == 1 and _net_connected(s.observer, "edge11") == 1
                assert table.open <= table.max_per_node == 8
                assert len(calls) == 400
            await wait_until(lambda: table.open == 0, what="every stream ended with its connection")
            assert _net_connected(s.observer, "edge11") == 0
            await legit_agent_syncs(s.address, store, "edge11", tmp_path / "replica")

    run(scenario(), timeout=180)


def test_beyond_max_streams_new_streams_get_resource_exhausted(store: LogStore, tmp_path: Path) -> None:
    fill_node(store, "edge01", pods=16, size=1000)
    settings = replace(FAST, max_streams=50)

    async def scenario() -> None:
        async with serving(store, settings=settings) as s:
            table = s.built.streams
            async with grpc.aio.insecure_channel(s.address) as attacker:
                calls = await _silent_streams(attacker, [f"n{i:03d}" for i in range(400)])
                await wait_until(lambda: table.refused == 350 and table.open == 50, what="the cap reached")
                assert len(calls) == 400 and table.live_count == 50
                async with raw_stream(s.address) as st:  # the legit agent meanwhile: refused, not served half
                    with contextlib.suppress(grpc.aio.AioRpcError):  # refused before the Hello is read
                        await st.send(hello=pb.Hello(node="edge01", record_format=RECORD_FORMAT))
                    assert await st.status() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert "--max-streams" in await st.call.details()
            await wait_until(lambda: table.open == 0, what="the attacker's streams ended")
            await legit_agent_syncs(s.address, store, "edge01", tmp_path / "replica")

    run(scenario(), timeout=180)


def test_a_second_stream_for_a_node_replaces_the_first(store: LogStore, tmp_path: Path) -> None:
    fill_node(store, "edge01", pods=8, size=500)

    async def scenario() -> None:
        async with serving(store) as s:
            async with raw_stream(s.address) as old:
                await old.hello("edge01")
                await old.read_snapshot()  # then it goes silent: a half-open connection
                await legit_agent_syncs(s.address, store, "edge01", tmp_path / "replica")
                assert await old.status() == grpc.StatusCode.ABORTED
                assert "replaced by a newer stream for node edge01" in await old.call.details()
            # nothing lost: what changed meanwhile reaches the agent, which resumes
            store.append([Change("edge01", "put", "default", "app0000", big_manifest("edge01", "app0000", rev=1)),
                          Change("edge01", "delete", "default", "app0001")])
            agent = await legit_agent_syncs(s.address, store, "edge01", tmp_path / "replica")
            assert agent.snapshots_installed == 0  # resumed after its offset
            await wait_until(lambda: _net_connected(s.observer, "edge01") == 0, what="the agent's disconnect")
            assert len(s.observer.of("connected", "edge01")) == 3 == len(s.observer.of("disconnected", "edge01"))

    run(scenario())


def test_a_3_million_character_report_is_cut_to_1_kib(store: LogStore, tmp_path: Path) -> None:
    fill_node(store, "edge01", pods=4, size=300)

    async def scenario() -> None:
        async with serving(store) as s:
            async with raw_stream(s.address) as st:
                await st.hello("edge01")
                last, _ = await st.read_snapshot()
                await st.ack(last.offset, last.digest)
                await st.send(report=pb.AgentReport(manifests_ok=False, message="é" + "x" * 2_999_999,
                                                    managed_manifests=4))
                await wait_until(lambda: s.observer.of("reported", "edge01"), what="the report")
                message = s.observer.of("reported", "edge01")[0]["message"]
                assert len(message.encode()) <= 1024 and message.startswith("éxxx")
                assert message.endswith("(truncated)")
                await st.send(pong=pb.Pong(head_offset=last.offset))  # the stream goes on
                assert not st.call.done()
            await legit_agent_syncs(s.address, store, "edge01", tmp_path / "replica")

    run(scenario())


@pytest.mark.parametrize(
    ("hello", "why"),
    [
        (pb.Hello(node="a" * 254, record_format=RECORD_FORMAT), "DNS-1123 subdomain of at most 253"),
        (pb.Hello(node="Edge01", record_format=RECORD_FORMAT), "DNS-1123"),
        (pb.Hello(node="edge01", log_id="f" * 10_000, record_format=RECORD_FORMAT), "log_id of 10000 characters"),
    ],
)
def test_oversized_or_invalid_strings_in_a_hello_are_refused(store: LogStore, tmp_path: Path, hello: pb.Hello,
                                                             why: str) -> None:
    fill_node(store, "edge01", pods=4, size=300)

    async def scenario() -> None:
        async with serving(store) as s:
            async with raw_stream(s.address) as st:
                await st.send(hello=hello)
                assert await st.status() == grpc.StatusCode.INVALID_ARGUMENT
                assert why in await st.call.details()
            assert s.observer.of("connected") == []
            await legit_agent_syncs(s.address, store, "edge01", tmp_path / "replica")

    run(scenario())


def test_one_nodes_silent_connections_cannot_fill_the_table_for_others(store: LogStore,
                                                                        tmp_path: Path) -> None:
    fill_node(store, "edge11")  # 256 pods x 5 KB: a silent reader's window fills, its replaced stream cannot end
    fill_node(store, "edge12", pods=8, size=500)
    silent = [("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0)]

    async def scenario() -> None:
        async with serving(store) as s:
            table = s.built.streams
            channels = [grpc.aio.insecure_channel(s.address, options=silent) for _ in range(20)]
            try:
                for ch in channels:
                    await _silent_streams(ch, ["edge11"])
                    await asyncio.sleep(0.5)  # pacing: its 64 KiB window fills before the next replaces it
                await wait_until(lambda: table.replaced + table.refused == 19, what="20 Hellos handled")
                assert table.open <= table.max_per_node and table.refused >= 20 - table.max_per_node
                await legit_agent_syncs(s.address, store, "edge12", tmp_path / "replica")  # another node: served
            finally:
                for ch in channels:
                    await ch.close(grace=None)

    run(scenario())
