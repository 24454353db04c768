"""The agent's half of the sync protocol: Hello, apply batches and snapshots, acknowledge, reconnect.

Owns the connection to the manager, the order apply -> after_apply -> Ack of
docs/sync-protocol.md, and finding the leader among several managers (one that does not
lead answers UNAVAILABLE "not the leader" and names the leader: docs/ha.md). The replica
(eventlog.ReplicaStore) is written only here, through its own transactions run in a
worker thread. Must not import the manager package or kubernetes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
import lmdb
from loguru import logger

from edgecommon.backoff import Backoff, ErrorStreak
from edgecommon.keepalive import SILENT_HEARTBEATS, ChannelOptions, keepalive_options
from edgecommon.tls import ReloadingFiles
from eventlog import (
    RECORD_FORMAT,
    ApplyResult,
    ReplicaStore,
    Snapshot,
    StoreError,
    decode_entry,
    format_digest,
)
from proto import sync_pb2 as pb
from proto import sync_pb2_grpc as pb_grpc

AGENT_VERSION = "k8s-edge-agent/0.1.0"
RECONCILE_DEFERRAL_SECONDS = 5.0  # while catching up, the manifest files lag the replica at most this long
STABLE_STREAM_SECONDS = 30.0  # a stream up this long counts as progress, even with nothing to apply
MAX_RECEIVE_BYTES = 64 << 20  # one event may carry a ~1.5 MiB EdgeNode's pod; batches stay near 1 MiB
NOT_THE_LEADER = "not the leader"  # how the details of a standby manager's UNAVAILABLE begin (proto/sync.proto)
LEADER_METADATA_KEY = "k8s-edge-leader"  # the trailing metadata naming the leader's sync address
# A manager said "not the leader" since the last progress: an election is on or just ended (docs/ha.md), so
# retry within this (jittered) instead of backing off to the 30 s ceiling, and be there soon after a takeover
ELECTION_RETRY_MAX_SECONDS = 4.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTls:
    """CA that signed the manager's certificate; with cert and key, the agent's own identity (mTLS)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def paths(self) -> list[Path]:
        """The files given, CA first."""
        return [p for p in (self.ca_file, self.cert_file, self.key_file) if p is not None]


@dataclass(frozen=True, slots=True)
class Report:
    """The reconciler's outcome, forwarded to the manager for the EdgeNode status."""

    manifests_ok: bool
    message: str = ""
    managed_manifests: int = 0


class SyncProgress(Protocol):
    """What a SyncClient shows of its progress (read by the metrics at scrape time)."""

    connected: bool
    head_offset: int
    events_applied: int
    batches_applied: int
    snapshots_installed: int
    reconnects: int
    leader_redirects: int


class StreamDead(Exception):
    """The stream broke the protocol or fell silent; reconnect."""


class NotTheLeader(Exception):
    """The manager does not lead (it is a standby): try another address at once, the hinted leader first."""

    def __init__(self, details: str, leader: str | None) -> None:
        super().__init__(details)
        self.details = details
        self.leader = leader  # the leader's sync address as that manager knows it; None when it knows none


def not_the_leader(code: grpc.StatusCode | None, details: str | None,
                   trailing: grpc.aio.Metadata | Sequence[tuple[str, str | bytes]] | None) -> NotTheLeader | None:
    """The redirect an RPC's end carries: UNAVAILABLE "not the leader..." with the leader in trailing metadata."""
    if code != grpc.StatusCode.UNAVAILABLE or not (details or "").startswith(NOT_THE_LEADER):
        return None
    leader = None
    for key, value in trailing or ():
        if key == LEADER_METADATA_KEY:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            leader = text.strip() or None
    return NotTheLeader(details or NOT_THE_LEADER, leader)


@dataclass(slots=True)
class _Redirects:
    """Where to go after a "not the leader": the hinted address, else the next; free of backoff for one round."""

    count: int = 0  # redirects since the last backoff sleep or Welcome
    logged: str | None = None  # the leader named in the last INFO line ("" for none known)
    since_progress: bool = False  # a manager answered "not the leader" since the last progress

    def next_index(self, addresses: tuple[str, ...], index: int, leader: str | None) -> int:
        """The hinted leader when it is one of ours and not the manager that answered; else the next address."""
        if leader is not None and leader in addresses and leader != addresses[index]:
            return addresses.index(leader)
        return (index + 1) % len(addresses)

    def without_backoff(self, addresses: tuple[str, ...]) -> bool:
        """Count one redirect; True while fewer than one round of the list answered this way (no tight loop)."""
        self.count += 1
        return self.count < len(addresses)


class _Inbox:
    """Reads the stream ahead of the applier, so batches that arrive while one is applied are applied together.

    One replica transaction, one reconcile and one Ack for all of them: a catching-up agent
    otherwise pays an LMDB commit and a reconcile per 256 events (bench/RESULTS.md, catch-up).
    Holds at most what the manager's window lets it send. Ends with the call.
    """

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self._queue: deque[pb.ManagerMessage | BaseException | None] = deque()  # None: the stream ended
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._pump(call))

    async def _pump(self, call: grpc.aio.StreamStreamCall) -> None:
        try:
            while True:
                message = await call.read()
                self._queue.append(None if message is grpc.aio.EOF else message)
                self._arrived.set()
                if message is grpc.aio.EOF:
                    return
        except BaseException as exc:  # noqa: BLE001 (handed to the reader, which raises it)
            self._queue.append(exc)
            self._arrived.set()

    async def get(self, timeout: float) -> pb.ManagerMessage | None:
        """The next message (None: the stream ended); raises what reading raised, TimeoutError after `timeout`."""
        while not self._queue:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), timeout)
        message = self._queue.popleft()
        if isinstance(message, BaseException):
            raise message
        return message

    def with_queued_batches(self, batch: pb.EventBatch, *, max_events: int) -> pb.EventBatch:
        """`batch` plus the batches already received right after it, as one batch of at most ~max_events.

        Half the manager's window: the manager refills the other half while this one is applied.
        """
        more: list[pb.EventBatch] = []
        size = len(batch.events)
        while size < max_events and self._queue:
            queued = self._queue[0]
            if not isinstance(queued, pb.ManagerMessage) or not queued.HasField("batch"):
                break
            self._queue.popleft()
            more.append(queued.batch)
            size += len(queued.batch.events)
        if not more:
            return batch
        merged = pb.EventBatch(events=batch.events, head_offset=batch.head_offset)
        for b in more:
            merged.events.extend(b.events)
            merged.head_offset = max(merged.head_offset, b.head_offset)
        return merged

    def close(self) -> None:
        """Stop reading."""
        self._task.cancel()


def channel_options() -> ChannelOptions:
    """Channel arguments: the shared keepalive (a black-holed manager is noticed in ~20-30 s), our own retries."""
    return [
        *keepalive_options(),
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        # one channel per attempt: our own backoff decides when to retry, not the channel's
        ("grpc.enable_retries", 0),
    ]


class SyncClient:
    """Keeps one node's replica in step with the manager's log, forever."""

    def __init__(
        self,
        *,
        node: str,
        addresses: Sequence[str],
        replica: ReplicaStore,
        after_apply: Callable[[], Awaitable[Report | None]],
        tls: ClientTls | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if not addresses:
            raise ValueError("at least one sync server address is needed")
        self.node = node
        self.addresses = tuple(addresses)
        self.replica = replica
        self.after_apply = after_apply
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.backoff = Backoff(initial=backoff_initial, maximum=backoff_max)
        self.streak = ErrorStreak()  # failed tries since the last progress: one log line per distinct error
        self._welcomed_at: float | None = None  # when the current stream's Welcome arrived
        self.channel_options = channel_options()
        # counters for metrics and tests
        self.connected = False
        self.address = ""  # the manager address of the current or last stream
        self.head_offset = 0
        self.applied_offset = 0
        self.snapshots_installed = 0
        self.batches_applied = 0
        self.events_applied = 0
        self.heartbeats_received = 0
        self.reconnects = 0
        self.leader_redirects = 0  # "not the leader" answers that sent this agent on to another manager
        self._redirects = _Redirects()
        self.last_error = ""
        self._latest_report: Report | None = None  # newest reconcile outcome known
        self._sent_report: Report | None = None  # what the current stream already carried
        self._call: grpc.aio.StreamStreamCall | None = None
        self._write_lock = asyncio.Lock()
        self._deferred_since: float | None = None  # first Ack sent without a reconcile, while catching up
        self._report_tasks: set[asyncio.Task[None]] = set()
        self._tls_files = None if tls is None else ReloadingFiles(
            tls.paths(), key_file=tls.key_file, load=lambda: self._load_credentials(tls))

    @staticmethod
    def _load_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=tls.ca_file.read_bytes(),
            private_key=tls.key_file.read_bytes() if tls.key_file else None,
            certificate_chain=tls.cert_file.read_bytes() if tls.cert_file else None,
        )

    async def run(self) -> None:
        """Connect, sync and reconnect with backoff until cancelled; addresses are tried in turn.

        A manager that is not the leader sends the agent on at once, to the leader it names when
        that is one of the addresses, for up to one round of the list; then the backoff applies.
        """
        index = 0
        while True:
            address = self.addresses[index]
            level = "WARNING"
            redirect: NotTheLeader | None = None
            try:
                await self._session(address)
                self.last_error = "stream ended by the manager"
            except asyncio.CancelledError:
                raise
            except NotTheLeader as exc:
                redirect = exc
                self.last_error = f"UNAVAILABLE: {exc.details}"
            except grpc.aio.AioRpcError as exc:
                redirect = not_the_leader(exc.code(), exc.details(), exc.trailing_metadata())
                self.last_error = f"{exc.code().name}: {exc.details()}"
            except (StreamDead, StoreError, TimeoutError, OSError) as exc:
                self.last_error = str(exc) or type(exc).__name__
            except lmdb.Error as exc:  # e.g. a full or failing disk: nothing was committed, the replica is intact
                why = " ".join(str(exc).split())
                self.last_error = f"the replica could not commit: {why} (a full or failing disk?)"
                level = "ERROR"
            except Exception as exc:  # noqa: BLE001 (run() must outlive any one stream)
                self.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                self.last_error = f"sync stream failed unexpectedly: {self.last_error}"
                level = "ERROR"
            finally:
                self.connected = False
                if self._welcomed_at is not None and time.monotonic() - self._welcomed_at >= STABLE_STREAM_SECONDS:
                    self._progressed()  # a long healthy stream: the failure that ended it is news, not a repeat
                self._welcomed_at = None
            await self._reconcile_deferred()
            self.reconnects += 1
            if redirect is None:
                index = (index + 1) % len(self.addresses)
            else:
                self.leader_redirects += 1
                self._redirects.since_progress = True
                index = self._redirects.next_index(self.addresses, index, redirect.leader)
                self._log_redirect(address, redirect, self.addresses[index])
                if self._redirects.without_backoff(self.addresses):
                    continue  # a standby answered at once: the leader is likely up, go there now
            delay = self.backoff.next()
            if self._redirects.since_progress:  # a standby is up and an election on: the new leader comes soon
                delay = min(delay, ELECTION_RETRY_MAX_SECONDS * (0.5 + random.random() / 2))
            self._log_failure(address, delay, level=level)
            await asyncio.sleep(delay)
            self._redirects.count = 0  # a new round of the list may redirect at once again

    def _log_redirect(self, address: str, redirect: NotTheLeader, going_to: str) -> None:
        """One INFO line per leader named (a new leader is news; the same answer again is not)."""
        named = redirect.leader or ""
        if named == self._redirects.logged:
            logger.debug("sync: {} is not the leader ({}); trying {}", address, redirect.details, going_to)
            return
        self._redirects.logged = named
        if redirect.leader is None:
            where = "it knows no leader"
        elif redirect.leader in self.addresses:
            where = f"the leader is at {redirect.leader}"
        else:
            where = f"the leader is at {redirect.leader}, not one of the --sync-server addresses"
        logger.info("sync: {} is not the leader ({}); trying {}", address, where, going_to)

    def _log_failure(self, address: str, delay: float, *, level: str) -> None:
        """One warning per distinct error; its repeats go to debug and are counted in the next line."""
        new, previous_repeats = self.streak.failed(self.last_error)
        if previous_repeats:
            logger.warning("sync: the previous error repeated {} more time(s)", previous_repeats)
        if new:
            logger.log(level, "sync with {} ended: {}; retrying in {:.1f}s (backing off up to {:g}s until an apply "
                       "commits; repeats of this error are not logged)", address, self.last_error, delay,
                       self.backoff.maximum)
        else:
            logger.debug("sync with {} ended again: {}; retrying in {:.1f}s", address, self.last_error, delay)

    def _progressed(self) -> None:
        """An apply committed (or a stream stayed healthy): reconnect quickly next time, and say a failure cleared."""
        self.backoff.reset()
        self._redirects.since_progress = False
        failures, error, repeats = self.streak.cleared()
        if failures:
            logger.info("sync with {} works again after {} failed attempt(s); the last error, {} time(s): {}",
                        self.address, failures, repeats + 1, error)

    def _channel(self, address: str) -> grpc.aio.Channel:
        if self._tls_files is None:
            return grpc.aio.insecure_channel(address, options=self.channel_options)
        self._tls_files.reload_if_changed()  # a rotated certificate, key or CA needs no restart
        return grpc.aio.secure_channel(address, self._tls_files.current, options=self.channel_options)

    async def _session(self, address: str) -> None:
        """One stream: returns when the manager ends it cleanly, raises on errors."""
        self.address = address
        async with self._channel(address) as channel:
            call = pb_grpc.SyncStub(channel).Stream()
            self._call = call
            try:
                await self._exchange(call)
            finally:
                self._call = None
                call.cancel()

    async def _write(self, call: grpc.aio.StreamStreamCall, message: pb.AgentMessage) -> None:
        """One write at a time: acks and timer reports share the stream."""
        async with self._write_lock:
            try:
                await call.write(message)
            except asyncio.InvalidStateError:  # the RPC already ended: report why it did
                code, details = await call.code(), await call.details()
                redirect = not_the_leader(code, details, await call.trailing_metadata())
                if redirect is not None:
                    raise redirect from None
                raise StreamDead(f"{code.name}: {details}") from None

    async def _exchange(self, call: grpc.aio.StreamStreamCall) -> None:
        """Hello, then apply everything the manager sends."""
        cursor = await asyncio.to_thread(self.replica.cursor)
        state = await asyncio.to_thread(self.replica.state)
        self.applied_offset = cursor.applied_offset
        hello = pb.Hello(
            node=self.node, log_id=cursor.log_id, applied_offset=cursor.applied_offset, digest=state.digest,
            record_format=RECORD_FORMAT, agent_version=AGENT_VERSION, answers_heartbeats=True,
        )
        try:  # an unreachable or black-holed manager: no answer within connect_timeout
            await asyncio.wait_for(self._write(call, pb.AgentMessage(hello=hello)), self.connect_timeout)
        except TimeoutError:
            raise TimeoutError(f"no connection within {self.connect_timeout:g}s") from None
        silence = self.connect_timeout  # until the Welcome names the heartbeat interval
        self._sent_report = None  # a new stream (maybe a new manager) hears the latest report
        inbox = _Inbox(call)
        try:
            await self._follow(call, inbox, silence)
        finally:
            inbox.close()

    async def _follow(self, call: grpc.aio.StreamStreamCall, inbox: _Inbox, silence: float) -> None:
        """Handle the manager's messages until the stream ends."""
        log_id = ""
        window = 0  # events the manager may send ahead of our acks (from the Welcome)
        chunks: list[bytes] = []
        while True:
            try:
                message = await inbox.get(silence)
            except TimeoutError:
                what = "no Welcome" if not log_id else "nothing from the manager"
                raise StreamDead(f"{what} for {silence:g}s") from None
            if message is None:  # the manager ended the stream cleanly
                return
            kind = message.WhichOneof("kind")
            if kind == "welcome":
                w = message.welcome
                if log_id:
                    raise StreamDead("a second Welcome on the same stream")
                if w.record_format != RECORD_FORMAT:
                    raise StreamDead(f"manager speaks record format {w.record_format}, not {RECORD_FORMAT}")
                log_id = w.log_id
                window = w.window
                silence = max(1, w.heartbeat_seconds) * SILENT_HEARTBEATS
                self.head_offset = w.head_offset
                self.connected = True
                self._welcomed_at = time.monotonic()
                self._redirects.since_progress = False  # a leader welcomed us: the election, if any, is over
                self._redirects.count = 0  # the leader: a later redirect starts a new round
                # no backoff reset here: only progress resets it (_progressed); while failing, Welcomes are not news
                log = logger.debug if self.streak.failures else logger.info
                if w.mode == pb.Welcome.SNAPSHOT:
                    log("synced with {}: snapshot at {} ({})", self.address, w.snapshot_offset, w.reason)
                else:
                    log("synced with {}: resuming after {} (head {})", self.address, self.applied_offset, w.head_offset)
                await self._flush_report(call)
                continue
            if not log_id:
                raise StreamDead(f"expected a Welcome, got {kind}")
            if kind == "batch":
                batch = inbox.with_queued_batches(message.batch, max_events=max(1, window // 2))
                self.head_offset = max(self.head_offset, batch.head_offset)
                await self._apply_batch(call, batch, log_id)
            elif kind == "snapshot":
                chunks.extend(message.snapshot.entries)
                if message.snapshot.last:
                    entries, chunks = chunks, []
                    await self._install_snapshot(call, message.snapshot, entries, log_id)
            elif kind == "heartbeat":
                self.head_offset = message.heartbeat.head_offset
                self.heartbeats_received += 1
                # proof of life for the manager, which drops an agent silent for 3 heartbeats
                await self._write(call, pb.AgentMessage(pong=pb.Pong(head_offset=self.head_offset)))
            else:
                raise StreamDead(f"unknown message {kind}")

    async def _apply_batch(self, call: grpc.aio.StreamStreamCall, batch: pb.EventBatch, log_id: str) -> None:
        """Apply one batch in one replica transaction, reconcile, then acknowledge."""
        result = await asyncio.to_thread(self._decode_and_apply, list(batch.events), log_id)
        self._progressed()
        self.batches_applied += 1
        self.events_applied += result.applied
        await self._acknowledge(call, result.applied_offset, result.digest)

    def _decode_and_apply(self, raws: list[bytes], log_id: str) -> ApplyResult:
        """Worker thread: decoding a batch is as much work as applying it, so neither blocks the loop."""
        return self.replica.apply_records(raws, log_id=log_id)

    async def _install_snapshot(
        self, call: grpc.aio.StreamStreamCall, last: pb.SnapshotChunk, entries: list[bytes], log_id: str
    ) -> None:
        """Replace the replica with the snapshot in one transaction, reconcile, then acknowledge."""
        pods = tuple(decode_entry(raw) for raw in entries)
        if len(pods) != last.pod_count:
            raise StreamDead(f"snapshot at {last.offset} announced {last.pod_count} pods, carried {len(pods)}")
        snapshot = Snapshot(log_id=log_id, node=self.node, offset=last.offset, digest=last.digest, pods=pods)
        result = await asyncio.to_thread(self.replica.install_snapshot, snapshot)
        self._progressed()
        self.snapshots_installed += 1
        logger.info("installed snapshot at {}: {} pods, digest {}", last.offset, len(pods), format_digest(last.digest))
        await self._acknowledge(call, result.applied_offset, result.digest)

    async def _acknowledge(self, call: grpc.aio.StreamStreamCall, applied_offset: int, digest: int) -> None:
        """after_apply (the reconciler), then Ack, then a report if it changed.

        While catching up (the manager announced a head beyond what was applied) the
        reconcile is skipped for up to RECONCILE_DEFERRAL_SECONDS: newer versions are on
        their way, so intermediate manifests would be written only to be overwritten (one
        fsync each: bench/RESULTS.md, catch-up). The Ack still follows the replica commit,
        and the Ack of the head always follows a reconcile.
        """
        self.applied_offset = applied_offset
        now = time.monotonic()
        if self.head_offset > applied_offset:
            if self._deferred_since is None:
                self._deferred_since = now
            if now - self._deferred_since < RECONCILE_DEFERRAL_SECONDS:
                await self._write(call, pb.AgentMessage(ack=pb.Ack(applied_offset=applied_offset, digest=digest)))
                return
        self._deferred_since = None
        try:
            report = await self.after_apply()
        except Exception as exc:  # noqa: BLE001 (the replica committed: acknowledge it anyway)
            logger.error("reconciling after offset {} failed: {}", applied_offset, exc)
            report = Report(manifests_ok=False, message=str(exc))
        await self._write(call, pb.AgentMessage(ack=pb.Ack(applied_offset=applied_offset, digest=digest)))
        if report is not None:
            self._latest_report = report
        await self._flush_report(call)

    async def _reconcile_deferred(self) -> None:
        """A stream that ended mid catch-up: make the files follow the committed replica now,
        not at the next resync tick (the manager may stay away for long)."""
        if self._deferred_since is None:
            return
        self._deferred_since = None
        try:
            report = await self.after_apply()
        except Exception as exc:  # noqa: BLE001 (the replica is intact; the timer retries)
            logger.error("reconciling after an interrupted catch-up failed: {}", exc)
            report = Report(manifests_ok=False, message=str(exc))
        if report is not None:
            self._latest_report = report

    def report(self, report: Report) -> None:
        """Tell the manager a reconcile outcome found outside after_apply (e.g. a timer); sent if it changed."""
        self._latest_report = report
        call = self._call
        if call is not None and self.connected:
            task = asyncio.get_running_loop().create_task(self._flush_report(call))
            self._report_tasks.add(task)
            task.add_done_callback(self._report_tasks.discard)

    async def _flush_report(self, call: grpc.aio.StreamStreamCall) -> None:
        """Send the latest report unless this stream already carried it."""
        report = self._latest_report
        if report is None or report == self._sent_report:
            return
        self._sent_report = report
        try:
            await self._write(call, pb.AgentMessage(report=pb.AgentReport(
                manifests_ok=report.manifests_ok, message=report.message, managed_manifests=report.managed_manifests,
            )))
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            logger.debug("report not sent: {}", exc)  # the stream is ending; the next one sends it again
            self._sent_report = None
