"""The manager's gRPC sync service: settings, TLS, the thin servicer and create_server.

Owns how the server is built (options, credentials, binding). The protocol
logic lives in sync_session.py, wakeups in notify.py, identity checks in
identity.py. Must not import kubernetes or the agent package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

from eventlog import LogStore
from manager.notify import LogNotifier
from manager.sync_session import UNDECODABLE, AgentObserver, AgentSession, NullObserver, SyncSettings
from proto import sync_pb2 as pb
from proto import sync_pb2_grpc as pb_grpc

__all__ = [
    "AgentObserver",
    "LogNotifier",
    "NullObserver",
    "ServerTls",
    "SyncServicer",
    "SyncSettings",
    "create_server",
    "listen_address",
    "server_options",
]

SERVICE = "k8sedge.sync.v1.Sync"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTls:
    """Server certificate; with client_ca_file, agents must present a certificate naming their node."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


class SyncServicer(pb_grpc.SyncServicer):
    """Thin servicer: each stream gets its own AgentSession."""

    def __init__(
        self, *, store: LogStore, notifier: LogNotifier, observer: AgentObserver, settings: SyncSettings,
        require_identity: bool,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._observer = observer
        self._settings = settings
        self._require_identity = require_identity

    async def Stream(  # noqa: N802 (the generated name)
        self, request_iterator: AsyncIterator[object], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ManagerMessage]:
        """One agent's stream for as long as its connection lives."""
        session = AgentSession(
            store=self._store, notifier=self._notifier, observer=self._observer, settings=self._settings,
            require_identity=self._require_identity,
        )
        async with aclosing(session.run(request_iterator, context)) as messages:  # its finally runs now, not at GC
            async for message in messages:
                yield message


def _parse_agent_message(data: bytes) -> object:
    """Deserialize leniently, so garbage ends the stream with INVALID_ARGUMENT, not INTERNAL."""
    try:
        return pb.AgentMessage.FromString(data)
    except DecodeError:
        return UNDECODABLE


def server_options(settings: SyncSettings) -> list[tuple[str, int]]:
    """Channel arguments of the server: keepalive that drops a dead or black-holed agent in ~20-30 s."""
    return [
        ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC shares ports by default: a second manager on the same address must fail, not split the agents
        ("grpc.so_reuseport", 0),
    ]


def listen_address(address: str) -> str:
    """gRPC form of a listen address: ":50051" means every interface, as in the original."""
    if address.startswith(":"):
        return f"[::]{address}"
    return address


def create_server(
    *,
    store: LogStore,
    notifier: LogNotifier,
    observer: AgentObserver,
    address: str,
    tls: ServerTls | None,
    settings: SyncSettings = SyncSettings(),
) -> tuple[grpc.aio.Server, int]:
    """Build the sync server (not started) and bind it; returns the server and its port."""
    require_identity = tls is not None and tls.client_ca_file is not None
    servicer = SyncServicer(
        store=store, notifier=notifier, observer=observer, settings=settings, require_identity=require_identity
    )
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Stream": grpc.stream_stream_rpc_method_handler(
                servicer.Stream,
                request_deserializer=_parse_agent_message,
                response_serializer=pb.ManagerMessage.SerializeToString,
            )
        },
    )
    server = grpc.aio.server(handlers=[handler], options=server_options(settings))
    bind = listen_address(address)
    try:
        if tls is None:
            port = server.add_insecure_port(bind)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
                root_certificates=tls.client_ca_file.read_bytes() if tls.client_ca_file else None,
                require_client_auth=require_identity,
            )
            port = server.add_secure_port(bind, credentials)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from None
    if not port:
        raise OSError(f"cannot listen on {address}")
    return server, port
