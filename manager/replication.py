"""The leader's side of replication: the high-water mark agents are served through, and Follow streams.

Owns which offsets agents may see (the in-sync standbys' acknowledgements, Kafka ISR style),
and the server half of a standby's Follow stream (docs/ha.md): Welcome with RESUME or COPY,
the log's records byte for byte, a copy of the store, heartbeats. Runs on the event loop of
the gRPC server; from other threads only HighWaterMark.appended() (the recorder's), wake_all()
(the elector's) and the metrics reads. Must not import kubernetes or the agent package.
"""

from __future__ import annotations

import asyncio
import enum
import math
import re
import shutil
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
from loguru import logger

from eventlog import RECORD_FORMAT, LogStore, StoreInfo, event_offset
from eventlog.encoding import from_u64
from manager.identity import certificate_peer, describe
from manager.notify import LogNotifier
from manager.streams import StreamTable
from manager.sync_session import (
    HELLO_TIMEOUT_SECONDS,
    LEADER_METADATA_KEY,
    MAX_LOG_ID_CHARS,
    NOT_THE_LEADER,
    Leadership,
    StreamError,
    SyncSettings,
    not_the_leader,
)
from proto import sync_pb2 as pb

__all__ = [
    "LEADER_METADATA_KEY",
    "NOT_THE_LEADER",
    "CopyReason",
    "FollowSession",
    "FollowSettings",
    "HighWaterMark",
    "Leadership",
    "Standby",
    "copy_reason",
    "identity_problem",
    "not_the_leader",
]

MAX_IDENTITY_CHARS = 256  # a --leader-elect-identity is a pod or host name, "_" and 8 hex digits
_IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
MAX_FOLLOW_STREAMS = 16  # Follow streams open at once (two or three managers; replaced ones not yet ended)
MAX_FOLLOW_STREAMS_PER_STANDBY = 4
_FIELD_OVERHEAD = 8  # protobuf tag and length of one record in a LogRecords, rounded up


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowSettings:
    """Tuning of Follow streams; the defaults bound what one standby costs the leader."""

    batch_records: int = 1024
    """Records per LogRecords at most."""
    batch_bytes: int = (4 << 20) - (16 << 10)
    """Bytes of a LogRecords at most, counting each record's framing (always at least one record): under the
    4 MiB a gRPC client receives by default."""
    window_records: int = 16384
    """Records sent but not acknowledged: a slow standby slows only its own stream."""
    chunk_bytes: int = 1 << 20
    """Bytes per StoreChunk of a COPY."""

    def __post_init__(self) -> None:
        for name in ("batch_records", "batch_bytes", "window_records", "chunk_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"follow setting {name} must be at least 1, got {getattr(self, name)}")


# -- the high-water mark --------------------------------------------------------


class Standby:
    """One connected standby as the mark sees it: its acknowledged offset and whether it is in sync."""

    def __init__(self, identity: str, *, acked: int, now: float) -> None:
        self.identity = identity
        self.acked = acked
        self.in_sync = False
        self.since = now  # last progress, or when it fell behind: the standby timeout counts from here
        self.current_through = 0  # the newest record sent to it while that record was the head


class HighWaterMark:
    """The offset agents may be sent through: every in-sync standby holds the log up to it.

    With no standby in sync it is the store's head (a lone leader serves at once). A standby
    joins the in-sync set when its acknowledgement reaches the head: the head of that moment,
    or the head as it was when the acknowledged record was sent to it (Kafka's "caught up to the
    log end at fetch time", so a standby joins under a steady stream of appends too). It leaves
    the set when it disconnects or acknowledges nothing for standby_timeout while behind. The
    mark never moves back: a standby that joins below it holds agents at the mark until it passes.
    """

    def __init__(
        self, *, store: LogStore, notifier: LogNotifier, standby_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if standby_timeout <= 0:
            raise ValueError(f"standby_timeout must be positive, got {standby_timeout}")
        self._store = store
        self._notifier = notifier
        self.standby_timeout = standby_timeout
        self._clock = clock
        self._standbys: dict[str, Standby] = {}
        self._pending: deque[tuple[int, frozenset[str]]] = deque()  # appends not yet visible: (last offset, nodes)
        self._followers: set[asyncio.Event] = set()  # Follow streams, woken by every append
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_head = store.head_offset  # the newest offset appended() told of (or the head at start)
        self._floor = 0  # the newest offset visible() returned: agents may have been sent through it
        self.timeouts = 0  # in-sync standbys dropped for acknowledging nothing for standby_timeout, since start
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            pass

    # -- what agents see ---------------------------------------------------------

    def visible(self) -> int:
        """The offset agents may be sent through (on the loop thread)."""
        acked = [s.acked for s in self._standbys.values() if s.in_sync]
        self._floor = max(self._floor, min(acked) if acked else self._store.head_offset)
        return self._floor

    def appended(self, last_offset: int, nodes: Iterable[str]) -> None:
        """The recorder appended through last_offset for `nodes` (any thread): wake what may now be sent."""
        names = frozenset(nodes)
        loop = self._loop
        if loop is None:  # no standby ever connected: nothing to hold back, nobody to wake but agents
            self._last_head = max(self._last_head, last_offset)
            self._notifier.notify_threadsafe(names)
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._on_appended(last_offset, names)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._on_appended, last_offset, names)

    def wake_all(self) -> None:
        """Wake every agent and Follow stream (any thread): after this manager stopped leading, each ends now
        with the leader's address instead of at its next heartbeat."""
        def wake() -> None:
            self._notifier.notify_all()
            for event in self._followers:
                event.set()

        loop = self._loop or self._notifier.loop
        if loop is None or loop.is_closed():
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            wake()
        else:
            loop.call_soon_threadsafe(wake)

    def _on_appended(self, last_offset: int, nodes: frozenset[str]) -> None:
        now = self._clock()
        for s in self._standbys.values():
            if s.in_sync and s.acked >= self._last_head:
                s.since = now  # it was current: the timeout counts from this append
        self._last_head = max(self._last_head, last_offset)
        for event in self._followers:
            event.set()
        if last_offset <= self.visible():
            self._notifier.notify(nodes)
        else:
            self._pending.append((last_offset, nodes))
            self._arm()

    # -- standbys ----------------------------------------------------------------

    def register(self, identity: str, *, acked: int) -> Standby:
        """A standby's Follow stream started with its store at `acked` (0 while it still needs a copy)."""
        self._loop = asyncio.get_running_loop()
        old = self._standbys.get(identity)
        standby = Standby(identity, acked=acked, now=self._clock())
        self._standbys[identity] = standby
        if old is not None and old.in_sync:
            self._moved()
        self._maybe_join(standby)
        return standby

    def sent(self, standby: Standby, last_offset: int, *, head: int) -> None:
        """Records through last_offset went to the standby while the head was `head`."""
        if last_offset >= head:
            standby.current_through = last_offset

    def acknowledged(self, standby: Standby, offset: int) -> None:
        """The standby's store committed every record through `offset`."""
        if self._standbys.get(standby.identity) is not standby or offset <= standby.acked:
            return
        standby.acked = offset
        standby.since = self._clock()
        if standby.in_sync:
            self._moved()
        else:
            self._maybe_join(standby)
        self._arm()

    def leave(self, standby: Standby) -> None:
        """The standby's stream ended (a newer stream of the same identity may have replaced it)."""
        if self._standbys.get(standby.identity) is not standby:
            return
        del self._standbys[standby.identity]
        if standby.in_sync:
            logger.info("standby {} left the in-sync set (disconnected at {})", standby.identity, standby.acked)
            self._moved()

    def _maybe_join(self, standby: Standby) -> None:
        if standby.in_sync:
            return
        caught_up = 0 < standby.current_through <= standby.acked
        if caught_up or standby.acked >= self._store.head_offset:
            standby.in_sync = True
            standby.since = self._clock()
            logger.info("standby {} is in sync at offset {}: agents are served through what it holds",
                        standby.identity, standby.acked)

    def _moved(self) -> None:
        """The mark may have moved: wake the agent streams of nodes whose events became visible."""
        visible = self.visible()
        woken: set[str] = set()
        while self._pending and self._pending[0][0] <= visible:
            woken |= self._pending.popleft()[1]
        if self._pending:  # partly visible: its first events may be through the mark
            woken |= self._pending[0][1]
        if woken:
            self._notifier.notify(woken)

    def _arm(self) -> None:
        """Schedule the next standby-timeout check for the earliest in-sync standby that is behind."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        head = max(self._last_head, self._store.head_offset)
        due = [s.since + self.standby_timeout for s in self._standbys.values() if s.in_sync and s.acked < head]
        if due and self._loop is not None:
            self._timer = self._loop.call_later(max(0.0, min(due) - self._clock()), self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self._clock()
        head = max(self._last_head, self._store.head_offset)
        dropped = False
        for s in self._standbys.values():
            if s.in_sync and s.acked < head and now - s.since >= self.standby_timeout:
                s.in_sync = False
                self.timeouts += 1
                dropped = True
                logger.warning(
                    "standby {} acknowledged nothing for {:g}s while behind (at {}, head {}): agents no longer wait "
                    "for it until it catches up", s.identity, self.standby_timeout, s.acked, head,
                )
        if dropped:
            self._moved()
        self._arm()

    # -- Follow streams and metrics ----------------------------------------------

    def subscribe(self, event: asyncio.Event) -> None:
        """Set `event` on every append (a Follow stream's wakeup)."""
        self._loop = asyncio.get_running_loop()
        self._followers.add(event)

    def unsubscribe(self, event: asyncio.Event) -> None:
        """Stop waking `event`; safe to call twice."""
        self._followers.discard(event)

    @property
    def standbys_in_sync(self) -> int:
        """Standbys whose acknowledgements hold agents back (k8s_edge_manager_standbys_in_sync)."""
        return sum(1 for s in tuple(self._standbys.values()) if s.in_sync)  # tuple(): read by the metrics thread

    def lag(self) -> dict[str, int]:
        """Events each connected standby lacks, by identity (k8s_edge_manager_replication_lag_events)."""
        head = self._store.head_offset
        return {s.identity: max(0, head - s.acked) for s in tuple(self._standbys.values())}

    def reset(self) -> None:
        """Start a new leadership term (on the loop thread): no standbys, the mark at the store's head.

        A manager that led, stepped down (its log perhaps replaced by a copy of the new leader's,
        shorter) and leads again must not keep the old mark: it could be beyond the new head.
        """
        self.close()
        self._standbys.clear()
        self._pending.clear()
        self._last_head = self._store.head_offset
        self._floor = 0

    def close(self) -> None:
        """Cancel the timeout check (the server stopped)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# -- a Follow stream ------------------------------------------------------------


class CopyReason(enum.Enum):
    """Why a standby gets a copy of the store instead of resuming."""

    UNKNOWN_LOG_ID = "unknown log_id"
    EMPTY_STORE = "empty store"
    BEYOND_HEAD = "beyond the leader's head"
    COMPACTED = "compacted"
    DIVERGED = "diverged"


def copy_reason(store: LogStore, *, log_id: str, head_offset: int, head_hash: int) -> tuple[CopyReason, str] | None:
    """Why a standby whose store is at (log_id, head_offset, head_hash) cannot resume; None when it can."""
    if log_id != store.log_id:
        if not log_id:
            return CopyReason.EMPTY_STORE, "empty store"
        return CopyReason.UNKNOWN_LOG_ID, f"unknown log_id {log_id[:MAX_LOG_ID_CHARS]}"
    info = store.info()
    if head_offset > info.head_offset:
        return CopyReason.BEYOND_HEAD, f"head {head_offset} is beyond the leader's head {info.head_offset}"
    if head_offset < info.first_offset - 1:
        return CopyReason.COMPACTED, (f"offsets after {head_offset} were compacted "
                                      f"(the log starts at {info.first_offset})")
    expected = store.record_hash(head_offset)
    if expected is None:  # compacted between the two reads
        return CopyReason.COMPACTED, f"offset {head_offset} was compacted"
    if expected != head_hash:
        return CopyReason.DIVERGED, f"the record at offset {head_offset} differs from the leader's (diverged)"
    return None


def identity_problem(identity: str) -> str | None:
    """Why `identity` is not a usable standby identity; None when it is."""
    if not identity:
        return "empty identity"
    if len(identity) > MAX_IDENTITY_CHARS or not _IDENTITY.fullmatch(identity):
        return (f"invalid identity {identity[:80]!r}: at most {MAX_IDENTITY_CHARS} of letters, digits and ._:-, "
                "starting with a letter or digit")
    return None


class FollowSession:
    """The leader's half of one standby's Follow stream, from FollowHello to disconnect."""

    def __init__(
        self, *, store: LogStore, mark: HighWaterMark, settings: SyncSettings, follow: FollowSettings,
        checks_peers: bool, table: StreamTable, leadership: Leadership | None = None,
    ) -> None:
        self.store = store
        self.mark = mark
        self.settings = settings
        self.follow = follow
        self.checks_peers = checks_peers  # client certificates are required: the peer must be a manager's
        self.table = table
        self.leadership = leadership
        self.identity = ""
        self.standby: Standby | None = None
        self._wake = asyncio.Event()
        self._error: StreamError | None = None
        self._ended = False
        self._replaced = False
        self._sent = 0  # newest offset sent (a record, or the copy's head)
        self._acked = 0
        self._last_sent = time.monotonic()
        self._trailing: tuple[tuple[str, str], ...] = ()

    async def run(self, requests: AsyncIterator[object], context: grpc.aio.ServicerContext
                  ) -> AsyncIterator[pb.LeaderMessage]:
        """Serve the stream: yields every message the leader sends."""
        try:
            hello = await self._hello(requests, context)
        except StreamError as exc:
            host = context.peer().rpartition(":")[0]
            self.table.log_refusal(f"follow stream from {host} refused ({exc.code.name}): {exc.details}")
            await context.abort(exc.code, exc.details)
            return
        if not self.table.claim(hello.identity, self, peer=context.peer()):
            details = f"standby {hello.identity} has {self.table.max_per_node} follow streams open that have not ended"
            self.table.log_refusal(f"follow stream refused (RESOURCE_EXHAUSTED): {details}")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, details)
            return
        self.identity = hello.identity
        self.mark.subscribe(self._wake)
        reader = asyncio.create_task(self._read(requests), name=f"follow-read-{self.identity}")
        scratch = _Scratch()  # a copy in progress, removed whatever happens
        try:
            try:
                async for message in self._serve(hello, context, scratch):
                    yield message
                    self._last_sent = time.monotonic()
            except StreamError as exc:
                self._error = exc
            if self._error is not None:
                quiet = self._replaced or self._error.code is grpc.StatusCode.UNAVAILABLE  # expected endings
                (logger.info if quiet else logger.warning)("standby {}: {}", self.identity, self._error.details)
                await context.abort(self._error.code, self._error.details, trailing_metadata=self._trailing)
        finally:
            reader.cancel()
            scratch.remove()
            self.mark.unsubscribe(self._wake)
            if self.standby is not None:
                self.mark.leave(self.standby)
            self.table.release(self.identity, self)
            self.table.finish(self.identity)
            logger.info("standby {} disconnected (acknowledged {})", self.identity, self._acked)

    def replace(self, *, by_peer: str) -> None:
        """A newer Follow stream of the same standby took over."""
        if self._replaced:
            return
        self._replaced = True
        if self.standby is not None:
            self.mark.leave(self.standby)
        self._error = StreamError(grpc.StatusCode.ABORTED,
                                  f"replaced by a newer follow stream of standby {self.identity} from {by_peer}")
        self._wake.set()

    def refuse(self, *, why: str) -> None:
        """End this stream now with PERMISSION_DENIED."""
        if self._error is None:
            self._error = StreamError(grpc.StatusCode.PERMISSION_DENIED, why)
        self._wake.set()

    async def _hello(self, requests: AsyncIterator[object], context: grpc.aio.ServicerContext) -> pb.FollowHello:
        """Read and check the opening FollowHello (a peer is trusted no more than an agent)."""
        try:
            first = await asyncio.wait_for(anext(requests), HELLO_TIMEOUT_SECONDS)
        except StopAsyncIteration:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "stream closed before FollowHello") from None
        except TimeoutError:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"no FollowHello within {HELLO_TIMEOUT_SECONDS:g}s") from None
        if not isinstance(first, pb.StandbyMessage):
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "undecodable message")
        if first.WhichOneof("kind") != "hello":
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be a FollowHello")
        hello = first.hello
        problem = identity_problem(hello.identity)
        if problem is not None:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if len(hello.log_id) > MAX_LOG_ID_CHARS:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"log_id of {len(hello.log_id)} characters (at most {MAX_LOG_ID_CHARS})")
        if self.checks_peers:
            auth = context.auth_context()
            verdict = certificate_peer(auth)
            if verdict.identity is None:
                raise StreamError(grpc.StatusCode.PERMISSION_DENIED,
                                  f"{verdict.problem}; standby {hello.identity} refused")
            if verdict.identity != hello.identity:
                raise StreamError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the client certificate {describe(auth)} names manager {verdict.identity}, not {hello.identity}",
                )
        if hello.record_format != RECORD_FORMAT:
            raise StreamError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"record format {hello.record_format} is not supported (this manager speaks {RECORD_FORMAT})",
            )
        return hello

    def _leading(self) -> bool:
        """Whether to go on; when this manager no longer leads, the stream ends with the leader's address."""
        if self.leadership is None or self.leadership.leading():
            return True
        details, self._trailing = not_the_leader(self.leadership)
        self._error = StreamError(grpc.StatusCode.UNAVAILABLE, details)
        return False

    async def _serve(self, hello: pb.FollowHello, context: grpc.aio.ServicerContext,
                     scratch: _Scratch) -> AsyncIterator[pb.LeaderMessage]:
        """Welcome, then a copy or nothing, then records and heartbeats until an error or the standby leaves."""
        why = copy_reason(self.store, log_id=hello.log_id, head_offset=hello.head_offset, head_hash=hello.head_hash)
        welcome = pb.FollowWelcome(
            log_id=self.store.log_id, head_offset=self.store.head_offset, record_format=RECORD_FORMAT,
            heartbeat_seconds=max(1, math.ceil(self.settings.heartbeat_seconds)),
        )
        if why is None:
            welcome.mode = pb.FollowWelcome.RESUME
            self._sent = self._acked = hello.head_offset
            self.standby = self.mark.register(self.identity, acked=hello.head_offset)
            logger.info("standby {} follows from {}: resume after {} (head {})",
                        self.identity, context.peer(), self._sent, welcome.head_offset)
            yield pb.LeaderMessage(welcome=welcome)
        else:
            reason, text = why
            welcome.mode = pb.FollowWelcome.COPY
            welcome.reason = text
            self.standby = self.mark.register(self.identity, acked=0)  # not in sync until its acks reach the head
            logger.info("standby {} follows from {}: copy of the store ({})", self.identity, context.peer(), text)
            yield pb.LeaderMessage(welcome=welcome)
            async for message in self._copy(scratch):
                yield message
        while True:
            if self._error is not None or self._ended or not self._leading():
                return
            self._wake.clear()  # cleared before reading: an append from now on wakes the wait below
            room = self.follow.window_records - (self._sent - self._acked)
            if room > 0:
                batch = self._next_records(min(room, self.follow.batch_records))
                if batch is not None:
                    yield batch
                    continue
            wait = self._last_sent + self.settings.heartbeat_seconds - time.monotonic()
            if wait > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                    continue
                except TimeoutError:
                    pass
            yield pb.LeaderMessage(heartbeat=pb.Heartbeat(head_offset=self.store.head_offset,
                                                          time_unix_ms=time.time_ns() // 1_000_000))

    def _next_records(self, limit: int) -> pb.LeaderMessage | None:
        """The next LogRecords after what was sent, or None when the standby has everything."""
        records: list[bytes] = []
        size = 0
        with self.store.reader() as r:
            head = r.head_offset()
            if self._sent >= head:
                return None
            first = r.first_offset()
            if self._sent + 1 < first:
                raise StreamError(
                    grpc.StatusCode.ABORTED,
                    f"records after {self._sent} were compacted (the log starts at {first}); reconnect for a copy",
                )
            for key, raw in r.records(after=self._sent):
                if len(records) >= limit or (records and size + len(raw) + _FIELD_OVERHEAD > self.follow.batch_bytes):
                    break
                if from_u64(key) != self._sent + 1 + len(records):  # the log has no gaps: a broken store
                    raise StreamError(grpc.StatusCode.INTERNAL, f"the log has a gap before offset {from_u64(key)}")
                records.append(bytes(raw))
                size += len(raw) + _FIELD_OVERHEAD
        if not records:
            return None
        self._sent = event_offset(records[-1])
        if self.standby is not None:
            self.mark.sent(self.standby, self._sent, head=head)
        return pb.LeaderMessage(records=pb.LogRecords(records=records, head_offset=head))

    async def _copy(self, scratch: _Scratch) -> AsyncIterator[pb.LeaderMessage]:
        """A compacted copy of the store as StoreChunks, made in a temp dir beside the store and removed after."""
        scratch.path = Path(tempfile.mkdtemp(prefix=".follow-copy-", dir=Path(self.store.path).parent))
        dest = scratch.path / "store"
        scratch.copying = asyncio.ensure_future(asyncio.to_thread(self.store.copy_to, dest))
        info = await asyncio.shield(scratch.copying)  # a cancelled stream leaves the thread to finish, then removes
        data = dest / "data.mdb"
        total = data.stat().st_size
        logger.info("standby {}: sending a copy of the store ({} bytes, head {})",
                    self.identity, total, info.head_offset)
        sent = 0
        with data.open("rb") as f:
            while True:
                if self._error is not None or not self._leading():
                    return
                chunk = await asyncio.to_thread(f.read, self.follow.chunk_bytes)
                sent += len(chunk)
                if sent >= total:
                    self._sent = info.head_offset
                    if self.standby is not None:
                        self.mark.sent(self.standby, info.head_offset, head=self.store.head_offset)
                    yield pb.LeaderMessage(store=pb.StoreChunk(data=chunk, last=True, head_offset=info.head_offset,
                                                               size=total))
                    break
                if not chunk:
                    raise StreamError(grpc.StatusCode.INTERNAL, f"the store copy ended at {sent} of {total} bytes")
                yield pb.LeaderMessage(store=pb.StoreChunk(data=chunk))
        scratch.remove()

    # -- what the standby sends --------------------------------------------------

    async def _read(self, requests: AsyncIterator[object]) -> None:
        """Consume acks until the standby half-closes or breaks the protocol."""
        try:
            async for message in requests:
                self._receive(message)
            self._ended = True
        except StreamError as exc:
            self._error = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the call failed underneath us; the serving side sees it too
            logger.debug("standby {}: read failed: {}", self.identity, exc)
            self._ended = True
        finally:
            self._wake.set()

    def _receive(self, message: object) -> None:
        """Handle one standby message after the FollowHello."""
        if not isinstance(message, pb.StandbyMessage):
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "undecodable message")
        kind = message.WhichOneof("kind")
        if kind == "ack":
            offset = message.ack.head_offset
            if offset < self._acked or offset > self._sent:
                raise StreamError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"out-of-order ack {offset}: previous ack {self._acked}, newest offset sent {self._sent}",
                )
            self._acked = offset
            if self.standby is not None and not self._replaced:
                self.mark.acknowledged(self.standby, offset)
            self._wake.set()
        elif kind == "hello":
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "a second FollowHello on the same stream")
        else:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "an empty message")


class _Scratch:
    """The temp dir of one store copy, and the thread writing it."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.copying: asyncio.Future[StoreInfo] | None = None

    def remove(self) -> None:
        """Remove the dir now, or when the thread still writing it finishes (a cancelled stream)."""
        path, copying = self.path, self.copying
        self.path = self.copying = None
        if path is None:
            return
        if copying is not None and not copying.done():
            copying.add_done_callback(lambda _: shutil.rmtree(path, ignore_errors=True))
            return
        if copying is not None and not copying.cancelled():
            copying.exception()  # retrieved, so a failed copy logs no "never retrieved"
        shutil.rmtree(path, ignore_errors=True)

