"""Benchmark child: sync streams that say Hello and never read (the issue's attack), each on its own connection.

Usage: python bench/silent_streams.py --addr HOST:PORT --node NAME

Protocol: JSON lines (bench/benchlib.Child). First line {"pid"}; then {"cmd": "open", "streams": N}
opens N streams for --node (or {"cmd": "open", "nodes": [...]}: one stream per node) and answers
{"opened": N} once every Hello is written; "close" closes them all ({"closed": N}); "quit" ends.
The channels disable BDP probing, so each stream's receive window stays at 64 KiB: the
manager cannot push its data into this process's buffers and must hold what it cannot
send itself (the worst case for the manager's memory). Must not import manager or agent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from bench.benchlib import raise_nofile, stdin_lines  # noqa: E402
from eventlog import RECORD_FORMAT  # noqa: E402
from proto import sync_pb2 as pb  # noqa: E402
from proto import sync_pb2_grpc as pb_grpc  # noqa: E402

SILENT_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0)]


async def amain(a: argparse.Namespace) -> None:
    raise_nofile()
    print(json.dumps({"pid": os.getpid()}), flush=True)
    channels: list[grpc.aio.Channel] = []
    calls: list[grpc.aio.StreamStreamCall] = []
    lines = stdin_lines(asyncio.get_running_loop())
    while (line := await lines.get()) is not None:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        if msg["cmd"] == "open":
            for node in msg.get("nodes") or [a.node] * msg["streams"]:
                ch = grpc.aio.insecure_channel(a.addr, options=SILENT_OPTIONS)
                call = pb_grpc.SyncStub(ch).Stream()
                try:
                    await call.write(pb.AgentMessage(hello=pb.Hello(node=node, record_format=RECORD_FORMAT,
                                                                    agent_version="bench-silent")))
                except grpc.aio.AioRpcError:
                    pass  # refused at once (a limit): the manager's counters say so
                channels.append(ch)
                calls.append(call)
            print(json.dumps({"opened": len(calls)}), flush=True)
        elif msg["cmd"] == "close":
            n = len(channels)
            for ch in channels:
                await ch.close(grace=None)
            channels, calls = [], []
            print(json.dumps({"closed": n}), flush=True)
    for ch in channels:
        await ch.close(grace=None)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--node", required=True)
    asyncio.run(amain(p.parse_args()))


if __name__ == "__main__":
    main()
