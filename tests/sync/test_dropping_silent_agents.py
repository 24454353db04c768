"""An agent that promised to answer heartbeats and goes silent is dropped after 3 of them.

This is the manager's half of black-hole detection: gRPC throttles its own keepalive
pings while nothing is received, so keepalive alone took about 70 s in the e2e black-hole
scenario. Raw clients that do not promise (tests, old agents) are left to keepalive.
"""

from __future__ import annotations

import asyncio
import time

import grpc
from eventlog import RECORD_FORMAT

from eventlog import LogStore
from proto import sync_pb2 as pb
from tests.kit.fake_agents import raw_stream
from tests.kit.servers import serving
from tests.kit.waits import run


def test_a_silent_agent_is_dropped_and_a_ponging_one_is_kept(store: LogStore) -> None:
    async def scenario() -> None:
        async with serving(store) as s:  # heartbeat every 1 s
            async with raw_stream(s.address) as silent, raw_stream(s.address) as alive, \
                    raw_stream(s.address) as legacy:
                for stream, node, promise in ((silent, "edge01", True), (alive, "edge02", True),
                                              (legacy, "edge03", False)):
                    await stream.send(hello=pb.Hello(node=node, record_format=RECORD_FORMAT,
                                                     answers_heartbeats=promise))
                    assert (await stream.read()).WhichOneof("kind") == "welcome"
                started = time.monotonic()
                ended: list[float] = []
                silent_end = asyncio.create_task(silent.status(timeout=10))  # reads, never answers
                silent_end.add_done_callback(lambda _: ended.append(time.monotonic() - started))
                while time.monotonic() - started < 8:
                    message = await alive.read(timeout=5)
                    if message.WhichOneof("kind") == "heartbeat":
                        await alive.send(pong=pb.Pong(head_offset=message.heartbeat.head_offset))
                assert await silent_end == grpc.StatusCode.UNAVAILABLE
                assert 2.5 <= ended[0] <= 6, ended  # 3 heartbeats of 1 s
                assert "considered gone" in await silent.call.details()
                assert not alive.call.done() and not legacy.call.done()

    run(scenario())
