"""One agent's sync stream on the manager: resume or snapshot, batches, window, acks, heartbeats.

Owns the protocol logic of docs/sync-protocol.md for the server side; the gRPC
servicer in sync_service.py only hands it the stream. With a Visibility (replication.py's
high-water mark) an agent is sent only what every in-sync standby holds; with a Leadership the
stream ends, with the leader's address, once this manager stops leading. Store reads are short
LMDB read transactions done on the event loop (they never block the writer).
Must not import kubernetes or the agent package.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, Protocol

import grpc
from loguru import logger

from edgecommon.keepalive import KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS, SILENT_HEARTBEATS
from eventlog import (
    RECORD_FORMAT,
    CompactedError,
    LogStore,
    SnapshotCause,
    SnapshotPlan,
    SnapshotReason,
    encode_entry,
    event_offset,
    format_digest,
)
from manager.identity import NodeIdentity, certificate_node, describe, node_name_problem
from manager.leadership import Leadership
from manager.notify import LogNotifier
from manager.refusals import REFUSED_LABEL
from manager.streams import DEFAULT_MAX_STREAMS, StreamTable
from proto import sync_pb2 as pb

_MAX_MESSAGE_BYTES = 1 << 20  # a batch stops growing past ~1 MiB (always at least one record)
MAX_REPORT_MESSAGE_BYTES = 1024  # an agent's report message is cut to this before it reaches the status
MAX_LOG_ID_CHARS = 64  # a log_id is 32 hex digits; anything longer is not one of ours
_TRUNCATED = "... (truncated)"
HELLO_TIMEOUT_SECONDS = 30.0  # a connection that never says Hello does not hold a stream forever
LEADER_METADATA_KEY = "k8s-edge-leader"  # trailing metadata of a refusal: the leader's sync address
NOT_THE_LEADER = "not the leader"  # how the details of a refusal by a manager that does not lead start
_P = ParamSpec("_P")  # what an AgentObserver method takes after the node


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncSettings:
    """Tuning of the sync service; the defaults are what docs/sync-protocol.md promises."""

    batch_size: int = 256
    """Events per EventBatch: large enough to amortise per-message cost in Python gRPC."""
    window: int = 16384
    """Events sent but not acknowledged per stream: a slow agent only slows itself; a catching-up
    agent applies half a window per replica transaction (docs/sync-protocol.md)."""
    heartbeat_seconds: float = 10.0
    """Idle time before a Heartbeat; agents drop a stream silent for 3x this."""
    snapshot_chunk_entries: int = 256
    """Pod entries per SnapshotChunk."""
    snapshot_chunk_bytes: int = 8 << 10
    """Manifest bytes per SnapshotChunk (always at least one pod): what one stream holds of a snapshot
    while its reader is slow, since chunks are read from the store only as the previous one is sent."""
    keepalive_time_ms: int = KEEPALIVE_TIME_MS
    """HTTP/2 ping interval: detects a black-holed agent without waiting for TCP."""
    keepalive_timeout_ms: int = KEEPALIVE_TIMEOUT_MS
    """How long an unanswered ping may take before the connection is dropped."""
    max_streams: int = DEFAULT_MAX_STREAMS
    """Open streams at most (--max-streams); beyond, new streams get RESOURCE_EXHAUSTED. Each costs
    about one snapshot chunk and its gRPC buffers (bench/streams_bench.py)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "window", "snapshot_chunk_entries", "snapshot_chunk_bytes", "keepalive_time_ms",
                     "keepalive_timeout_ms", "max_streams"):
            if getattr(self, name) < 1:
                raise ValueError(f"sync setting {name} must be at least 1, got {getattr(self, name)}")
        if self.heartbeat_seconds <= 0:
            raise ValueError(f"sync setting heartbeat_seconds must be positive, got {self.heartbeat_seconds}")


class AgentObserver(Protocol):
    """What the rest of the manager learns from the sync streams (called on the loop thread).

    A failing call is logged by the session and never ends the stream.
    """

    def connected(self, node: str, *, peer: str) -> None: ...

    def acknowledged(self, node: str, *, applied_offset: int, digest: int) -> None: ...

    def reported(self, node: str, *, manifests_ok: bool, message: str, managed_manifests: int) -> None: ...

    def disconnected(self, node: str) -> None: ...

    def snapshot_sent(self, node: str, *, cause: SnapshotCause) -> None: ...


class NullObserver(AgentObserver):
    """An observer that ignores everything (tests, or a manager without status writing)."""

    def connected(self, node: str, *, peer: str) -> None:
        """Ignore."""

    def acknowledged(self, node: str, *, applied_offset: int, digest: int) -> None:
        """Ignore."""

    def reported(self, node: str, *, manifests_ok: bool, message: str, managed_manifests: int) -> None:
        """Ignore."""

    def disconnected(self, node: str) -> None:
        """Ignore."""

    def snapshot_sent(self, node: str, *, cause: SnapshotCause) -> None:
        """Ignore."""


class Visibility(Protocol):
    """The offset agents may be sent through (manager.replication.HighWaterMark): what every in-sync standby holds."""

    def visible(self) -> int: ...


def not_the_leader(leadership: Leadership) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The details and trailing metadata of the UNAVAILABLE refusal by a manager that does not lead."""
    address = leadership.leader_address()
    if address:
        return f"{NOT_THE_LEADER}; the leader is at {address}", ((LEADER_METADATA_KEY, address),)
    return f"{NOT_THE_LEADER}; no leader known", ()


class StreamError(Exception):
    """A protocol violation that ends the stream with a status code."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


UNDECODABLE = object()  # what the request deserializer yields for bytes that are no AgentMessage


def bounded_message(text: str, limit: int = MAX_REPORT_MESSAGE_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, marked when cut (an agent's strings reach the API)."""
    data = text.encode(errors="replace")
    if len(data) <= limit:
        return text
    keep = data[: limit - len(_TRUNCATED)].decode(errors="ignore")
    return keep + _TRUNCATED


class AgentSession:
    """The manager's half of one agent stream, from Hello to disconnect."""

    def __init__(
        self,
        *,
        store: LogStore,
        notifier: LogNotifier,
        observer: AgentObserver,
        settings: SyncSettings,
        identity: NodeIdentity | None,
        table: StreamTable,
        visibility: Visibility | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.store = store
        self.visibility = visibility  # None: every appended event may be sent at once (no standby to wait for)
        self.leadership = leadership  # None: this manager always leads
        self.notifier = notifier
        self.observer = observer
        self.settings = settings
        self.identity = identity  # None: the peer's certificate is not checked (plaintext or no client CA)
        self.table = table
        self.node = ""
        self._replaced = False  # a newer stream of the same node took over; nothing more is reported
        self._wake = asyncio.Event()
        self._error: StreamError | None = None
        self._ended = False  # the agent half-closed its side
        self._sent = 0  # newest offset sent (an event or a snapshot's S)
        self._acked = 0  # newest acknowledged offset
        self._in_flight: deque[int] = deque()  # offsets of events sent but not acknowledged
        self._snapshot_cause: SnapshotCause | None = None  # set: send a snapshot next
        self._snapshot_outstanding = 0  # S of a snapshot sent but not yet acknowledged (0: none)
        self._stale_acks_at_s = 0  # acks of S still due for events sent before that snapshot
        self._last_sent = time.monotonic()
        self._last_received = time.monotonic()
        self._answers_heartbeats = False  # from the Hello: the agent pongs, so its silence means it is gone
        self._trailing: tuple[tuple[str, str], ...] = ()  # trailing metadata of the error that ends the stream

    # -- the stream --------------------------------------------------------

    async def run(
        self, requests: AsyncIterator[object], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ManagerMessage]:
        """Serve the stream: yields every message the manager sends."""
        try:
            hello = await self._hello(requests, context)
        except StreamError as exc:
            host = context.peer().rpartition(":")[0]  # without the port, so a retrying agent logs once
            self.table.log_refusal(f"sync stream from {host} refused ({exc.code.name}): {exc.details}")
            await context.abort(exc.code, exc.details)
            return
        if self.table.is_refused(hello.node):
            details = f"node {hello.node} is refused (its EdgeNode has the label {REFUSED_LABEL}=true)"
            self.table.log_refusal(f"sync stream refused (PERMISSION_DENIED): {details}")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, details)
            return
        if not self.table.claim(hello.node, self, peer=context.peer()):  # else an older stream of the node ends
            details = (f"node {hello.node} has {self.table.max_per_node} sync streams open that have not ended "
                       "(replaced streams whose connections neither read nor died)")
            self.table.log_refusal(f"sync stream refused (RESOURCE_EXHAUSTED): {details}")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, details)
            return
        self.node = hello.node
        self._answers_heartbeats = hello.answers_heartbeats
        self._last_received = time.monotonic()
        self.notifier.subscribe(self.node, self._wake)
        reader = asyncio.create_task(self._read(requests), name=f"sync-read-{self.node}")
        self._tell(self.observer.connected, peer=context.peer())
        try:
            try:
                async for message in self._serve(hello, context):
                    yield message
                    self._last_sent = time.monotonic()
            except StreamError as exc:
                self._error = exc
            if self._error is not None:
                if self._replaced:
                    logger.info("agent {}: {}", self.node, self._error.details)
                else:
                    logger.warning("agent {}: {}", self.node, self._error.details)
                await context.abort(self._error.code, self._error.details, trailing_metadata=self._trailing)
        finally:
            reader.cancel()
            if not self._replaced:
                self._detach()
            self.table.finish(self.node)
            logger.info("agent {} disconnected (acknowledged {})", self.node, self._acked)

    def _detach(self) -> None:
        """Stop being the node's stream: no wakeups, no live slot, the observer hears the disconnect once."""
        self.notifier.unsubscribe(self.node, self._wake)
        self.table.release(self.node, self)
        self._tell(self.observer.disconnected)

    def replace(self, *, by_peer: str) -> None:
        """A newer stream of this node took over (e.g. the agent reconnected after a half-open connection)."""
        if self._replaced:
            return
        self._detach()
        self._replaced = True
        self._error = StreamError(
            grpc.StatusCode.ABORTED, f"replaced by a newer stream for node {self.node} from {by_peer}"
        )
        self._wake.set()

    def refuse(self, *, why: str) -> None:
        """The node was refused: end this stream now with PERMISSION_DENIED."""
        if self._error is None:
            self._error = StreamError(grpc.StatusCode.PERMISSION_DENIED, why)
        self._wake.set()

    async def _hello(self, requests: AsyncIterator[object], context: grpc.aio.ServicerContext) -> pb.Hello:
        """Read and check the opening Hello."""
        try:
            first = await asyncio.wait_for(anext(requests), HELLO_TIMEOUT_SECONDS)
        except StopAsyncIteration:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "stream closed before Hello") from None
        except TimeoutError:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, f"no Hello within {HELLO_TIMEOUT_SECONDS:g}s") from None
        if not isinstance(first, pb.AgentMessage):
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "undecodable message")
        if first.WhichOneof("kind") != "hello":
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a Hello")
        hello = first.hello
        problem = node_name_problem(hello.node)
        if problem is not None:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if len(hello.log_id) > MAX_LOG_ID_CHARS:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"log_id of {len(hello.log_id)} characters (at most {MAX_LOG_ID_CHARS})")
        if self.identity is not None:
            auth = context.auth_context()
            verdict = certificate_node(auth, mode=self.identity)
            if verdict.node is None:
                raise StreamError(grpc.StatusCode.PERMISSION_DENIED,
                                  f"{verdict.problem}; node {hello.node} refused")
            if verdict.node != hello.node:
                raise StreamError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the client certificate {describe(auth)} names node {verdict.node}, not {hello.node}",
                )
        if hello.record_format != RECORD_FORMAT:
            raise StreamError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"record format {hello.record_format} is not supported (this manager speaks {RECORD_FORMAT})",
            )
        return hello

    async def _serve(self, hello: pb.Hello, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ManagerMessage]:
        """Welcome, then snapshots, batches and heartbeats until an error or the agent leaves."""
        cause = self.store.resume_reason(
            self.node, log_id=hello.log_id, applied_offset=hello.applied_offset, digest=hello.digest
        )
        head = self._head()
        welcome = pb.Welcome(
            log_id=self.store.log_id,
            head_offset=head,
            record_format=RECORD_FORMAT,
            window=self.settings.window,
            heartbeat_seconds=max(1, math.ceil(self.settings.heartbeat_seconds)),
        )
        if cause is None:
            welcome.mode = pb.Welcome.RESUME
            welcome.head_offset = max(head, hello.applied_offset)  # it holds what it applied, visible or not
            self._sent = self._acked = hello.applied_offset
            logger.info(
                "agent {} connected from {}: resume after {} (head {})", self.node, context.peer(), self._sent, head
            )
            # the resume position is applied (resume_reason checked its digest): an agent already at the
            # head sends no Ack, so without this its EdgeNode keeps the syncedOffset of before a restart
            self._tell(self.observer.acknowledged, applied_offset=hello.applied_offset, digest=hello.digest)
            yield pb.ManagerMessage(welcome=welcome)
        else:
            # the snapshot's keys are read now, so Welcome can name its S; manifests follow as chunks are sent
            plan = self.store.snapshot_plan(self.node)
            welcome.mode = pb.Welcome.SNAPSHOT
            welcome.snapshot_offset = plan.offset
            welcome.reason = cause.text  # the words, not the label: the wire field stays free text
            logger.info(
                "agent {} connected from {}: snapshot at {} ({})", self.node, context.peer(), plan.offset, cause
            )
            yield pb.ManagerMessage(welcome=welcome)
            async for message in self._until_visible(plan.offset):
                yield message
            for message in self._snapshot_messages(plan, cause):
                yield message
        while True:
            if self._error is not None or self._ended or not self._leading():
                return
            if self._snapshot_cause is not None:
                cause, self._snapshot_cause = self._snapshot_cause, None
                plan = self.store.snapshot_plan(self.node)
                logger.info("agent {}: snapshot at {} ({})", self.node, plan.offset, cause)
                async for message in self._until_visible(plan.offset):
                    yield message
                for message in self._snapshot_messages(plan, cause):
                    yield message
                continue
            self._wake.clear()  # cleared before reading: a notify from now on wakes the wait below
            room = self.settings.window - len(self._in_flight)
            if room > 0:
                batch = self._next_batch(min(room, self.settings.batch_size))
                if batch is not None:
                    yield batch
                    continue
                if self._snapshot_cause is not None:  # compacted under us: the snapshot goes now
                    continue
            silent = time.monotonic() - self._last_received
            if self._answers_heartbeats and silent > SILENT_HEARTBEATS * self.settings.heartbeat_seconds:
                # a black-holed agent: gRPC keepalive pings are throttled while nothing is received
                self._error = StreamError(
                    grpc.StatusCode.UNAVAILABLE, f"nothing from the agent for {silent:.0f}s: considered gone"
                )
                return
            wait = self._last_sent + self.settings.heartbeat_seconds - time.monotonic()
            if wait > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                    continue
                except TimeoutError:
                    pass
            if not self._leading():
                return
            yield self._heartbeat()

    def _heartbeat(self) -> pb.ManagerMessage:
        """A Heartbeat naming the node's newest event the agent may see."""
        return pb.ManagerMessage(heartbeat=pb.Heartbeat(head_offset=self._head(),
                                                        time_unix_ms=time.time_ns() // 1_000_000))

    def _leading(self) -> bool:
        """Whether to go on; when this manager no longer leads, the stream ends with the leader's address."""
        if self.leadership is None or self.leadership.leading():
            return True
        details, self._trailing = not_the_leader(self.leadership)
        if self._error is None:
            self._error = StreamError(grpc.StatusCode.UNAVAILABLE, details)
        return False

    def _head(self) -> int:
        """The node's newest event agents may see: its head, or its newest event through the high-water mark."""
        state = self.store.node_state(self.node)
        head = state.head_offset if state else 0
        if self.visibility is None:
            return head
        visible = self.visibility.visible()
        if head <= visible:
            return head
        try:
            return self.store.node_head_through(self.node, visible)
        except CompactedError:  # compacted past the mark (a standby far behind): no event of it is retained
            return visible

    async def _until_visible(self, offset: int) -> AsyncIterator[pb.ManagerMessage]:
        """Heartbeats until the high-water mark reaches `offset` (a snapshot at S waits for the standbys to hold S)."""
        while self.visibility is not None and self.visibility.visible() < offset:
            if self._error is not None or self._ended or not self._leading():
                return
            self._wake.clear()
            if self.visibility.visible() >= offset:
                return
            wait = self._last_sent + self.settings.heartbeat_seconds - time.monotonic()
            if wait > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                    continue
                except TimeoutError:
                    pass
            yield self._heartbeat()

    def _next_batch(self, limit: int) -> pb.ManagerMessage | None:
        """The next EventBatch after what was sent (through the high-water mark), or None when the agent is current."""
        through = self.visibility.visible() if self.visibility is not None else None
        if through is not None and through <= self._sent:
            return None
        try:
            if through is None:
                raw = self.store.read_node_raw(self.node, after=self._sent, limit=limit)
            else:
                raw = self.store.read_node_raw(self.node, after=self._sent, limit=limit, through=through)
        except CompactedError:
            self._snapshot_cause = SnapshotCause(SnapshotReason.COMPACTED, f"offset {self._sent} was compacted")
            return None
        if not raw:
            return None
        size = 0
        for i, record in enumerate(raw):
            size += len(record)
            if size > _MAX_MESSAGE_BYTES and i > 0:
                raw = raw[:i]
                break
        offsets = [event_offset(r) for r in raw]
        self._in_flight.extend(offsets)
        self._sent = offsets[-1]
        return pb.ManagerMessage(batch=pb.EventBatch(events=raw, head_offset=max(self._head(), self._sent)))

    def _snapshot_messages(self, plan: SnapshotPlan, cause: SnapshotCause) -> Iterator[pb.ManagerMessage]:
        """The chunks of one snapshot, each read from the store when the previous one was sent.

        The plan fixed the pods and their offsets, so the chunks form the view as of S however
        long the reader takes; only compaction of a version not yet sent ends the stream (the
        agent reconnects and gets a fresh snapshot). Afterwards events continue after S.
        """
        # acks of events sent before the snapshot stay valid (they are <= S); their digests are stale.
        # When the last event sent before it is S itself, one such ack names S too.
        self._stale_acks_at_s = 1 if self._sent == plan.offset and self._acked < self._sent else 0
        self._sent = max(self._sent, plan.offset)
        self._snapshot_outstanding = plan.offset
        self._tell(self.observer.snapshot_sent, cause=cause)
        start = 0
        while True:
            if self._error is not None:  # replaced, or the agent broke the protocol: stop reading the store
                return
            try:
                pods = self.store.snapshot_entries(
                    plan, start=start, limit=self.settings.snapshot_chunk_entries,
                    max_bytes=self.settings.snapshot_chunk_bytes,
                )
            except CompactedError as exc:
                raise StreamError(grpc.StatusCode.UNAVAILABLE, f"{exc}; reconnect for a new snapshot") from None
            start += len(pods)
            chunk = pb.SnapshotChunk(offset=plan.offset, entries=[encode_entry(p) for p in pods])
            if start >= plan.pod_count:
                chunk.last = True
                chunk.digest = plan.digest
                chunk.pod_count = plan.pod_count
                yield pb.ManagerMessage(snapshot=chunk)
                return
            yield pb.ManagerMessage(snapshot=chunk)

    # -- what the agent sends ----------------------------------------------

    async def _read(self, requests: AsyncIterator[object]) -> None:
        """Consume acks and reports until the agent half-closes or breaks the protocol."""
        try:
            async for message in requests:
                self._receive(message)
            self._ended = True
        except StreamError as exc:
            self._error = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the call failed underneath us; the serving side sees it too
            logger.debug("agent {}: read failed: {}", self.node, exc)
            self._ended = True
        finally:
            self._wake.set()

    def _receive(self, message: object) -> None:
        """Handle one agent message after the Hello."""
        if not isinstance(message, pb.AgentMessage):
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "undecodable message")
        self._last_received = time.monotonic()
        kind = message.WhichOneof("kind")
        if kind == "pong":
            return  # liveness only
        if kind == "ack":
            self._ack(message.ack.applied_offset, message.ack.digest)
        elif kind == "report":
            r = message.report
            self._tell(
                self.observer.reported, manifests_ok=r.manifests_ok, message=bounded_message(r.message),
                managed_manifests=r.managed_manifests,
            )
        elif kind == "hello":
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "a second Hello on the same stream")
        else:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "an empty message")

    def _ack(self, offset: int, digest: int) -> None:
        """Check an acknowledgement, free window room, and heal a diverged replica."""
        if offset < self._acked or offset > self._sent:
            raise StreamError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"out-of-order ack {offset}: previous ack {self._acked}, newest offset sent {self._sent}",
            )
        self._acked = offset
        while self._in_flight and self._in_flight[0] <= offset:
            self._in_flight.popleft()
        if self._snapshot_outstanding and offset <= self._snapshot_outstanding and (
            offset < self._snapshot_outstanding or self._stale_acks_at_s
        ):
            # the agent still works through what preceded the snapshot: its digest is not comparable
            if offset == self._snapshot_outstanding:
                self._stale_acks_at_s -= 1
        else:
            self._snapshot_outstanding = 0
            expected = self.store.digest_at(self.node, offset)
            if expected is not None and expected != digest and self._snapshot_cause is None:
                logger.warning(
                    "agent {}: digest {} at offset {} differs from the log's {}",
                    self.node, format_digest(digest), offset, format_digest(expected),
                )
                self._snapshot_cause = SnapshotCause(SnapshotReason.DIGEST_MISMATCH, "digest mismatch")
        self._tell(self.observer.acknowledged, applied_offset=offset, digest=digest)
        self._wake.set()

    def _tell(self, event: Callable[Concatenate[str, _P], None], /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Call one AgentObserver method for this node; its failures are logged, never end a stream.

        A replaced stream tells nothing (its successor speaks for the node).
        """
        if self._replaced:
            return
        try:
            event(self.node, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            name = getattr(event, "__name__", event)  # for the log line only
            logger.error("observer {} failed for node {}: {}", name, self.node, exc)
