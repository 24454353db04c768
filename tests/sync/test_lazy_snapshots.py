"""Snapshots are read from the store a chunk at a time as the agent consumes them, and stay a point-in-time view."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import grpc

from eventlog import Change, LogStore, PodEntry, SnapshotPlan, decode_entry
from tests.kit.builders import delete, put
from tests.kit.fake_agents import raw_stream
from tests.kit.servers import FAST, serving
from tests.kit.waits import run, wait_until

SMALL_CHUNKS = replace(FAST, snapshot_chunk_bytes=4096)


def _pod(node: str, name: str, size: int, rev: int = 0) -> Change:
    body = f'{{"kind":"Pod","metadata":{{"name":"{name}"}},"pad":"{"x" * size}","rev":{rev}}}'.encode()
    return Change(node, "put", "default", name, body)


class CountingStore(LogStore):
    """A LogStore that counts the manifest bytes snapshots read from it."""

    read_bytes = 0

    def snapshot_entries(self, plan: SnapshotPlan, *, start: int, limit: int, max_bytes: int) -> list[PodEntry]:
        pods = super().snapshot_entries(plan, start=start, limit=limit, max_bytes=max_bytes)
        self.read_bytes += sum(len(p.manifest) for p in pods)
        return pods


def test_a_snapshot_is_the_view_at_its_offset_whatever_changes_while_it_is_sent(store: LogStore) -> None:
    store.append([_pod("edge01", f"app{i:03d}", 2000) for i in range(40)])
    at_s = {(p.namespace, p.name): p.manifest for p in store.pods("edge01").values()}
    digest_at_s = store.node_state("edge01").digest

    async def scenario() -> None:
        async with serving(store, settings=SMALL_CHUNKS) as s, raw_stream(s.address) as st:
            welcome = await st.hello("edge01")
            first = await st.read()
            assert first.WhichOneof("kind") == "snapshot" and not first.snapshot.last
            changes = [_pod("edge01", f"app{i:03d}", 2000, rev=1) for i in range(0, 40, 3)]
            changes += [delete("edge01", f"app{i:03d}") for i in range(1, 40, 7)]
            changes += [put("edge01", "new-pod")]
            store.append(changes)
            last, rest = await st.read_snapshot()
            got = {(e.namespace, e.name): e.manifest for e in [*map(decode_entry, first.snapshot.entries), *rest]}
            assert got == at_s
            assert (last.offset, last.digest, last.pod_count) == (welcome.snapshot_offset, digest_at_s, 40)
            await st.ack(last.offset, last.digest)
            events = await st.read_events(len(changes))  # then what changed meanwhile, nothing lost
            assert [e.offset for e in events] == list(range(last.offset + 1, last.offset + 1 + len(changes)))

    run(scenario())


def test_compaction_of_a_version_not_yet_sent_ends_the_stream_and_the_next_one_gets_a_fresh_snapshot(
    store: LogStore,
) -> None:
    store.append([_pod("edge01", f"app{i:03d}", 2000) for i in range(20)])

    async def scenario() -> None:
        async with serving(store, settings=SMALL_CHUNKS) as s:
            async with raw_stream(s.address) as st:
                await st.hello("edge01")
                await st.read()
                store.append([_pod("edge01", f"app{i:03d}", 2000, rev=1) for i in range(20)])
                store.compact(keep_last=0)
                assert await st.status() == grpc.StatusCode.UNAVAILABLE
                assert "compacted while its snapshot was sent" in await st.call.details()
            async with raw_stream(s.address) as st:
                welcome = await st.hello("edge01")
                last, entries = await st.read_snapshot()
                assert last.digest == store.node_state("edge01").digest and len(entries) == 20
                assert welcome.snapshot_offset == store.head_offset

    run(scenario())


def test_a_reader_that_does_not_read_does_not_make_the_manager_read_the_whole_snapshot(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "log")
    store.append([_pod("edge01", f"app{i:03d}", 100_000) for i in range(200)])  # 20 MB: more than gRPC buffers

    async def scenario() -> None:
        async with serving(store) as s, raw_stream(s.address) as st:
            await st.hello("edge01")
            await wait_until(lambda: store.read_bytes > 0, what="the first chunk")
            await asyncio.sleep(2)  # the manager would read everything now if it built the snapshot whole
            assert store.read_bytes < 10_000_000
            last, entries = await st.read_snapshot()  # the reader catches up: every pod arrives
            assert len(entries) == 200 and store.read_bytes >= 20_000_000

    try:
        run(scenario())
    finally:
        store.close()
