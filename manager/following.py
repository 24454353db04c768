"""The standby side of replication: follow the leader's log over the Follow RPC (docs/ha.md).

Owns a standby's connection to the leader: the FollowHello with its head and head hash,
records applied with `LogStore.append_records` and acknowledged only after their commit, a
COPY of the leader's store streamed to disk (never held in memory), checked and installed
crash-safe, reconnects with backoff, and moving at once to the leader a non-leader names.
While `run()` runs, the store is written (and maybe replaced) only here. Must not import
kubernetes or the agent package.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

import grpc
import lmdb
from loguru import logger

from edgecommon.backoff import Backoff, ErrorStreak
from edgecommon.keepalive import SILENT_HEARTBEATS, ChannelOptions, keepalive_options
from eventlog import RECORD_FORMAT, LogStore, OffsetOutOfRangeError, StoreError
from eventlog.errors import DivergedError
from eventlog.installing import install_store, recover_store_dir
from manager.sync_session import LEADER_METADATA_KEY, NOT_THE_LEADER
from proto import sync_pb2 as pb
from proto import sync_pb2_grpc as pb_grpc

T = TypeVar("T")

INCOMING_SUFFIX = ".incoming"
"""A copy being received lives beside the store, in `<store_dir>.incoming`, until it is installed."""
COPY_FILE = "data.mdb"
"""The StoreChunks are the bytes of this one file of the leader's compacted copy (LMDB's data file)."""
MAX_RECEIVE_BYTES = 64 << 20  # one record may carry a ~1.5 MiB EdgeNode's pod; batches and chunks stay near 1 MiB
STABLE_STREAM_SECONDS = 30.0  # a stream up this long counts as progress, even with nothing to apply
COPY_SILENCE_SECONDS = 120.0  # the leader sends nothing while it copies its store; keepalive still finds a dead one
MAX_HOPS = 3  # "not the leader" redirects followed at once before backing off (two managers naming each other)


class StreamDead(Exception):
    """The stream broke the protocol, fell silent or carried what this store cannot take; reconnect."""


class HelloLost(StreamDead):
    """The call ended while the Hello was being written, and gRPC kept only INTERNAL, not the status that ended it.

    A manager that ends the call before reading the Hello (a server stopping; refusals did so
    before they read the Hello first) races it; a retry at once gets the real answer.
    """


class CopyRefused(StreamDead):
    """A received copy is not what the leader announced; it is deleted and the old store kept."""


def channel_options() -> ChannelOptions:
    """Channel arguments: the shared keepalive, room for a batch, our own retries (one channel per attempt)."""
    return [
        *keepalive_options(),
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ("grpc.enable_retries", 0),
    ]


def incoming_dir(store_dir: Path) -> Path:
    """Where a copy of the leader's store is received: beside the store, on the same file system."""
    return store_dir.with_name(store_dir.name + INCOMING_SUFFIX)


def leader_hint(exc: grpc.aio.AioRpcError) -> str | None:
    """The leader's address when `exc` is a non-leader's answer (None: not such an answer, or no leader known)."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE or not (exc.details() or "").startswith(NOT_THE_LEADER):
        return None
    for key, value in exc.trailing_metadata() or ():
        if key == LEADER_METADATA_KEY:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            return text.strip() or None
    return None


def is_not_leader(exc: BaseException) -> bool:
    """Whether `exc` is a non-leader's UNAVAILABLE (with or without a hint)."""
    return (isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE
            and (exc.details() or "").startswith(NOT_THE_LEADER))


async def _finish(work: Awaitable[T]) -> T:
    """Await `work` to its end even if cancelled meanwhile (a commit or an install half seen is worse), then re-raise.

    asyncio.wait never cancels what it waits for, and a second cancel is absorbed too.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled() and task.exception() is not None:
            logger.warning("follow: a store write failed while stopping: {}", task.exception())
        raise asyncio.CancelledError
    return task.result()


async def _cancel(task: asyncio.Future[None]) -> None:
    """Cancel `task` and wait for its end; cancelled again each second (grpc and wait_for may swallow one)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled():
        task.exception()  # retrieved: the stop is why it ended


class _Incoming:
    """A copy of the leader's store as it arrives: chunks appended to one file, nothing kept in memory."""

    def __init__(self, directory: Path, *, max_bytes: int | None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.received = 0
        shutil.rmtree(directory, ignore_errors=True)  # a leftover of an interrupted copy
        directory.mkdir(mode=0o700, parents=True)
        fd = os.open(directory / COPY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        """Append one chunk; CopyRefused beyond max_bytes (a copy larger than this standby accepts)."""
        self.received += len(data)
        if self.max_bytes is not None and self.received > self.max_bytes:
            raise CopyRefused(f"the leader's copy exceeds {self.max_bytes} bytes, the most this standby accepts")
        self._file.write(data)

    def finish(self, *, size: int) -> None:
        """Check the size announced on the last chunk and make the file durable."""
        if self.received != size:
            raise CopyRefused(f"the leader's copy carried {self.received} bytes, not the {size} it announced")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Delete what was received (the old store stays as it was)."""
        with suppress(OSError):
            self._file.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class Follower:
    """Keeps a standby's store identical to the leader's log: same log_id, offsets and record bytes.

    The caller opens the store after `eventlog.installing.recover_store_dir(store_dir)` (a copy
    half installed when the process died) and leaves it alone until `run()` returns it: a copy
    closes it and opens a new one. A Hello with no log_id asks for a copy: an empty store, or one
    the leader's records did not fit (a gap, or a change its view had already seen).
    """

    def __init__(
        self,
        store_dir: Path,
        store: LogStore,
        *,
        identity: str,
        leader_address: Callable[[], str | None],
        channel: Callable[[str], grpc.aio.Channel],
        open_store: Callable[[Path], LogStore] = LogStore,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        connect_timeout: float = 5.0,
        max_copy_bytes: int | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.store = store
        self.identity = identity
        self.leader_address = leader_address
        self._channel = channel
        self._open_store = open_store  # reopens the store after a copy (the daemon's map size options)
        self.connect_timeout = connect_timeout
        self.max_copy_bytes = max_copy_bytes
        self.backoff = Backoff(initial=backoff_initial, maximum=backoff_max)
        self.streak = ErrorStreak()  # failed tries since the last progress: one log line per distinct error
        self._hint: str | None = None  # where the last non-leader said the leader is
        self._hops = 0  # redirects followed at once since the last progress
        self._want_copy = False  # the leader's records did not fit this store: ask for a copy next time
        self._welcomed_at: float | None = None
        self._head = 0
        self._announced_leader = ""  # the leader last named in an INFO line
        # read by metrics and tests
        self.connected = False
        self.address = ""  # the leader address of the current or last stream
        self.leader_head = 0  # the leader's head as last seen (Welcome, records, heartbeats)
        self.last_error = ""
        self.copies = 0  # copies of the leader's store installed
        self.records_applied = 0
        self.reconnects = 0
        self.redirects = 0

    @property
    def head_offset(self) -> int:
        """The newest offset this store has committed (known without reading the store)."""
        return self._head

    @property
    def lag(self) -> int:
        """Records the leader had beyond this store, as last seen."""
        return max(0, self.leader_head - self._head)

    # -- the loop ------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> LogStore:
        """Follow the leader until `stop` is set; return the store, open (a new one after a copy)."""
        self._head = await asyncio.to_thread(lambda: self.store.head_offset)
        await asyncio.to_thread(shutil.rmtree, incoming_dir(self.store_dir), ignore_errors=True)  # a crash's leftover
        stopping = asyncio.ensure_future(stop.wait())
        session: asyncio.Future[None] | None = None
        try:
            while not stop.is_set():
                address = self._hint or self.leader_address()
                self._hint = None
                if not address:  # an election under way, or the leader has not said where it serves yet
                    self.last_error = "no leader known"
                    await self._pause(stop, "follow: waiting", level="INFO")
                    continue
                session = asyncio.ensure_future(self._session(address))
                await asyncio.wait({session, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not session.done():
                    await _cancel(session)
                    break
                level = self._outcome(session, address)
                if level is None:  # a non-leader named the leader: go there at once
                    continue
                await self._pause(stop, f"follow {address} ended", level=level)
        finally:
            stopping.cancel()
            if session is not None and not session.done():  # run() itself cancelled: the store must be whole
                await _cancel(session)
            self.connected = False
            # a copy cut off by the stop (even while its directory was being made) is not kept
            await asyncio.to_thread(shutil.rmtree, incoming_dir(self.store_dir), ignore_errors=True)
        return self.store

    def _outcome(self, session: asyncio.Future[None], address: str) -> str | None:
        """Why the session ended, in last_error; the log level, or None to follow a leader hint at once."""
        self.connected = False
        if self._welcomed_at is not None and time.monotonic() - self._welcomed_at >= STABLE_STREAM_SECONDS:
            self._progressed()  # a long healthy stream: the failure that ended it is news, not a repeat
        self._welcomed_at = None
        exc = session.exception()
        level = "WARNING"
        if isinstance(exc, HelloLost) and self._hops < MAX_HOPS:
            self._hops += 1
            self._hint = address  # the same manager again, at once: its answer was lost, not refused
            logger.debug("follow {}: {}; trying again at once", address, exc)
            return None
        if exc is None:
            self.last_error = "stream ended by the leader"
        elif isinstance(exc, grpc.aio.AioRpcError):
            hint = leader_hint(exc)
            if hint is not None and hint != address and self._hops < MAX_HOPS:
                self._hops += 1
                self.redirects += 1
                self._hint = hint
                if hint != self._announced_leader:
                    self._announced_leader = hint
                    logger.info("follow: {} is not the leader; following the leader at {}", address, hint)
                return None
            self.last_error = f"{exc.code().name}: {exc.details()}"
            if is_not_leader(exc):
                level = "INFO"  # an election under way: expected, not a fault
        elif isinstance(exc, (StreamDead, StoreError, TimeoutError, OSError)):
            self.last_error = str(exc) or type(exc).__name__
        elif isinstance(exc, lmdb.Error):  # a full or failing disk: nothing was committed, the store is intact
            why = " ".join(str(exc).split())
            self.last_error = f"the store could not commit: {why} (a full or failing disk?)"
            level = "ERROR"
        else:
            why = " ".join(str(exc).split())
            self.last_error = f"follow stream failed unexpectedly: {type(exc).__name__}: {why}"
            level = "ERROR"
        return level

    async def _pause(self, stop: asyncio.Event, what: str, *, level: str) -> None:
        """Log the failure (once per distinct error) and wait the backoff delay, or less if stopped.

        `what` starts the line ("follow <address> ended"); the reason is last_error.
        """
        self.reconnects += 1
        delay = self.backoff.next()
        new, previous_repeats = self.streak.failed(self.last_error)
        if previous_repeats:
            logger.warning("follow: the previous error repeated {} more time(s)", previous_repeats)
        if new:
            logger.log(level, "{}: {}; retrying in {:.1f}s (backing off up to {:g}s until progress; repeats of this "
                       "error are not logged)", what, self.last_error, delay, self.backoff.maximum)
        else:
            logger.debug("{} again: {}; retrying in {:.1f}s", what, self.last_error, delay)
        with suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()

    def _progressed(self) -> None:
        """A commit or an install (or a long healthy stream): reconnect quickly next time; say a failure cleared."""
        self.backoff.reset()
        self._hops = 0
        failures, error, repeats = self.streak.cleared()
        if failures:
            logger.info("follow {} works again after {} failed attempt(s); the last error, {} time(s): {}",
                        self.address, failures, repeats + 1, error)

    # -- one stream ------------------------------------------------------------

    async def _session(self, address: str) -> None:
        """One Follow stream: returns when the leader ends it cleanly, raises on errors."""
        self.address = address
        channel = self._channel(address)
        try:
            call = pb_grpc.SyncStub(channel).Follow()
            try:
                await self._exchange(call)
            finally:
                call.cancel()
        finally:
            await channel.close()

    def _position(self) -> pb.FollowHello:
        """Worker thread: the Hello of this store (an empty store, or one that must be replaced, asks for a copy)."""
        head = self._head = self.store.head_offset
        if head == 0 or self._want_copy:
            return pb.FollowHello(identity=self.identity, record_format=RECORD_FORMAT)
        head_hash = self.store.record_hash(head)
        return pb.FollowHello(identity=self.identity, log_id=self.store.log_id, head_offset=head,
                              head_hash=head_hash or 0, record_format=RECORD_FORMAT)

    async def _write(self, call: grpc.aio.StreamStreamCall, message: pb.StandbyMessage) -> None:
        try:
            await call.write(message)
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError) as exc:
            raise await self._ended(call, exc) from None

    async def _ended(self, call: grpc.aio.StreamStreamCall, exc: BaseException) -> BaseException:
        """What ended the call by its final status: a write that lost the race with the end says less."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                code = await call.code()
            if code == grpc.StatusCode.OK:
                return StreamDead("the leader ended the stream")
            return grpc.aio.AioRpcError(code, await call.initial_metadata(), await call.trailing_metadata(),
                                        await call.details())
        except Exception:  # noqa: BLE001 (not ended, or no better account of it: the write's own error)
            return exc

    async def _ack(self, call: grpc.aio.StreamStreamCall) -> None:
        await self._write(call, pb.StandbyMessage(ack=pb.FollowAck(head_offset=self._head)))

    async def _exchange(self, call: grpc.aio.StreamStreamCall) -> None:
        """Hello, then take what the leader sends until the stream ends."""
        hello = await asyncio.to_thread(self._position)
        try:  # an unreachable or black-holed leader: no answer within connect_timeout
            async with asyncio.timeout(self.connect_timeout):
                await self._write(call, pb.StandbyMessage(hello=hello))
        except TimeoutError:
            raise TimeoutError(f"no connection within {self.connect_timeout:g}s") from None
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INTERNAL:
                raise HelloLost(f"the call ended while the Hello was sent ({exc.details()})") from None
            raise
        silence = self.connect_timeout  # until the Welcome names the heartbeat interval
        welcome: pb.FollowWelcome | None = None
        synced = False  # RESUME, or the copy installed: records may be applied
        incoming: _Incoming | None = None
        try:
            while True:
                wait = silence if incoming is None else max(silence, COPY_SILENCE_SECONDS)
                try:
                    async with asyncio.timeout(wait):  # not wait_for: on 3.11 it may swallow the stop's cancel
                        message = await call.read()
                except TimeoutError:
                    what = "no Welcome" if welcome is None else "nothing from the leader"
                    raise StreamDead(f"{what} for {wait:g}s") from None
                if message is grpc.aio.EOF:
                    return
                kind = message.WhichOneof("kind")
                if kind == "welcome":
                    if welcome is not None:
                        raise StreamDead("a second Welcome on the same stream")
                    welcome = message.welcome
                    silence = max(1, welcome.heartbeat_seconds) * SILENT_HEARTBEATS
                    incoming = await self._welcomed(welcome, hello)
                    synced = incoming is None
                    continue
                if welcome is None:
                    raise StreamDead(f"expected a Welcome, got {kind}")
                if kind == "records":
                    if not synced:
                        raise StreamDead("records before the copy was complete")
                    self.leader_head = max(self.leader_head, message.records.head_offset)
                    await self._apply(call, list(message.records.records))
                elif kind == "store":
                    if incoming is None:
                        raise StreamDead("a store chunk outside a copy")
                    chunk = message.store
                    await asyncio.to_thread(incoming.write, chunk.data)
                    if chunk.last:
                        await self._install(incoming, welcome, chunk)
                        incoming = None
                        synced = True
                        await self._ack(call)
                elif kind == "heartbeat":
                    self.leader_head = message.heartbeat.head_offset
                    if synced:  # proof of life for the leader, which holds agents back for a silent standby
                        await self._ack(call)
                else:
                    raise StreamDead(f"unknown message {kind}")
        finally:
            if incoming is not None:
                await asyncio.to_thread(incoming.discard)

    async def _welcomed(self, welcome: pb.FollowWelcome, hello: pb.FollowHello) -> _Incoming | None:
        """Check the Welcome; for a COPY, where its chunks go."""
        if welcome.record_format != RECORD_FORMAT:
            raise StreamDead(f"the leader speaks record format {welcome.record_format}, not {RECORD_FORMAT}")
        self.leader_head = welcome.head_offset
        self.connected = True
        self._welcomed_at = time.monotonic()
        # no backoff reset here: only progress resets it; while failing, Welcomes are not news
        log = logger.debug if self.streak.failures else logger.info
        if welcome.mode == pb.FollowWelcome.RESUME:
            if not hello.log_id or welcome.log_id != hello.log_id:
                raise StreamDead(f"the leader resumes log {welcome.log_id!r}, but this store holds "
                                 f"{hello.log_id or 'nothing'!r}")
            log("follow: following {}: resuming log {} after {} (leader head {})", self.address, welcome.log_id,
                hello.head_offset, welcome.head_offset)
            return None
        if welcome.mode != pb.FollowWelcome.COPY:
            raise StreamDead(f"unknown Welcome mode {welcome.mode}")
        logger.info("follow: following {}: copying the leader's store of log {} (head {}): {}", self.address,
                    welcome.log_id, welcome.head_offset, welcome.reason or "no reason given")
        return await asyncio.to_thread(_Incoming, incoming_dir(self.store_dir), max_bytes=self.max_copy_bytes)

    async def _apply(self, call: grpc.aio.StreamStreamCall, records: list[bytes]) -> None:
        """Append the records in one transaction, then acknowledge them."""
        if not records:
            return
        try:
            head = await _finish(asyncio.to_thread(self._append, records))
        except (OffsetOutOfRangeError, DivergedError) as exc:
            self._want_copy = True  # a RESUME cannot mend this store: the next Hello asks for a copy
            raise StreamDead(f"the leader's records do not fit this store ({exc}); asking for a copy") from None
        self._head = head
        self.records_applied += len(records)
        self._progressed()
        await self._ack(call)

    def _append(self, records: list[bytes]) -> int:
        """Worker thread: one transaction, then the new head."""
        self.store.append_records(records)
        return self.store.head_offset

    async def _install(self, incoming: _Incoming, welcome: pb.FollowWelcome, last: pb.StoreChunk) -> None:
        """Check the received copy, then replace the store by it (crash-safe) and reopen it."""
        await asyncio.to_thread(incoming.finish, size=last.size)
        await asyncio.to_thread(_check_copy, incoming.directory, log_id=welcome.log_id, head=last.head_offset)
        head = await _finish(asyncio.to_thread(self._replace_store, incoming.directory))
        self._head = head
        self._want_copy = False
        self.copies += 1
        self._progressed()
        logger.info("follow: installed the leader's store of log {} at head {} ({} bytes)", welcome.log_id, head,
                    incoming.received)

    def _replace_store(self, received: Path) -> int:
        """Worker thread: close the store, install the copy, reopen; on failure, the old store reopened whole."""
        self.store.close()
        try:
            install_store(received, self.store_dir)
        except BaseException:
            recover_store_dir(self.store_dir)  # finish or undo the rename dance before anything opens the dir
            self.store = self._open_store(self.store_dir)
            raise
        self.store = self._open_store(self.store_dir)
        return self.store.head_offset


def _check_copy(directory: Path, *, log_id: str, head: int) -> None:
    """Worker thread: the received copy opens as a manager store of `log_id` whose head is `head`."""
    try:
        copy = LogStore(directory, readonly=True)
    except (StoreError, lmdb.Error) as exc:
        raise CopyRefused(f"the leader's copy is not a store: {' '.join(str(exc).split())}") from None
    try:
        if copy.log_id != log_id:
            raise CopyRefused(f"the leader's copy holds log {copy.log_id!r}, not the {log_id!r} it announced")
        if copy.head_offset != head:
            raise CopyRefused(f"the leader's copy ends at {copy.head_offset}, not at the {head} it announced")
    finally:
        copy.close()
