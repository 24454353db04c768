"""The edge-agent daemon: the replica, the manifest reconciler, the sync client and the health server, wired.

Owns the data-dir lock, opening the replica and the running agent (agent/main.py reads the
flags and starts it). Start-up order: make `--data-dir` 0700 and lock it (edgecommon); open
`<data-dir>/replica` (a corrupt or foreign LMDB, a manager's store or another node's replica:
one line and exit 1, nothing overwritten); reconcile the manifest folder from the replica
BEFORE connecting, so an agent restarted while the manager is unreachable restores its pods
(a replica that never synced, e.g. a wiped --data-dir, leaves the folder alone until its
first snapshot: knowing nothing is not "run nothing"); then run the sync client (which
reconciles after each applied batch, before acknowledging) and a timer that fully
reconciles every `--resync-interval`. SIGTERM or SIGINT: cancel, close the store, exit 0.
Must not import manager.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import lmdb
from loguru import logger
from prometheus_client import CollectorRegistry

from agent.faults import FaultInjector
from agent.reconciling import ManifestReconciler, Outcome
from agent.serving import AgentCollector, CertificateProgress, Readiness
from agent.settings import AgentSettings
from agent.sync_client import ClientTls, Report, SyncClient
from edgecommon.backoff import NO_JITTER, Backoff
from edgecommon.serving import HealthServer
from eventlog import ReplicaStore, StoreError, format_digest
from eventlog.opening import AGENT_SUBDIR, store_path

EXIT_FAILURE = 1
JOURNAL_TRIM_SECONDS = 60.0


def replica_path(data_dir: Path) -> Path:
    """Where the replica lives: <data-dir>/replica, or data-dir itself if it already holds a store."""
    p = store_path(data_dir)  # a --data-dir that IS a store (or holds a manager's) is opened, checked, refused
    if p == data_dir and not (data_dir / "data.mdb").exists():
        return data_dir / AGENT_SUBDIR
    return p


def open_replica(settings: AgentSettings) -> ReplicaStore:
    """Open or create this node's replica; raises StoreError or OSError with a one-line message."""
    path = replica_path(settings.data_dir)
    try:
        return ReplicaStore(path, node=settings.node_name)
    except lmdb.Error as exc:
        raise StoreError(f"{path}: cannot open the replica ({' '.join(str(exc).split())})") from None


class Agent:
    """One running agent: the reconciler, the sync client, the resync timer, the health server."""

    def __init__(self, settings: AgentSettings, replica: ReplicaStore, faults: FaultInjector, *,
                 certificate: CertificateProgress | None = None) -> None:
        self.settings = settings
        self.certificate = certificate  # a joined agent's renewer, for its metrics
        self.replica = replica
        self.faults = faults
        self.reconciler = ManifestReconciler(settings.pod_manifest_path, desired=replica.pods)
        self.readiness = Readiness(replica_open=True)
        self.client: SyncClient | None = None
        # A replica that never installed a snapshot knows nothing (a new node, or a wiped --data-dir): it must not
        # prune the folder while the manager is unreachable, so the folder is touched only once it has synced.
        self._armed = bool(replica.cursor().log_id)
        self._journal_trimmed = float("-inf")

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit status."""
        s = self.settings
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        health = self._start_health()
        if health is False:
            return EXIT_FAILURE
        try:
            cursor, state = self.replica.cursor(), self.replica.state()
            logger.info(
                "replica {}: node {}, log {}, applied offset {}, {} pods, digest {}",
                self.replica.path, self.replica.node, cursor.log_id or "(none yet)", cursor.applied_offset,
                state.pod_count, format_digest(state.digest),
            )
            if self._armed:
                first = await asyncio.to_thread(self.reconciler.reconcile_full)  # before connecting: restore pods
                if first.ok:
                    logger.info("manifests in {} restored from the replica: {} managed ({} written, {} removed)",
                                s.pod_manifest_path, first.managed, first.written, first.removed)
            else:
                logger.info("the replica has never been synced: the manifest folder {} is left as it is until "
                            "the first snapshot arrives", s.pod_manifest_path)
                if not s.pod_manifest_path.is_dir():
                    logger.warning("pod manifest folder {} is not an existing directory; manifests will be written "
                                   "once it is", s.pod_manifest_path)
            logger.info("Starting sync agent")
            try:
                client = self.client = self._make_client()
            except (OSError, ValueError) as exc:  # e.g. a TLS file that vanished or cannot be used
                logger.error("cannot set up the sync client: {}", " ".join(str(exc).split()))
                return EXIT_FAILURE
            logger.info("Starting sync edge spec")
            if self._armed:
                self._send_report(first)  # sent once a stream is open
            tasks = [
                asyncio.create_task(self._sync_forever(client), name="sync-client"),
                asyncio.create_task(self._resync_forever(), name="resync-timer"),
            ]
            stopper = asyncio.create_task(stop.wait(), name="stop")
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            status = 0
            for t in tasks:
                if t in done and not t.cancelled() and t.exception() is not None:
                    exc = t.exception()
                    logger.opt(exception=exc).error("{} failed: {}", t.get_name(), exc)
                    status = EXIT_FAILURE
            if stop.is_set():
                logger.info("stopping on signal")
            for t in [*tasks, stopper]:
                t.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
            return status
        finally:
            if health:
                health.stop()

    def _start_health(self) -> HealthServer | None | bool:
        if self.settings.metrics_addr is None:
            return None
        registry = CollectorRegistry()
        registry.register(AgentCollector(node=self.settings.node_name, replica=self.replica,
                                         reconciler=self.reconciler, client=lambda: self.client,
                                         certificate=self.certificate))
        address = self.settings.metrics_addr
        try:
            server = HealthServer(address, registry=registry,
                                  not_ready=lambda: self.readiness.not_ready(self.reconciler))
        except OSError as exc:
            why = exc.strerror or " ".join(str(exc).split())
            logger.error("--metrics-addr {}: {}", address, why[:1].lower() + why[1:])
            return False
        server.start()
        return server

    def _make_client(self) -> SyncClient:
        s = self.settings
        tls = None if s.ca_file is None else ClientTls(ca_file=s.ca_file, cert_file=s.cert_file, key_file=s.key_file)
        return SyncClient(
            node=s.node_name, addresses=s.sync_servers, replica=self.replica, after_apply=self.after_apply,
            tls=tls, connect_timeout=s.connect_timeout,
        )

    async def after_apply(self) -> Report:
        """The sync client's hook after each committed batch or snapshot: write the changed manifests."""
        self.faults.reached("crash-after-commit")
        if self._armed:
            outcome = await asyncio.to_thread(self.reconciler.reconcile_changes)
        else:  # first snapshot: the folder may hold files of an earlier replica, so read it all once
            outcome = await asyncio.to_thread(self.reconciler.reconcile_full)
            self._armed = True
        self.faults.reached("crash-after-files")
        return Report(manifests_ok=outcome.ok, message=outcome.message, managed_manifests=outcome.managed)

    async def _sync_forever(self, client: SyncClient) -> None:
        """Run the sync client; should it ever fail unexpectedly, log it and start it again after a pause."""
        restarts = Backoff(initial=2.0, maximum=30.0, jitter=NO_JITTER)  # 2, 4, 8 ... 30 s
        while True:
            try:
                await client.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug, not a network error: keep the node's pods managed anyway
                first = restarts.attempt == 0
                delay = restarts.next()
                if first:
                    logger.opt(exception=exc).error("sync client failed; restarting it in {:.0f}s", delay)
                else:
                    logger.error("sync client failed again ({}): {}; restarting it in {:.0f}s",
                                 type(exc).__name__, " ".join(str(exc).split()), delay)
                await asyncio.sleep(delay)

    async def _resync_forever(self) -> None:
        """Full reconcile every --resync-interval: hand-deleted or edited manifests come back, failures retry."""
        while True:
            await asyncio.sleep(self.settings.resync_interval)
            if not self._armed:
                continue
            try:
                outcome = await asyncio.to_thread(self.reconciler.reconcile_full)
                await self._trim_journal()
            except Exception as exc:  # one line per attempt, no traceback; the next tick retries
                logger.error("resync failed: {}", " ".join(str(exc).split()))
                continue
            self._send_report(outcome)

    async def _trim_journal(self) -> None:
        """Drop journal lines beyond --retain-journal, at most once a minute (a write transaction)."""
        keep = self.settings.retain_journal
        now = asyncio.get_running_loop().time()
        if keep <= 0 or now - self._journal_trimmed < JOURNAL_TRIM_SECONDS:
            return
        self._journal_trimmed = now
        dropped = await asyncio.to_thread(self.replica.compact_journal, keep_last=keep)
        if dropped:
            logger.info("journal: dropped {} old line(s), keeping the newest {}", dropped, keep)

    def _send_report(self, outcome: Outcome) -> None:
        """Tell the manager the outcome of a reconcile outside after_apply; the client sends it if it changed."""
        if self.client is None:
            return
        try:
            self.client.report(Report(manifests_ok=outcome.ok, message=outcome.message, managed_manifests=outcome.managed))
        except Exception as exc:  # reporting is best effort; the next reconcile tries again
            logger.debug("could not queue a report: {}", exc)
