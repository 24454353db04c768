"""Benchmark child: many agents in one process, speaking the real protocol through the real SyncClient.

Usage: python bench/agent_load.py --addr HOST:PORT[,HOST:PORT...] --nodes PREFIX:FIRST:COUNT --replicas DIR
           [--files DIR] [--raw-idle STATES.json]

- Default: one SyncClient + ReplicaStore (LMDB under --replicas, tmpfs for the fan-out
  runs) per node; after_apply returns None (no files), as a load generator should.
- --files DIR: after_apply runs the real ManifestReconciler into DIR/<node>/, exactly as
  edge-agent's after_apply does (the change-latency and catch-up benchmarks).
- --raw-idle STATES: no SyncClient: one raw gRPC stream per node that sends the Hello an
  in-sync agent sends (log_id, head offset, digest from STATES) and then only reads
  heartbeats. For the 10,000-idle-streams figure: 10,000 SyncClients with their LMDB
  environments do not fit one 2-core machine next to the manager.

Each client gets its own TCP connection (a local subchannel pool), as separate agents would.
Several --addr (comma-separated) are every client's --sync-server list, as agents of several
managers get (the HA benchmarks); the raw modes use the first.
Commands (JSON lines on stdin): start, stop, status, raw_count, track, tracked. Must not import manager.
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

from agent.reconciling import ManifestReconciler  # noqa: E402
from agent.sync_client import Report, SyncClient, channel_options  # noqa: E402
from bench.benchlib import raise_nofile, stdin_lines  # noqa: E402
from eventlog import RECORD_FORMAT, ReplicaStore  # noqa: E402
from proto import sync_pb2 as pb  # noqa: E402
from proto import sync_pb2_grpc as pb_grpc  # noqa: E402

OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)  # one TCP connection per agent, not one shared


def node_names(spec: str) -> list[str]:
    prefix, first, count = spec.split(":")
    return [f"{prefix}{i:05d}" for i in range(int(first), int(first) + int(count))]


class Load:
    """The simulated agents of this process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.nodes = node_names(args.nodes)
        self.clients: list[SyncClient] = []
        self.replicas: list[ReplicaStore] = []
        self.reconcilers: list[ManifestReconciler] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.raw_welcomes = 0
        self.raw_heartbeats = 0
        self.addresses = [a for a in args.addr.split(",") if a]
        self.tracking: Tracking | None = None
        if args.raw_idle:
            return
        for node in self.nodes:
            replica = ReplicaStore(Path(args.replicas) / node, node=node, map_size=args.map_size << 20)
            after_apply = self._no_files
            if args.files:
                folder = Path(args.files) / node
                folder.mkdir(parents=True, exist_ok=True)
                self.reconcilers.append(ManifestReconciler(folder, desired=replica.pods))
                after_apply = self._reconciling(self.reconcilers[-1])
            client = SyncClient(node=node, addresses=self.addresses, replica=replica, after_apply=after_apply,
                                backoff_initial=args.backoff_initial, backoff_max=args.backoff_max)
            client.channel_options = [*client.channel_options, OWN_CONNECTION]
            self.clients.append(client)
            self.replicas.append(replica)

    @staticmethod
    async def _no_files() -> Report | None:
        return None

    @staticmethod
    def _reconciling(reconciler: ManifestReconciler):  # noqa: ANN205
        async def after_apply() -> Report:  # what edge-agent's Agent.after_apply does
            outcome = await asyncio.to_thread(reconciler.reconcile_changes)
            return Report(manifests_ok=outcome.ok, message=outcome.message, managed_manifests=outcome.managed)

        return after_apply

    def start(self) -> None:
        if self.tasks:
            return
        if self.args.raw_idle:
            states = json.loads(Path(self.args.raw_idle).read_text())
            for node in self.nodes:
                head, digest = states["nodes"].get(node, [0, 0])
                self.tasks.append(asyncio.create_task(self._raw_idle(node, states["log_id"], head, digest)))
        else:
            self.tasks = [asyncio.create_task(c.run(), name=c.node) for c in self.clients]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    async def _raw_idle(self, node: str, log_id: str, head: int, digest: int) -> None:
        """An in-sync agent that never changes: Hello, then read heartbeats forever."""
        while True:
            try:
                async with grpc.aio.insecure_channel(self.addresses[0],
                                                     options=[*channel_options(), OWN_CONNECTION]) as ch:
                    call = pb_grpc.SyncStub(ch).Stream()
                    await call.write(pb.AgentMessage(hello=pb.Hello(
                        node=node, log_id=log_id, applied_offset=head, digest=digest, record_format=RECORD_FORMAT,
                        agent_version="bench-idle")))
                    async for message in call:
                        kind = message.WhichOneof("kind")
                        if kind == "welcome":
                            self.raw_welcomes += 1
                        elif kind == "heartbeat":
                            self.raw_heartbeats += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (reconnect, as an agent would)
                logger.debug("idle stream {}: {}", node, exc)
            await asyncio.sleep(1.0)

    def status(self) -> dict[str, Any]:
        c = self.clients
        return {
            "clients": len(c) or len(self.nodes),
            "connected": sum(x.connected for x in c) if c else self.raw_welcomes,
            "snapshots_installed": sum(x.snapshots_installed for x in c),
            "events_applied": sum(x.events_applied for x in c),
            "batches_applied": sum(x.batches_applied for x in c),
            "reconnects": sum(x.reconnects for x in c),
            "leader_redirects": sum(getattr(x, "leader_redirects", 0) for x in c),
            "by_address": {a: sum(1 for x in c if x.connected and x.address == a) for a in self.addresses},
            "heartbeats": sum(x.heartbeats_received for x in c) + self.raw_heartbeats,
            "applied": {x.node: x.applied_offset for x in c} if self.args.report_offsets else {},
            # the newest reconcile pass of any node: (seconds, files written)
            "last_reconcile": max(((r.stats.last.seconds, r.stats.last.written) for r in self.reconcilers
                                   if r.stats.last is not None), default=None),
        }

    async def raw_count(self, expect: int) -> dict[str, Any]:
        """The catch-up baseline: receive the host's raw batches, count events, nothing else."""
        async with grpc.aio.insecure_channel(self.addresses[0], options=channel_options()) as ch:
            await ch.channel_ready()
            call = ch.unary_stream("/bench.Raw/Stream", request_serializer=bytes,
                                   response_deserializer=pb.ManagerMessage.FromString)
            t0 = time.monotonic()
            n = 0
            async for message in call(b""):
                n += len(message.batch.events)
            dt = time.monotonic() - t0
        if n != expect:
            raise RuntimeError(f"raw stream carried {n} events, expected {expect}")
        return {"events": n, "seconds": dt}


class Tracking:
    """When each client first got a Welcome from one address, and first stood at its head there.

    For the failover benchmark: armed before the leader is killed, so every time is the first
    on the new leader. Times are time.monotonic(), one clock for every process of the machine.
    """

    POLL_SECONDS = 0.01

    def __init__(self, clients: list[SyncClient], address: str) -> None:
        self.address = address
        self.clients = clients
        self.welcomed: dict[str, float] = {}
        self.in_sync: dict[str, float] = {}
        self.start = {"snapshots_installed": sum(c.snapshots_installed for c in clients),
                      "reconnects": sum(c.reconnects for c in clients),
                      "leader_redirects": sum(getattr(c, "leader_redirects", 0) for c in clients)}
        self.done = asyncio.Event()
        self.task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        pending = list(self.clients)
        while pending:
            now = time.monotonic()
            left = []
            for c in pending:
                if c.connected and c.address == self.address:
                    self.welcomed.setdefault(c.node, now)
                    if c.applied_offset >= c.head_offset:
                        self.in_sync[c.node] = now
                        continue
                left.append(c)
            pending = left
            await asyncio.sleep(self.POLL_SECONDS)
        self.done.set()

    async def result(self, timeout: float) -> dict[str, Any]:
        try:
            await asyncio.wait_for(asyncio.shield(self.done.wait()), timeout)
        except TimeoutError:
            stuck = [c for c in self.clients if c.node not in self.in_sync][:3]
            raise TimeoutError(f"{len(self.clients) - len(self.in_sync)} agent(s) not at their head on "
                               f"{self.address} after {timeout:g}s, e.g. "
                               + "; ".join(f"{c.node} at {c.address or '-'} connected={c.connected} "
                                           f"applied={c.applied_offset} head={c.head_offset} "
                                           f"last error: {c.last_error}" for c in stuck)) from None
        c = self.clients
        return {"welcomed": self.welcomed, "in_sync": self.in_sync,
                "snapshots_installed": sum(x.snapshots_installed for x in c) - self.start["snapshots_installed"],
                "reconnects": sum(x.reconnects for x in c) - self.start["reconnects"],
                "leader_redirects": sum(getattr(x, "leader_redirects", 0) for x in c)
                - self.start["leader_redirects"]}


async def amain(args: argparse.Namespace) -> None:
    raise_nofile()
    load = Load(args)
    loop = asyncio.get_running_loop()
    lines = stdin_lines(loop)
    print(json.dumps({"ready": True, "nodes": len(load.nodes)}), flush=True)
    while (line := await lines.get()) is not None:
        if not line.strip():
            continue
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "quit":
            break
        try:
            if cmd == "start":
                load.start()
                reply: dict[str, Any] = {"started": len(load.tasks)}
            elif cmd == "stop":
                await load.stop()
                reply = {"stopped": True}
            elif cmd == "status":
                reply = load.status()
            elif cmd == "raw_count":
                reply = await load.raw_count(msg["expect"])
            elif cmd == "track":  # arm: record when each client reaches its head on this address
                if load.tracking is not None:
                    load.tracking.task.cancel()
                load.tracking = Tracking(load.clients, msg["address"])
                reply = {"tracking": msg["address"]}
            elif cmd == "tracked":
                if load.tracking is None:
                    raise ValueError("tracked before track")
                reply = await load.tracking.result(msg.get("timeout", 300))
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as exc:  # noqa: BLE001
            reply = {"error": f"{cmd}: {type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    await load.stop()
    for r in load.replicas:
        r.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True, help="HOST:PORT, or several comma-separated (every client gets all)")
    p.add_argument("--nodes", required=True, help="PREFIX:FIRST:COUNT")
    p.add_argument("--replicas", default="")
    p.add_argument("--files", default="")
    p.add_argument("--raw-idle", default="")
    p.add_argument("--map-size", type=int, default=64, help="replica LMDB map size in MiB")
    p.add_argument("--backoff-initial", type=float, default=0.5)
    p.add_argument("--backoff-max", type=float, default=30.0, help="the agent's reconnect backoff ceiling (its default)")
    p.add_argument("--report-offsets", action="store_true")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
