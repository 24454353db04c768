"""Silent streams: manager memory with 1,000 streams that say Hello and never read, and a well-behaved agent's sync.

Usage: python bench/streams_bench.py [--quick] [--streams N] [--pods N] [--pod-bytes N] [--spread-pods N]

The issue's attack: streams that say Hello for a node of 256 pods x 5 KB and never read
(before: 400 of them took the manager from 44 to 705 MiB, each stream holding a whole
snapshot). Manager: bench/manager_host.py (the real sync service) over a LogStore holding
the node. Attacker: bench/silent_streams.py, one connection per stream, BDP probing off so
each stream's window stays at 64 KiB (the manager must keep what it cannot send). Baseline
in the same run: the host's RSS after one well-behaved sync of the node, before the
streams. The well-behaved agent is a raw stream from this process (Hello with an empty
replica, every snapshot chunk read, Ack): its time from Hello to the last chunk, with and
without the silent streams. Two phases: the issue's (every silent stream for the same node:
replacement and the per-node limit bound it), then one silent stream for each of --streams
other nodes (each stays live: what one live stream costs, so what --max-streams allows).
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
LEGIT = "edge-legit"  # the well-behaved agent's node: same size as NODE, not attacked


def manifest(name: str, size: int) -> bytes:
    pad = "x" * max(0, size - 120)
    return (f'{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"default"}},'
            f'"spec":{{"pad":"{pad}"}}}}').encode()


async def well_behaved_sync(address: str) -> tuple[float, int]:
    """Seconds from Hello to the snapshot's last chunk (then Ack), and the pods received."""
    async with grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        call = pb_grpc.SyncStub(ch).Stream()
        t0 = time.monotonic()
        await call.write(pb.AgentMessage(hello=pb.Hello(node=LEGIT, record_format=RECORD_FORMAT,
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


def silent_phase(host, attacker, address: str, *, nodes: list[str], settle_s: float) -> dict:  # noqa: ANN001
    """Open one silent stream per entry of `nodes`, wait until the manager handled every Hello, measure, sync."""
    base = host.call("stats")
    s0 = base["streams"]
    t0 = time.monotonic()
    attacker.call("open", nodes=nodes, timeout=600)

    def handled() -> bool:
        s = host.call("stats")["streams"]
        return (s["live"] + s["replaced"] - s0["replaced"] + s["refused"] - s0["refused"]) >= len(nodes)

    wait_for(handled, timeout=600, what="every silent stream's Hello handled", interval=0.5)
    open_s = time.monotonic() - t0
    time.sleep(settle_s)
    attacked = host.call("stats")
    sync_s, pods = asyncio.run(well_behaved_sync(address))
    attacker.call("close", timeout=600)
    wait_for(lambda: host.call("stats")["streams"]["open"] == 0, timeout=120, what="the silent streams ended",
             interval=0.5)
    return {"base": base, "attacked": attacked, "sync_s": sync_s, "pods": pods, "open_s": open_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke run: 50 silent streams")
    p.add_argument("--streams", type=int, default=None)
    p.add_argument("--pods", type=int, default=256)
    p.add_argument("--pod-bytes", type=int, default=5 * 1024)
    p.add_argument("--spread-pods", type=int, default=16,
                   help="pods of each of the --streams other nodes (one silent stream each)")
    a = p.parse_args()
    streams = a.streams or (50 if a.quick else 1000)
    r = Report("streams", a.quick)
    spread = [f"spread{i:05d}" for i in range(streams)]
    with tempfile.TemporaryDirectory(prefix="bench-streams-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        with LogStore(work / "log") as store:
            for node in (NODE, LEGIT):
                store.append([Change(node, "put", "default", f"app{i:04d}", manifest(f"app{i:04d}", a.pod_bytes))
                              for i in range(a.pods)])
            for first in range(0, streams, 100):
                store.append([Change(n, "put", "default", f"app{i:04d}", manifest(f"app{i:04d}", a.pod_bytes))
                              for n in spread[first:first + 100] for i in range(a.spread_pods)])
        host = python_child("manager_host", "manager_host.py", "--store", str(work / "log"),
                            log_path=work / "manager_host.log")
        children = [host]
        try:
            address = f"127.0.0.1:{host.recv(timeout=120)['port']}"
            before_s, pods = asyncio.run(well_behaved_sync(address))
            assert pods == a.pods, pods
            time.sleep(1.0)
            attacker = python_child("silent_streams", "silent_streams.py", "--addr", address, "--node", NODE,
                                    log_path=work / "silent_streams.log")
            children.append(attacker)
            attacker.recv(timeout=60)
            one = silent_phase(host, attacker, address, nodes=[NODE] * streams, settle_s=3.0)
            time.sleep(2.0)
            many = silent_phase(host, attacker, address, nodes=spread, settle_s=3.0)
        finally:
            for c in reversed(children):
                c.stop()
    for ph in (one, many):
        assert ph["pods"] == a.pods, ph["pods"]
    grew = mib(one["attacked"]["VmRSS"] - one["base"]["VmRSS"])
    st = one["attacked"]["streams"]
    r.add(f"manager RSS growth, {streams:,} silent streams for one node of {a.pods} pods x {a.pod_bytes // 1024} KB",
          f"+{grew:.0f} MiB", target="<= +100 MiB", met=grew <= 100,
          baseline=f"{mib(one['base']['VmRSS']):.0f} MiB before the streams",
          note=f"anon +{mib(one['attacked']['RssAnon'] - one['base']['RssAnon']):.0f} MiB; open {st['open']}, "
               f"live {st['live']}, replaced {st['replaced']}, refused {st['refused']} (8 a node at most)")
    r.add("well-behaved agent sync under them", f"{one['sync_s'] * 1000:.0f} ms", target="< 1 s",
          met=one["sync_s"] < 1.0, baseline=f"{before_s * 1000:.0f} ms without them",
          note=f"Hello to the last snapshot chunk of another node of {a.pods} pods x {a.pod_bytes // 1024} KB")
    grew = mib(many["attacked"]["VmRSS"] - many["base"]["VmRSS"])
    anon = many["attacked"]["RssAnon"] - many["base"]["RssAnon"]
    st = many["attacked"]["streams"]
    per = anon / max(1, st["live"])
    r.add(f"manager RSS growth, {streams:,} silent streams, one per node of {a.spread_pods} pods x "
          f"{a.pod_bytes // 1024} KB", f"+{grew:.0f} MiB",
          baseline=f"{mib(many['base']['VmRSS']):.0f} MiB before the streams",
          note=f"anon +{mib(anon):.0f} MiB = {per:.0f} KiB a live stream ({st['live']} live; the rest is LMDB "
               f"pages read, RssFile +{mib(many['attacked']['RssFile'] - many['base']['RssFile']):.0f} MiB): "
               f"~{per * 10_000 / 2**20:.1f} GiB of heap at --max-streams 10000")
    r.add("well-behaved agent sync under them", f"{many['sync_s'] * 1000:.0f} ms", target="< 1 s",
          met=many["sync_s"] < 1.0, baseline=f"{before_s * 1000:.0f} ms without them")
    r.print()


if __name__ == "__main__":
    main()
