"""Benchmark child: the manager's real sync service (create_server, LogNotifier, AgentSession) over a LogStore.

Usage: python bench/manager_host.py --store DIR [--heartbeat SECONDS]

Why not `edge-manager`: the fan-out, reconnect, catch-up and memory benchmarks append to
the log directly (no kube-apiserver), and the manager wakes streams with an in-process
notification, so the appends must happen in the process that serves the streams. This
host runs exactly the manager's sync code (the same servicer, sessions, window, notifier)
and appends through LogStore.append + LogNotifier.notify, as the recorder does.

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

    def __init__(self, store: LogStore, settings: SyncSettings) -> None:
        self.store = store
        self.settings = settings
        self.notifier = LogNotifier()
        self.observer = BenchObserver()
        self.server: grpc.aio.Server | None = None
        self.streams: StreamTable | None = None
        self.port = 0
        self.raw_batches: list[pb.ManagerMessage] = []
        self.version = 1_000_000  # manifest versions of bumps, unique per run

    async def start_server(self, port: int = 0) -> None:
        built = create_server(store=self.store, notifier=self.notifier, observer=self.observer,
                              address=f"127.0.0.1:{port}", tls=None, settings=self.settings)
        server, self.port, self.streams = built.grpc_server, built.port, built.streams
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

    def append(self, changes: list[Change]) -> int:
        """Append in transactions of APPEND_BATCH and wake the streams, as the recorder does."""
        n = 0
        for i in range(0, len(changes), APPEND_BATCH):
            events = self.store.append(changes[i : i + APPEND_BATCH])
            n += len(events)
            self.notifier.notify({e.node for e in events})
        return n

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
                self.notifier.notify({e.node for e in events})
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


async def amain(args: argparse.Namespace) -> None:
    raise_nofile()
    store = LogStore(args.store)
    host = Host(store, SyncSettings(heartbeat_seconds=args.heartbeat))
    await host.start_server()
    import os

    print(json.dumps({"port": host.port, "log_id": store.log_id, "pid": os.getpid()}), flush=True)
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
            reply = await host.handle(cmd, msg)
        except Exception as exc:  # noqa: BLE001 (reported to the bench, which fails loudly)
            reply = {"error": f"{cmd}: {type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    if host.server is not None:
        await host.server.stop(0)
    store.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--store", required=True)
    p.add_argument("--heartbeat", type=float, default=10.0)
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
