"""Silent streams: manager memory with 1,000 streams that say Hello and never read, and a well-behaved agent's sync.

Usage: python bench/streams_bench.py [--quick] [--streams N] [--pods N] [--pod-bytes N]

The issue's attack: streams that say Hello for a node of 256 pods x 5 KB and never read
(before: 400 of them took the manager from 44 to 705 MiB, each stream holding a whole
snapshot). Manager: bench/manager_host.py (the real sync service) over a LogStore holding
the node. Attacker: bench/silent_streams.py, one connection per stream, BDP probing off so
each stream's window stays at 64 KiB (the manager must keep what it cannot send). Baseline
in the same run: the host's RSS after one well-behaved sync of the node, before the
streams. The well-behaved agent is a raw stream from this process (Hello with an empty
replica, every snapshot chunk read, Ack): its time from Hello to the last chunk, with and
without the silent streams.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from bench.benchlib import Report, mib, python_child, wait_for  # noqa: E402
from eventlog import RECORD_FORMAT, Change, LogStore  # noqa: E402
from proto import sync_pb2 as pb  # noqa: E402
from proto import sync_pb2_grpc as pb_grpc  # noqa: E402

NODE = "edge11"


def manifest(name: str, size: int) -> bytes:
    pad = "x" * max(0, size - 120)
    return (f'{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default"}},'
            f'"spec":{{"nodeName":"{NODE}","pad":"{pad}"}}}}').encode()


async def well_behaved_sync(address: str) -> tuple[float, int]:
    """Seconds from Hello to the snapshot's last chunk (then Ack), and the pods received."""
    async with grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        call = pb_grpc.SyncStub(ch).Stream()
        t0 = time.monotonic()
        await call.write(pb.AgentMessage(hello=pb.Hello(node=NODE, record_format=RECORD_FORMAT,
                                                        agent_version="bench-agent")))
        pods = 0
        while True:
            m = await asyncio.wait_for(call.read(), 60)
            if m is grpc.aio.EOF:
                raise RuntimeError("stream ended before the snapshot")
            if m.WhichOneof("kind") == "snapshot":
                pods += len(m.snapshot.entries)
                if m.snapshot.last:
                    took = time.monotonic() - t0
                    await call.write(pb.AgentMessage(ack=pb.Ack(applied_offset=m.snapshot.offset,
                                                                digest=m.snapshot.digest)))
                    call.cancel()
                    return took, pods


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: 50 silent streams")
    p.add_argument("--streams", type=int, default=None)
    p.add_argument("--pods", type=int, default=256)
    p.add_argument("--pod-bytes", type=int, default=5 * 1024)
    a = p.parse_args()
    streams = a.streams or (50 if a.quick else 1000)
    r = Report("streams", a.quick)
    with tempfile.TemporaryDirectory(prefix="bench-streams-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        with LogStore(work / "log") as store:
            store.append([Change(NODE, "put", "default", f"app{i:04d}", manifest(f"app{i:04d}", a.pod_bytes))
                          for i in range(a.pods)])
        host = python_child("manager_host", "manager_host.py", "--store", str(work / "log"),
                            log_path=work / "manager_host.log")
        children = [host]
        try:
            address = f"127.0.0.1:{host.recv(timeout=120)['port']}"
            before_s, pods = asyncio.run(well_behaved_sync(address))
            assert pods == a.pods, pods
            time.sleep(1.0)
            base = host.call("stats")
            attacker = python_child("silent_streams", "silent_streams.py", "--addr", address, "--node", NODE,
                                    log_path=work / "silent_streams.log")
            children.append(attacker)
            attacker.recv(timeout=60)
            t0 = time.monotonic()
            attacker.call("open", streams=streams, timeout=600)
            wait_for(lambda: host.call("stats")["streams"]["replaced"] >= streams - 1, timeout=600,
                     what="every silent stream admitted", interval=0.5)
            open_s = time.monotonic() - t0
            time.sleep(3.0)
            attacked = host.call("stats")
            under_s, pods = asyncio.run(well_behaved_sync(address))
            assert pods == a.pods, pods
            after = host.call("stats")
        finally:
            for c in reversed(children):
                c.stop()
    grew = mib(attacked["VmRSS"] - base["VmRSS"])
    st = attacked["streams"]
    r.add(f"manager RSS growth, {streams:,} silent streams, node of {a.pods} pods x {a.pod_bytes // 1024} KB",
          f"+{grew:.0f} MiB", target="<= +100 MiB", met=grew <= 100,
          baseline=f"{mib(base['VmRSS']):.0f} MiB before the streams",
          note=f"{mib(attacked['VmRSS']):.0f} MiB with them (anon +{mib(attacked['RssAnon'] - base['RssAnon']):.0f} "
               f"MiB); open {st['open']}, live {st['live']}, replaced {st['replaced']}; opened in {open_s:.1f} s")
    r.add("well-behaved agent sync under the silent streams", f"{under_s * 1000:.0f} ms", target="< 1 s",
          met=under_s < 1.0, baseline=f"{before_s * 1000:.0f} ms without them",
          note=f"Hello to the last of {a.pods} pods' snapshot chunks; {mib(after['VmRSS']):.0f} MiB after")
    r.print()


if __name__ == "__main__":
    main()
