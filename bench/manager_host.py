"""Benchmark child: the manager's real sync service (create_server, LogNotifier, AgentSession) over a LogStore.

Usage: python bench/manager_host.py --store DIR [--heartbeat SECONDS] [--replicate]
       python bench/manager_host.py --store DIR --follow HOST:PORT [--identity ID]

Why not `edge-manager`: the fan-out, reconnect, catch-up and memory benchmarks append to
the log directly (no kube-apiserver), and the manager wakes streams with an in-process
notification, so the appends must happen in the process that serves the streams. This
host runs exactly the manager's sync code (the same servicer, sessions, window, notifier)
and appends through LogStore.append + LogNotifier.notify, as the recorder does.

--replicate (the replication benchmark's leader): the server also serves Follow, through
manager.replication's HighWaterMark, and appends wake streams through it (as the leader's
recorder does). --follow (its standby): no server; manager.following's Follower copies the
leader's log into --store, and every commit of followed records is timed (LogStore.
append_records wrapped in this process: the Follower may reopen or replace the store).
Times are time.monotonic(), one clock for every process of the machine.

Protocol: one JSON command per stdin line, one JSON reply per stdout line (logs go to
stderr). The first stdout line is {"port", "log_id", "pid"}. Must not import the agent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402
from loguru import logger  # noqa: E402

from bench.benchlib import pod_manifest, proc_cpu_seconds, proc_status, raise_nofile, stdin_lines  # noqa: E402
from eventlog import Change, LogStore, SnapshotCause  # noqa: E402
from manager.sync_service import LogNotifier, SyncSettings, create_server  # noqa: E402
from manager.streams import StreamTable  # noqa: E402
from proto import sync_pb2 as pb  # noqa: E402

RAW_SERVICE = "bench.Raw"
APPEND_BATCH = 1000  # changes per LMDB transaction when the host appends
TICK_SECONDS = 0.01  # the sustained-rate appender's period: rate / 100 events per transaction


class AlwaysLeading:
    """The Leadership seam of a host that leads for its whole life (no Lease in these benchmarks)."""

    def __init__(self) -> None:
        self.address = ""

    def leading(self) -> bool:
        return True

    def leader_address(self) -> str:
        return self.address


def high_water_mark(store: LogStore, notifier: LogNotifier) -> Any:
    """manager.replication.HighWaterMark for this store (the manager's default --standby-timeout)."""
    from manager.replication import HighWaterMark

    return HighWaterMark(store=store, notifier=notifier, standby_timeout=10.0)


class BenchObserver:
    """Counts what the sync service tells its observer, and wakes waiters when nodes reach targets."""

    def __init__(self) -> None:
        self.n_connected = 0
        self.connects = 0
        self.snapshots = 0
        self.acks = 0
        self.acked: dict[str, int] = {}
        self.connected_at: dict[str, float] = {}
        self.reached_at: dict[str, float] = {}
        self.targets: dict[str, int] = {}
        self.all_reached = asyncio.Event()

    def connected(self, node: str, *, peer: str) -> None:
        self.n_connected += 1
        self.connects += 1
        self.connected_at[node] = time.monotonic()

    def acknowledged(self, node: str, *, applied_offset: int, digest: int) -> None:
        self.acks += 1
        self.acked[node] = applied_offset
        target = self.targets.get(node)
        if target is not None and applied_offset >= target:
            self.reached_at[node] = time.monotonic()
            del self.targets[node]
            if not self.targets:
                self.all_reached.set()

    def reported(self, node: str, *, manifests_ok: bool, message: str, managed_manifests: int) -> None:
        pass

    def disconnected(self, node: str) -> None:
        self.n_connected -= 1

    def snapshot_sent(self, node: str, *, cause: SnapshotCause) -> None:
        self.snapshots += 1

    def expect(self, targets: dict[str, int]) -> None:
        """Wait for these nodes to acknowledge at least these offsets (already reached ones count now)."""
        self.reached_at = {}
        self.all_reached.clear()
        now = time.monotonic()
        self.targets = {}
        for node, target in targets.items():
            if self.acked.get(node, -1) >= target:
                self.reached_at[node] = now
            else:
                self.targets[node] = target
        if not self.targets:
            self.all_reached.set()


class Host:
    """The sync server, the store and the command loop."""

    def __init__(self, store: LogStore, settings: SyncSettings, *, replicate: bool = False) -> None:
        self.store = store
        self.settings = settings
        self.notifier = LogNotifier()
        self.leadership = AlwaysLeading() if replicate else None
        self.replication = high_water_mark(store, self.notifier) if replicate else None
        self.visible: list[tuple[int, float]] = []  # (visible offset, when it got there), while sustaining
        self.observer = BenchObserver()
        self.server: grpc.aio.Server | None = None
        self.streams: StreamTable | None = None
        self.port = 0
        self.raw_batches: list[pb.ManagerMessage] = []
        self.version = 1_000_000  # manifest versions of bumps, unique per run

    async def start_server(self, port: int = 0) -> None:
        extra: dict[str, Any] = {}
        if self.replication is not None:
            extra = {"leadership": self.leadership, "replication": self.replication}
        built = create_server(store=self.store, notifier=self.notifier, observer=self.observer,
                              address=f"127.0.0.1:{port}", tls=None, settings=self.settings, **extra)
        server, self.port, self.streams = built.grpc_server, built.port, built.streams
        if self.leadership is not None:
            self.leadership.address = f"127.0.0.1:{self.port}"
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(RAW_SERVICE, {
            "Stream": grpc.unary_stream_rpc_method_handler(
                self.raw_stream, request_deserializer=bytes, response_serializer=pb.ManagerMessage.SerializeToString),
        })])
        await server.start()
        self.server = server

    async def raw_stream(self, request: bytes, context: grpc.aio.ServicerContext):  # noqa: ANN201
        """The catch-up baseline: the same batches, no session, no window, no acks."""
        for message in self.raw_batches:
            yield message

    # -- commands ---------------------------------------------------------------

    def wake(self, appended: Any) -> None:
        """Wake the streams of the appended nodes: through the high-water mark when replicating."""
        if not len(appended):
            return
        nodes = {c.node for c in appended.changes}
        if self.replication is not None:
            self.replication.appended(appended.head_offset, nodes)
        else:
            self.notifier.notify(nodes)

    def append(self, changes: list[Change]) -> int:
        """Append in transactions of APPEND_BATCH and wake the streams, as the recorder does."""
        n = 0
        for i in range(0, len(changes), APPEND_BATCH):
            events = self.store.append(changes[i : i + APPEND_BATCH])
            n += len(events)
            self.wake(events)
        return n

    async def sustain(self, *, rate: int, seconds: float, nodes: list[str], pods: int) -> dict[str, Any]:
        """Append `rate` events/s for `seconds`, one transaction per TICK_SECONDS; when each committed.

        Ticks run on the server's event loop, as the recorder's appends do; a late tick is not
        made up (the achieved rate is reported). While replicating, the high-water mark is read
        every millisecond to time when each offset became visible to agents.
        """
        per_tick = max(1, round(rate * TICK_SECONDS))
        ticks: list[tuple[int, int, float, float]] = []  # (first offset, last offset, committed at, commit seconds)
        self.visible = []
        watcher = asyncio.create_task(self._watch_visible()) if self.replication is not None else None
        cpu0, t0 = proc_cpu_seconds_self(), time.monotonic()
        k = 0
        next_tick = t0
        while next_tick < t0 + seconds:
            batch = []
            for _ in range(per_tick):
                self.version += 1
                node = nodes[k % len(nodes)]
                name = f"app{(k // len(nodes)) % pods:04d}"
                batch.append(Change(node, "put", "default", name, pod_manifest(node, "default", name, self.version)))
                k += 1
            t_append = time.monotonic()
            appended = self.store.append(batch)
            now = time.monotonic()
            ticks.append((appended.first_offset, appended.head_offset, now, now - t_append))
            self.wake(appended)
            next_tick += TICK_SECONDS
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        wall = time.monotonic() - t0
        cpu = proc_cpu_seconds_self() - cpu0
        if watcher is not None:
            await self._until_visible(self.store.head_offset, timeout=60)
            watcher.cancel()
        return {"ticks": ticks, "events": ticks[-1][1] - ticks[0][0] + 1 if ticks else 0, "wall_s": wall,
                "cpu_s": cpu, "visible": self.visible}

    async def _watch_visible(self) -> None:
        last = -1
        while True:
            v = self.replication.visible()  # type: ignore[union-attr]
            if v != last:
                self.visible.append((v, time.monotonic()))
                last = v
            await asyncio.sleep(0.001)

    async def _until_visible(self, offset: int, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.replication.visible() < offset:  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise TimeoutError(f"offset {offset} not visible (acked by the standby) within {timeout:g}s")
            await asyncio.sleep(0.005)
        self.visible.append((self.replication.visible(), time.monotonic()))  # type: ignore[union-attr]

    def bump_changes(self, nodes: list[str], *, per_node: int, pods: int) -> list[Change]:
        """per_node new pod versions for each node (round-robin over its pods), node-interleaved."""
        out = []
        for k in range(per_node):
            self.version += 1
            for node in nodes:
                name = f"app{k % pods:04d}"
                out.append(Change(node, "put", "default", name, pod_manifest(node, "default", name, self.version)))
        return out

    def heads(self, nodes: list[str]) -> dict[str, int]:
        """Each node's head offset."""
        out = {}
        for node in nodes:
            st = self.store.node_state(node)
            out[node] = st.head_offset if st else 0
        return out

    async def wait_reached(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.observer.all_reached.wait(), timeout)
        except TimeoutError:
            missing = sorted(self.observer.targets)[:5]
            raise TimeoutError(f"{len(self.observer.targets)} node(s) did not acknowledge in {timeout:g}s, "
                               f"e.g. {missing} (acked {[self.observer.acked.get(n) for n in missing]})") from None

    async def handle(self, cmd: str, a: dict[str, Any]) -> dict[str, Any]:
        o = self.observer
        if cmd == "stats":
            st = proc_status_safe()
            table = self.streams
            streams = {"open": table.open, "live": table.live_count, "replaced": table.replaced,
                       "refused": table.refused} if table is not None else {}
            return {**st, "cpu": proc_cpu_seconds_self(), "connected": o.n_connected, "connects": o.connects,
                    "snapshots": o.snapshots, "acks": o.acks, "head": self.store.head_offset, "streams": streams}
        if cmd == "sustain":  # a steady append rate; when each transaction committed
            return await self.sustain(rate=a["rate"], seconds=a["seconds"], nodes=a["nodes"], pods=a.get("pods", 10))
        if cmd == "replication":  # what the high-water mark says, for the bench's checks
            hwm = self.replication
            return {"head": self.store.head_offset, "visible": hwm.visible() if hwm is not None else None}
        if cmd == "wait_connected":
            deadline = time.monotonic() + a.get("timeout", 300)
            while o.n_connected < a["count"]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {o.n_connected} of {a['count']} streams connected")
                await asyncio.sleep(0.05)
            return {"connected": o.n_connected}
        if cmd == "wait_synced":  # every node acknowledged its head
            nodes = a["nodes"]
            o.expect(self.heads(nodes))
            await self.wait_reached(a.get("timeout", 300))
            return {"ok": True}
        if cmd == "bump":  # one round of changes to every node, then wait for all acks
            nodes = a["nodes"]
            changes = self.bump_changes(nodes, per_node=a.get("per_node", 1), pods=a.get("pods", 1))
            cpu0 = proc_cpu_seconds_self()
            t0 = time.monotonic()
            appended = 0
            for i in range(0, len(changes), APPEND_BATCH):
                events = self.store.append(changes[i : i + APPEND_BATCH])
                appended += len(events)
                # targets before notify: an ack may arrive as soon as the loop runs
                if i + APPEND_BATCH >= len(changes):
                    o.expect(self.heads(nodes))
                self.wake(events)
            t_appended = time.monotonic()
            await self.wait_reached(a.get("timeout", 300))
            return {"appended": appended, "append_s": t_appended - t0,
                    "latencies_ms": [(t - t0) * 1000 for t in o.reached_at.values()],
                    "all_s": max(o.reached_at.values()) - t0, "cpu_s": proc_cpu_seconds_self() - cpu0}
        if cmd == "restart":  # stop serving, append while down, serve again on the same port, wait for all
            nodes = a["nodes"]
            snapshots0 = o.snapshots
            t_down = time.monotonic()
            assert self.server is not None
            await self.server.stop(0)
            appended = self.append(self.bump_changes(nodes, per_node=a["per_node"], pods=a.get("pods", 1)))
            o.expect(self.heads(nodes))
            o.connected_at = {}
            await asyncio.sleep(a.get("down_seconds", 0))
            await self.start_server(self.port)
            t0 = time.monotonic()
            await self.wait_reached(a.get("timeout", 300))
            connects = sorted(t - t0 for t in o.connected_at.values())
            return {"appended": appended, "down_s": t0 - t_down, "all_s": max(o.reached_at.values()) - t0,
                    "latencies_ms": [(t - t0) * 1000 for t in o.reached_at.values()],
                    "snapshots": o.snapshots - snapshots0, "first_connect_s": connects[0] if connects else None,
                    "last_connect_s": connects[-1] if connects else None, "reconnected": len(connects)}
        if cmd == "churn":  # the node's pods get `events` new versions, appended while nobody listens
            node, pods, events = a["node"], a["pods"], a["events"]
            t0 = time.monotonic()
            batch: list[Change] = []
            for i in range(events):
                self.version += 1
                name = f"app{i % pods:04d}"
                batch.append(Change(node, "put", "default", name, pod_manifest(node, "default", name, self.version)))
                if len(batch) == 256:
                    self.store.append(batch)
                    batch = []
            if batch:
                self.store.append(batch)
            return {"head": self.heads([node])[node], "seconds": time.monotonic() - t0}
        if cmd == "raw_prepare":  # the catch-up baseline's batches: the same records, read once
            node, after = a["node"], a["after"]
            self.raw_batches = []
            n = 0
            while True:
                raw = self.store.read_node_raw(node, after=after, limit=self.settings.batch_size)
                if not raw:
                    break
                after = int.from_bytes(raw[-1][1:9], "big")
                n += len(raw)
                self.raw_batches.append(pb.ManagerMessage(batch=pb.EventBatch(events=raw, head_offset=after)))
            return {"events": n, "batches": len(self.raw_batches),
                    "bytes": sum(m.ByteSize() for m in self.raw_batches)}
        if cmd == "catchup":  # the node reconnects: time from its Hello to its ack of the head
            node = a["node"]
            o.connected_at.pop(node, None)
            o.expect(self.heads([node]))
            return {"armed": True}
        if cmd == "catchup_wait":
            node = a["node"]
            await self.wait_reached(a.get("timeout", 600))
            return {"seconds": o.reached_at[node] - o.connected_at[node], "snapshots": o.snapshots}
        if cmd == "states":  # (node, head, digest) of nodes, for resuming raw idle streams
            out = {}
            for st in self.store.nodes():
                out[st.node] = [st.head_offset, st.digest]
            Path(a["path"]).write_text(json.dumps({"log_id": self.store.log_id, "nodes": out}))
            return {"nodes": len(out)}
        raise ValueError(f"unknown command {cmd!r}")


def proc_status_safe() -> dict[str, int]:
    import os

    return proc_status(os.getpid())


def proc_cpu_seconds_self() -> float:
    import os

    return proc_cpu_seconds(os.getpid())


class Standby:
    """A Follower of the leader's log; times every commit of followed records."""

    def __init__(self, store_dir: Path, *, leader: str, identity: str) -> None:
        self.store_dir = store_dir
        self.leader = leader
        self.identity = identity
        self.commits: list[tuple[int, float]] = []  # (last offset committed, when)
        self.follower: Any = None
        self.stop = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None
        self._time_commits()

    def _time_commits(self) -> None:
        """Wrap LogStore.append_records in this process: the Follower's store may be reopened or replaced."""
        original = LogStore.append_records
        commits = self.commits

        def append_records(store: LogStore, records: Any, *args: Any, **kwargs: Any) -> Any:
            out = original(store, records, *args, **kwargs)
            if records:
                commits.append((int.from_bytes(records[-1][1:9], "big"), time.monotonic()))
            return out

        LogStore.append_records = append_records  # type: ignore[method-assign]

    def start(self) -> None:
        from manager import following

        options = following.channel_options() if hasattr(following, "channel_options") else []
        store = LogStore(self.store_dir)
        self.follower = following.Follower(
            self.store_dir, store, identity=self.identity, leader_address=lambda: self.leader,
            channel=lambda address: grpc.aio.insecure_channel(address, options=options))
        self.task = asyncio.create_task(self.follower.run(self.stop))

    def head(self) -> int:
        f = self.follower
        return int(getattr(f, "head_offset", 0) or 0)

    async def handle(self, cmd: str, a: dict[str, Any]) -> dict[str, Any]:
        if self.task is not None and self.task.done():
            self.task.result()  # the follower died: say why
            raise RuntimeError("the follower returned before it was told to stop")
        if cmd == "stats":
            f = self.follower
            return {**proc_status_safe(), "cpu": proc_cpu_seconds_self(), "head": self.head(),
                    "copies": getattr(f, "copies", None), "last_error": str(getattr(f, "last_error", "") or ""),
                    "commits": len(self.commits)}
        if cmd == "wait_head":  # every record through `offset` committed here
            deadline = time.monotonic() + a.get("timeout", 120)
            while self.head() < a["offset"]:
                if self.task is not None and self.task.done():
                    self.task.result()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"standby head {self.head()} short of {a['offset']} after {a.get('timeout', 120)}s"
                                       f" (last error: {getattr(self.follower, 'last_error', '')})")
                await asyncio.sleep(0.01)
            return {"head": self.head()}
        if cmd == "commits":  # (last offset, when) of every commit after `after`
            return {"commits": [c for c in self.commits if c[0] > a.get("after", 0)]}
        raise ValueError(f"unknown command {cmd!r}")

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            try:
                store = await asyncio.wait_for(self.task, 30)
                store.close()
            except Exception as exc:  # noqa: BLE001 (closing: say it, do not hide the results)
                logger.warning("follower ended with {}", exc)


async def command_loop(handler: Any) -> None:
    """Serve JSON-line commands from stdin until EOF or quit."""
    loop = asyncio.get_running_loop()
    lines = stdin_lines(loop)
    while (line := await lines.get()) is not None:
        if not line.strip():
            continue
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply = await handler.handle(cmd, msg)
        except Exception as exc:  # noqa: BLE001 (reported to the bench, which fails loudly)
            reply = {"error": f"{cmd}: {type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


async def amain(args: argparse.Namespace) -> None:
    import os

    raise_nofile()
    if args.follow:
        standby = Standby(Path(args.store), leader=args.follow, identity=args.identity)
        standby.start()
        print(json.dumps({"port": 0, "log_id": "", "pid": os.getpid()}), flush=True)
        await command_loop(standby)
        await standby.close()
        return
    store = LogStore(args.store)
    host = Host(store, SyncSettings(heartbeat_seconds=args.heartbeat), replicate=args.replicate)
    await host.start_server()
    print(json.dumps({"port": host.port, "log_id": store.log_id, "pid": os.getpid()}), flush=True)
    await command_loop(host)
    if host.server is not None:
        await host.server.stop(0)
    store.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", required=True)
    p.add_argument("--heartbeat", type=float, default=10.0)
    p.add_argument("--replicate", action="store_true", help="also serve Follow (a leader with a high-water mark)")
    p.add_argument("--follow", default="", metavar="HOST:PORT", help="be a standby following this leader")
    p.add_argument("--identity", default="bench-standby")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
