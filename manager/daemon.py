"""The running manager: wires store, recorder, watches, sync server, status writer, Events, metrics, compaction.

Owns start and stop order, what each watch's items are handed to, and the hand-over
between the watch threads and the event loop; the pieces themselves live in their
modules. Given ready-made kubernetes API objects by main; builds no clients itself.
Must not import the agent package.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVarTuple

from loguru import logger

from edgecommon.addresses import Address
from edgecommon.serving import HealthServer
from eventlog import Appended, LogStore
from manager.admitting import NamespaceAdmission
from manager.agent_activity import AgentActivity
from manager.compacting import Compactor, RetentionBounds
from manager.events import EdgeNodeEvents, EventRecorder
from manager.intake import Intake
from manager.kubeapi import GROUP, PLURAL, VERSION, ApiEventSink, CoreApi, CustomObjectsApi, EventsApi, StatusPatcher
from manager.metrics import Metrics, serve
from manager.recording import MANAGED_BY_LABEL, MANAGED_BY_VALUE, DesiredNode, Recorder
from manager.replication import HighWaterMark
from manager.refusals import REFUSED_LABEL, NodeRefusals, RefusalChange
from manager.status import StatusSettings, StatusWriter, mirror_pod_key, pod_running
from manager.leadership import Leadership
from manager.sync_service import BindProblem, LogNotifier, ServerTls, SyncServer, SyncSettings, create_server
from manager.watching import Changed, Listed, ListFn, WatchSettings, WatchStats, watch_forever

_Ts = TypeVarTuple("_Ts")  # the arguments of a call handed to the loop
STOP_GRACE_SECONDS = 5.0  # streams get this long to finish before the server cancels them


def _no_wakeup(nodes: object) -> None:
    """With a high-water mark the recorder wakes nobody itself: the mark wakes agents when events become visible."""


class BindError(OSError):
    """A listen address that cannot be bound: which server ("sync" or "metrics") and why, in words."""

    def __init__(self, role: str, reason: str) -> None:
        super().__init__(f"{role}: {reason}")
        self.role = role
        self.reason = reason


def _reason(exc: OSError) -> str:
    """'address already in use' from an OSError (its strerror, first letter lowered)."""
    why = exc.strerror or " ".join(str(exc).split())
    return why[:1].lower() + why[1:]


class Daemon:
    """One manager process's moving parts."""

    def __init__(
        self,
        *,
        store: LogStore,
        custom: CustomObjectsApi,
        core: CoreApi,
        namespace: str | None,
        retention: RetentionBounds,
        compaction_interval: float,
        status_refresh_seconds: float,
        sync_settings: SyncSettings,
        watch_settings: WatchSettings = WatchSettings(),
        events: EventsApi | None = None,
        reporting_instance: str = "edge-manager",
        admission: NamespaceAdmission | None = None,
        export_dir: Path | None = None,
        fenced: Callable[[], bool] | None = None,
        leadership: Leadership | None = None,
        standby_timeout: float | None = None,
    ) -> None:
        """`fenced`, `leadership`, `standby_timeout`: one leader term of --leader-elect (manager/standing.py)."""
        self.store = store
        self._custom = custom
        self._core = core
        self._namespace = namespace
        self._retention = retention
        self._compaction_interval = compaction_interval
        self._sync_settings = sync_settings
        self._watch_settings = watch_settings
        self._leadership = leadership
        self.metrics = Metrics()
        self.notifier = LogNotifier()
        # --leader-elect: agents get what every in-sync standby holds (docs/ha.md); a lone manager needs no mark
        self.replication = (HighWaterMark(store=store, notifier=self.notifier, standby_timeout=standby_timeout)
                            if standby_timeout is not None else None)
        self.status = StatusWriter(
            patch=StatusPatcher(custom), head_offset=self._head_offset,
            settings=StatusSettings(refresh_seconds=status_refresh_seconds),
            on_write=self.metrics.status_writes.inc,
        )
        self.event_recorder = (EventRecorder(ApiEventSink(events), reporting_instance=reporting_instance)
                               if events is not None else None)
        self.events = EdgeNodeEvents(self.event_recorder) if self.event_recorder else None
        self.observer = AgentActivity(status=self.status, metrics=self.metrics, events=self.events)
        self.compactor = Compactor(store=store, retention=retention, export_dir=export_dir,
                                   on_dropped=self.metrics.compacted_events.inc)
        self.edgenode_stats = WatchStats()
        self.pod_stats = WatchStats()
        self.namespace_stats = WatchStats()
        self.admission = admission if admission is not None else NamespaceAdmission()
        self._stop_threads = threading.Event()
        self._stop_tasks = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._server: SyncServer | None = None
        self._http: HealthServer | None = None
        self.recorder = Recorder(
            store, notify=self.notifier.notify_threadsafe if self.replication is None else _no_wakeup,
            namespace=namespace,
            on_desired=lambda d: self._to_loop(self._edgenode_changed, d),
            on_deleted=lambda k: self._to_loop(self._edgenode_deleted, k),
            on_listed=self._on_listed,
            on_appended=self._on_appended,
            on_rejected=self.events.rejected if self.events else None,
            pod_check=self.admission,
            on_error=lambda _key, _exc: self.metrics.object_errors.inc(),
            fenced=fenced,
        )
        self.intake = Intake(recorder=self.recorder, admission=self.admission, head_offset=lambda: store.head_offset,
                             on_object_error=self.metrics.object_errors.inc)
        self.refusals = NodeRefusals()  # EdgeNodes labelled edge.k8s.io/agent-refused (docs/joining.md)
        self.starting: str | None = None  # what the caller still starts beside the daemon (not ready until done)

    # -- start and stop -------------------------------------------------------------

    async def start(self, *, sync_address: str, tls: ServerTls | None, metrics_address: Address | None) -> None:
        """Start serving agents, metrics, then the watches and the background tasks."""
        self._loop = asyncio.get_running_loop()
        logger.info("Starting sync service")
        try:
            self._server = create_server(store=self.store, notifier=self.notifier, observer=self.observer,
                                         address=sync_address, tls=tls, settings=self._sync_settings,
                                         leadership=self._leadership, replication=self.replication)
        except BindProblem as exc:
            raise BindError("sync", exc.reason) from None
        await self._server.grpc_server.start()
        port = self._server.port
        host = sync_address.rpartition(":")[0] or "[::]"
        mode = "plaintext" if tls is None else ("mTLS" if tls.checks_clients else "TLS")
        logger.info("Starting sync service api server: listening on {}:{} ({})", host, port, mode)
        self.sync_port = port
        self.metrics.add_live(
            head_offset=lambda: self.store.head_offset,
            connected_agents=lambda: self.observer.connected_agents,
            node_lag=self.status.node_lag,
            watch_restarts=self._restarts,
            sync_streams=self._sync_streams,
        )
        self.metrics.add_retention(
            first_offset=lambda: self.store.first_offset,
            oldest_event_time_ns=self.store.oldest_event_time_ns,
            log_bytes=lambda: self.store.log_bytes,
            store_bytes=lambda: self.store.info().size_bytes,
            recording=lambda: self.intake.unwritable is None,
        )
        if self.replication is not None:
            mark = self.replication
            self.metrics.add_replication(standbys_in_sync=lambda: mark.standbys_in_sync, lag=mark.lag,
                                         timeouts=lambda: mark.timeouts)
        if metrics_address is not None:
            try:
                self._http = serve(metrics_address, metrics=self.metrics, ready=self.ready,
                                   not_ready_reason=self.not_ready)
            except OSError as exc:
                raise BindError("metrics", _reason(exc)) from None
        # "edge controller", "informer cache", "workers": the original edge-manager's start-up lines, word for word
        logger.info("Starting edge controller")
        self._start_thread("namespace-watch", self._watch_namespaces)
        self._start_thread("edgenode-watch", self._watch_edgenodes)
        self._start_thread("mirror-pod-watch", self._watch_mirror_pods)
        self._start_thread("edgenode-retry", lambda: self.intake.retry_forever(self._stop_threads))
        logger.info("Waiting for the informer cache to sync")
        self._tasks.append(asyncio.create_task(self._announce_listed(), name="listed"))
        self._tasks.append(asyncio.create_task(self.status.run(self._stop_tasks), name="status"))
        if self._retention.enabled:
            self._tasks.append(asyncio.create_task(self.compactor.run_forever(self._compaction_interval),
                                                   name="compaction"))
        else:
            logger.warning("retention is off (--retain-age none --retain-bytes none): the event log grows "
                           "without bound")

    async def stop(self, *, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop watches, streams (with grace: 0 when fenced), tasks and metrics; the caller closes the store."""
        self._stop_threads.set()
        self._stop_tasks.set()
        # an in-flight append commits first; no append happens after this returns
        await asyncio.to_thread(self.recorder.close)
        if self.event_recorder is not None:  # before the streams end: our own stop is no AgentDisconnected
            await asyncio.to_thread(self.event_recorder.close)
        if self.replication is not None:
            self.replication.wake_all()  # streams see the leadership gone at once, not at their next heartbeat
        if self._server is not None:
            await self._server.grpc_server.stop(grace)
        if self.replication is not None:
            self.replication.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.compactor.stopped()
        if self._http is not None:
            self._http.stop()

    def ready(self) -> bool:
        """Listed EdgeNodes once, serving agents, and nothing else still starting (the join listener)."""
        return self.intake.edgenodes_listed.is_set() and self._server is not None and self.starting is None

    def not_ready(self) -> str | None:
        """Why /readyz fails now, in a few words; None when ready."""
        if self.intake.unwritable is not None:
            return self.intake.unwritable
        if self.starting is not None:
            return self.starting
        return None if self.ready() else "EdgeNodes not listed yet or the sync service not serving"

    # -- watches (threads) ----------------------------------------------------------

    def _start_thread(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)  # a blocked read must not hold exit
        t.start()
        self._threads.append(t)

    def _watch_namespaces(self) -> None:
        kwargs = {"field_selector": f"metadata.name={self._namespace}"} if self._namespace else {}
        watch_forever(self._core.list_namespace, handle=self.intake.namespace_item, settings=self._watch_settings,
                      stats=self.namespace_stats, stop=self._stop_threads, what="namespaces", **kwargs)

    def _watch_edgenodes(self) -> None:
        # pods are judged by their namespace's labels: know them before the first EdgeNode list
        while not self.intake.namespaces_listed.wait(0.5):
            if self._stop_threads.is_set():
                return
        list_fn: ListFn
        if self._namespace:
            list_fn, kwargs = self._custom.list_namespaced_custom_object, {"namespace": self._namespace}
        else:
            list_fn, kwargs = self._custom.list_cluster_custom_object, {}
        watch_forever(list_fn, handle=self._edgenode_item, settings=self._watch_settings,
                      stats=self.edgenode_stats, stop=self._stop_threads, what="EdgeNodes",
                      group=GROUP, version=VERSION, plural=PLURAL, **kwargs)

    def _edgenode_item(self, item: Listed | Changed) -> None:
        """Refused nodes follow their EdgeNode's label (a newly refused node's live stream ends at once); then
        the intake records the item."""
        change = (self.refusals.listed(item.objects) if isinstance(item, Listed)
                  else self.refusals.changed(item.type, item.object))
        if change:
            self._to_loop(self._apply_refusals, change)
        self.intake.edgenode_item(item)

    def join_refused(self, node: str, message: str) -> None:
        """A JoinRefused Event on the node's EdgeNodes (from a join server thread)."""
        events = self.events
        if events is not None:
            self._to_loop(lambda: events.join_refused(node, message=message))

    def _apply_refusals(self, change: RefusalChange) -> None:
        assert self._server is not None  # the EdgeNode watch starts after the sync service
        table = self._server.streams
        table.allow_nodes(change.allowed)
        for node in sorted(change.allowed):
            logger.info("node {} is no longer refused (label {} removed)", node, REFUSED_LABEL)
        for node in sorted(change.refused):
            logger.warning("node {} is refused (label {}=true on its EdgeNode): its stream is dropped, its joins "
                           "and renewals are refused", node, REFUSED_LABEL)
        table.refuse_nodes(change.refused, why=f"node refused: its EdgeNode has the label {REFUSED_LABEL}=true")

    def _watch_mirror_pods(self) -> None:
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
        list_fn: ListFn
        if self._namespace:
            list_fn, kwargs = self._core.list_namespaced_pod, {"namespace": self._namespace}
        else:
            list_fn, kwargs = self._core.list_pod_for_all_namespaces, {}
        watch_forever(list_fn, handle=self._handle_pod, settings=self._watch_settings, stats=self.pod_stats,
                      stop=self._stop_threads, what="mirror pods", label_selector=selector, **kwargs)

    def _handle_pod(self, item: Listed | Changed) -> None:
        if isinstance(item, Listed):
            pods = {mirror_pod_key(p): pod_running(p) for p in item.objects}
            self._to_loop(self.status.mirror_pods_listed, pods)
        else:
            pod, deleted = item.object, item.type == "DELETED"
            self._to_loop(lambda: self.status.mirror_pod_changed(pod, deleted=deleted))

    # -- hand-over to the loop ------------------------------------------------------

    def _to_loop(self, fn: Callable[[*_Ts], None], *args: *_Ts) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop closed between the check and the call: shutting down
                pass

    def _on_listed(self, desired: list[DesiredNode]) -> None:
        self._to_loop(self.status.edgenode_listed, desired)
        if self.events:
            self._to_loop(self.events.edgenode_listed, desired)

    def _edgenode_changed(self, d: DesiredNode) -> None:
        self.status.edgenode_changed(d)
        if self.events:
            self.events.edgenode_changed(d)

    def _edgenode_deleted(self, key: tuple[str, str]) -> None:
        self.status.edgenode_deleted(key)
        if self.events:
            self.events.edgenode_deleted(key)

    def _on_appended(self, appended: Appended) -> None:
        if self.replication is not None:  # wakes standbys now, agents once the mark passes these events
            self.replication.appended(appended.head_offset, appended.nodes)
        puts = sum(c.manifest is not None for c in appended.changes)
        if puts:
            self.metrics.events_appended.labels(op="put").inc(puts)
        if len(appended) - puts:
            self.metrics.events_appended.labels(op="delete").inc(len(appended) - puts)
        self._to_loop(self.status.appended, set(appended.nodes))

    async def _announce_listed(self) -> None:
        while not self.intake.edgenodes_listed.is_set():
            await asyncio.sleep(0.1)
        logger.info("Starting workers (EdgeNodes listed; head offset {})", self.store.head_offset)

    # -- metrics read at scrape time ----------------------------------------------

    def _sync_streams(self) -> dict[str, int]:
        assert self._server is not None  # metrics are served after the sync service started
        table, files = self._server.streams, self._server.tls_files
        return {"open": table.open, "refused": table.refused, "replaced": table.replaced,
                "tls_reloads": files.reloads if files is not None else 0}

    def _head_offset(self, node: str) -> int:
        st = self.store.node_state(node)
        return st.head_offset if st else 0

    def _restarts(self) -> dict[tuple[str, str], int]:
        out = {("edgenodes", r): n for r, n in list(self.edgenode_stats.restarts.items())}
        out.update({("pods", r): n for r, n in list(self.pod_stats.restarts.items())})
        out.update({("namespaces", r): n for r, n in list(self.namespace_stats.restarts.items())})
        return out
