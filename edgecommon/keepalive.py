"""gRPC keepalive both ends of the sync stream agree on, as plain channel-argument tuples.

edgecommon does not import grpc: these are the option names and values gRPC documents
(doc/keepalive.md), handed to grpc by the daemons. With heartbeats every few seconds, an
end that hears nothing for SILENT_HEARTBEATS of them counts the stream as dead.
"""

from __future__ import annotations

KEEPALIVE_TIME_MS = 10_000
"""A ping after 10 s without traffic; with the timeout, a black-holed peer is noticed in ~20-30 s."""
KEEPALIVE_TIMEOUT_MS = 10_000
SILENT_HEARTBEATS = 3
"""Heartbeat intervals of silence after which either end drops the stream."""

ChannelOptions = list[tuple[str, int]]


def keepalive_options(*, time_ms: int = KEEPALIVE_TIME_MS, timeout_ms: int = KEEPALIVE_TIMEOUT_MS) -> ChannelOptions:
    """The keepalive channel arguments both the manager's server and the agent's channel set."""
    return [
        ("grpc.keepalive_time_ms", time_ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
