"""The manager's gRPC sync service: settings, TLS, the thin servicer and create_server.

Owns how the server is built (options, credentials, binding) and the leadership gate
(a manager that does not lead refuses Stream and Follow with the leader's address). The
protocol logic lives in sync_session.py (agents) and replication.py (standbys), wakeups in
notify.py, identity checks in identity.py. Must not import kubernetes or the agent package.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
import socket

import grpc
from google.protobuf.message import DecodeError

from edgecommon.addresses import grpc_listen_target, parse_address
from edgecommon.keepalive import ChannelOptions, keepalive_options
from edgecommon.tls import ReloadingFiles
from eventlog import LogStore
from manager.identity import NodeIdentity
from manager.notify import LogNotifier
from manager.replication import (
    MAX_FOLLOW_STREAMS,
    MAX_FOLLOW_STREAMS_PER_STANDBY,
    FollowSession,
    FollowSettings,
    HighWaterMark,
)
from manager.settings import ServerTls
from manager.streams import StreamTable
from manager.sync_session import (
    UNDECODABLE,
    AgentObserver,
    AgentSession,
    Leadership,
    NullObserver,
    SyncSettings,
    not_the_leader,
)
from proto import sync_pb2 as pb
from proto import sync_pb2_grpc as pb_grpc

__all__ = [
    "AgentObserver",
    "FollowSettings",
    "HighWaterMark",
    "Leadership",
    "LogNotifier",
    "NodeIdentity",
    "NullObserver",
    "ServerTls",
    "SyncServicer",
    "SyncSettings",
    "create_server",
    "listen_address",
    "server_options",
]

SERVICE = "k8sedge.sync.v1.Sync"
_REFUSAL_READ_SECONDS = 2.0  # how long a refusal waits for the Hello it is about to refuse


def tls_files(tls: ServerTls) -> ReloadingFiles[grpc.ServerCertificateConfiguration]:
    """The server's certificate, key and client CA, read again when one of the files changes."""
    def load() -> grpc.ServerCertificateConfiguration:
        # the agent CA (docs/joining.md) is trusted beside the --client-ca-file bundle
        roots = (tls.client_ca_file.read_bytes().rstrip(b"\n") + b"\n" if tls.client_ca_file else b"") \
            + (tls.agent_ca_pem or b"")
        return grpc.ssl_server_certificate_configuration(
            [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())], root_certificates=roots or None,
        )

    paths = [p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p is not None]
    return ReloadingFiles(paths, key_file=tls.key_file, load=load)


class SyncServicer(pb_grpc.SyncServicer):
    """Thin servicer: each stream gets its own AgentSession or FollowSession, admitted by a stream table."""

    def __init__(
        self, *, store: LogStore, notifier: LogNotifier, observer: AgentObserver, settings: SyncSettings,
        identity: NodeIdentity | None, table: StreamTable, leadership: Leadership | None = None,
        replication: HighWaterMark | None = None, follow_settings: FollowSettings = FollowSettings(),
        checks_clients: bool = False,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._observer = observer
        self._settings = settings
        self._identity = identity
        self._leadership = leadership
        self._replication = replication
        self._follow_settings = follow_settings
        self._checks_clients = checks_clients
        self.table = table
        self.follow_table = StreamTable(max_streams=MAX_FOLLOW_STREAMS, max_per_node=MAX_FOLLOW_STREAMS_PER_STANDBY)

    async def _refuse_unless_leading(
        self, request_iterator: AsyncIterator[object], context: grpc.aio.ServicerContext, rpc: str
    ) -> bool:
        """Abort with UNAVAILABLE and the leader's address when this manager does not lead; True when it did."""
        if self._leadership is None or self._leadership.leading():
            return False
        details, trailing = not_the_leader(self._leadership)
        host = context.peer().rpartition(":")[0]
        self.table.log_refusal(f"{rpc} stream from {host} refused (UNAVAILABLE): {details}")
        await _read_hello(request_iterator)
        await context.abort(grpc.StatusCode.UNAVAILABLE, details, trailing_metadata=trailing)
        return True

    async def Stream(  # noqa: N802 (the generated name)
        self, request_iterator: AsyncIterator[object], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ManagerMessage]:
        """One agent's stream for as long as its connection lives."""
        if await self._refuse_unless_leading(request_iterator, context, "sync"):
            return
        if not self.table.enter():
            details = f"too many sync streams: {self.table.max_streams} open (--max-streams)"
            self.table.log_refusal(f"sync stream refused (RESOURCE_EXHAUSTED): {details}")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, details)
            return
        try:
            session = AgentSession(
                store=self._store, notifier=self._notifier, observer=self._observer, settings=self._settings,
                identity=self._identity, table=self.table, visibility=self._replication, leadership=self._leadership,
            )
            async with aclosing(session.run(request_iterator, context)) as messages:  # its finally runs now
                async for message in messages:
                    yield message
        finally:
            self.table.leave()

    async def Follow(  # noqa: N802 (the generated name)
        self, request_iterator: AsyncIterator[object], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LeaderMessage]:
        """One standby manager's copy of the log, for as long as its connection lives."""
        if await self._refuse_unless_leading(request_iterator, context, "follow"):
            return
        if self._replication is None:
            await _read_hello(request_iterator)
            await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                "this manager runs without --leader-elect: it has no standbys")
            return
        if not self.follow_table.enter():
            details = f"too many follow streams: {self.follow_table.max_streams} open"
            self.follow_table.log_refusal(f"follow stream refused (RESOURCE_EXHAUSTED): {details}")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, details)
            return
        try:
            session = FollowSession(
                store=self._store, mark=self._replication, settings=self._settings, follow=self._follow_settings,
                checks_peers=self._checks_clients, table=self.follow_table, leadership=self._leadership,
            )
            async with aclosing(session.run(request_iterator, context)) as messages:
                async for message in messages:
                    yield message
        finally:
            self.follow_table.leave()


async def _read_hello(request_iterator: AsyncIterator[object]) -> None:
    """Take the client's first message before a refusal: a call ended while the client still writes its Hello
    reaches it as INTERNAL, not as the refusal (seen by the standby's Follower in ~2% of refusals)."""
    try:
        await asyncio.wait_for(anext(request_iterator), _REFUSAL_READ_SECONDS)
    except Exception:  # noqa: BLE001 - whatever it sent, or nothing: the refusal follows
        pass


def _parse_agent_message(data: bytes) -> object:
    """Deserialize leniently, so garbage ends the stream with INVALID_ARGUMENT, not INTERNAL."""
    try:
        return pb.AgentMessage.FromString(data)
    except DecodeError:
        return UNDECODABLE


def _parse_standby_message(data: bytes) -> object:
    """Deserialize leniently: a peer's garbage ends its stream with INVALID_ARGUMENT too."""
    try:
        return pb.StandbyMessage.FromString(data)
    except DecodeError:
        return UNDECODABLE


def server_options(settings: SyncSettings) -> ChannelOptions:
    """Channel arguments of the server: the shared keepalive (drops a dead or black-holed agent in ~20-30 s)."""
    return [
        *keepalive_options(time_ms=settings.keepalive_time_ms, timeout_ms=settings.keepalive_timeout_ms),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        # gRPC shares ports by default: a second manager on the same address must fail, not split the agents
        ("grpc.so_reuseport", 0),
    ]


def listen_address(address: str) -> str:
    """gRPC form of a listen address: ":50051" means every interface, as in the original."""
    return grpc_listen_target(address)


class BindProblem(OSError):
    """The sync address cannot be bound; reason in words ('address already in use')."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")
        self.address = address
        self.reason = reason


def bind_problem(bind: str) -> str:
    """Why gRPC could not bind `bind` (it does not say): the error of binding a plain socket there."""
    try:
        address = parse_address(bind, listen=True)
        infos = socket.getaddrinfo(address.host or None, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (OSError, ValueError) as exc:
        return " ".join(str(exc).split())
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is no conflict
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                why = exc.strerror or str(exc)
                return why[:1].lower() + why[1:]
    return "cannot bind"


@dataclass(frozen=True, slots=True)
class SyncServer:
    """A built sync service (not started): the gRPC server, its bound port, and what the metrics read."""

    grpc_server: grpc.aio.Server
    port: int
    streams: StreamTable
    tls_files: ReloadingFiles[grpc.ServerCertificateConfiguration] | None  # None: plaintext
    follow_streams: StreamTable | None = None  # standbys' Follow streams, by identity


def create_server(
    *,
    store: LogStore,
    notifier: LogNotifier,
    observer: AgentObserver,
    address: str,
    tls: ServerTls | None,
    settings: SyncSettings = SyncSettings(),
    leadership: Leadership | None = None,
    replication: HighWaterMark | None = None,
    follow_settings: FollowSettings = FollowSettings(),
) -> SyncServer:
    """Build the sync server (not started) and bind it.

    Without a client CA (plaintext, or TLS alone) no node identity is checked: main refuses
    that unless --insecure or --allow-unauthenticated-agents says so; nor is a standby's peer
    certificate. Without leadership this manager always leads; without replication agents are
    sent every event at once and Follow is UNIMPLEMENTED (a manager without --leader-elect).
    """
    checks_clients = tls is not None and tls.checks_clients
    identity = tls.node_identity if tls is not None and checks_clients else None
    servicer = SyncServicer(
        store=store, notifier=notifier, observer=observer, settings=settings, identity=identity,
        table=StreamTable(max_streams=settings.max_streams), leadership=leadership, replication=replication,
        follow_settings=follow_settings, checks_clients=checks_clients,
    )
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Stream": grpc.stream_stream_rpc_method_handler(
                servicer.Stream,
                request_deserializer=_parse_agent_message,
                response_serializer=pb.ManagerMessage.SerializeToString,
            ),
            "Follow": grpc.stream_stream_rpc_method_handler(
                servicer.Follow,
                request_deserializer=_parse_standby_message,
                response_serializer=pb.LeaderMessage.SerializeToString,
            ),
        },
    )
    server = grpc.aio.server(handlers=[handler], options=server_options(settings))
    bind = listen_address(address)
    files = None if tls is None else tls_files(tls)
    try:
        if files is None:
            port = server.add_insecure_port(bind)
        else:
            credentials = grpc.dynamic_ssl_server_credentials(
                files.current, files.reload_if_changed, require_client_authentication=identity is not None
            )
            port = server.add_secure_port(bind, credentials)
    except RuntimeError:
        raise BindProblem(address, bind_problem(bind)) from None
    if not port:
        raise BindProblem(address, bind_problem(bind))
    return SyncServer(grpc_server=server, port=port, streams=servicer.table, tls_files=files,
                      follow_streams=servicer.follow_table)
