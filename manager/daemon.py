"""The running manager: wires store, recorder, watches, sync server, status writer, Events, metrics, compaction.

Owns start and stop order and the hand-over between the watch threads and the event
loop. Given ready-made kubernetes API objects by main; builds no clients itself.
Must not import the agent package.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from edgecommon.addresses import Address
from eventlog import Appended, LogStore, StoreFullError
from eventlog.export import export_file
from manager.admitting import NamespaceAdmission
from manager.events import EdgeNodeEvents, EventNotFound, EventRecorder
from manager.metrics import Metrics, serve
from manager.recording import MANAGED_BY_LABEL, MANAGED_BY_VALUE, DesiredNode, Recorder, key_of
from manager.status import Conflict, NotFound, StatusSettings, StatusWriter
from manager.sync_service import BindProblem, LogNotifier, ServerTls, SyncSettings, create_server
from manager.watching import Changed, HandlerUnavailable, Listed, WatchSettings, WatchStats, watch_forever

GROUP, VERSION, PLURAL = "edge.k8s.io", "v1alpha1", "edgenodes"
STOP_GRACE_SECONDS = 5.0  # streams get this long to finish before the server cancels them


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


class _Observer:
    """The sync service's observer: status plus metrics, on the loop thread."""

    def __init__(self, status: StatusWriter, metrics: Metrics, events: EdgeNodeEvents | None = None) -> None:
        self._status = status
        self._metrics = metrics
        self._events = events
        self.connected_agents = 0

    def connected(self, node: str, *, peer: str) -> None:
        self.connected_agents += 1
        logger.info("agent of node {} connected from {}", node, peer)
        self._status.connected(node, peer=peer)
        if self._events:
            self._events.connected(node, peer=peer)

    def acknowledged(self, node: str, *, applied_offset: int, digest: int) -> None:
        self._status.acknowledged(node, applied_offset=applied_offset, digest=digest)

    def reported(self, node: str, *, manifests_ok: bool, message: str, managed_manifests: int) -> None:
        self._status.reported(node, manifests_ok=manifests_ok, message=message, managed_manifests=managed_manifests)
        if self._events:
            self._events.reported(node, manifests_ok=manifests_ok, message=message)

    def disconnected(self, node: str) -> None:
        self.connected_agents = max(0, self.connected_agents - 1)
        logger.info("agent of node {} disconnected", node)
        self._status.disconnected(node)
        if self._events:
            agent = self._status.agents.get(node)
            self._events.disconnected(node, offline=agent is None or agent.connected == 0)

    def snapshot_sent(self, node: str, *, reason: str) -> None:
        self._metrics.snapshots_sent.labels(reason=_reason_label(reason)).inc()
        self._status.snapshot_sent(node, reason=reason)
        if self._events:
            self._events.snapshot_sent(node, reason=reason)


class _EventSink:
    """events.k8s.io/v1 writes through the kubernetes client (on the event recorder's worker thread)."""

    def __init__(self, api: Any) -> None:
        self._api = api  # an EventsV1Api

    def create(self, namespace: str, body: dict[str, Any]) -> None:
        """Create an Event."""
        self._api.create_namespaced_event(namespace, body, _preload_content=False, _request_timeout=(5, 15))

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Merge-patch an Event (its series)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._api.patch_namespaced_event(name, namespace, body, _preload_content=False,
                                             _content_type="application/merge-patch+json", _request_timeout=(5, 15))
        except ApiException as exc:
            if exc.status == 404:
                raise EventNotFound(f"{namespace}/{name}") from None
            raise


def _reason_label(reason: str) -> str:
    """A bounded label value for a snapshot reason (offsets in reasons would explode cardinality)."""
    for word in ("unknown log_id", "empty replica", "compacted", "beyond", "digest"):
        if word in reason:
            return word.replace(" ", "_")
    return "other"


class Daemon:
    """One manager process's moving parts."""

    def __init__(
        self,
        *,
        store: LogStore,
        api: Any,
        custom: Any,
        core: Any,
        namespace: str | None,
        retention: Any,
        compaction_interval: float,
        status_refresh_seconds: float,
        sync_settings: SyncSettings,
        watch_settings: WatchSettings = WatchSettings(),
        events: Any = None,
        reporting_instance: str = "edge-manager",
        admission: NamespaceAdmission | None = None,
        export_dir: Path | None = None,
    ) -> None:
        self.store = store
        self._api = api
        self._custom = custom
        self._core = core
        self._namespace = namespace
        self._retention = retention
        self._compaction_interval = compaction_interval
        self._sync_settings = sync_settings
        self._watch_settings = watch_settings
        self.metrics = Metrics()
        self.notifier = LogNotifier()
        self.status = StatusWriter(
            patch=self._patch_status, head_offset=self._head_offset,
            settings=StatusSettings(refresh_seconds=status_refresh_seconds),
            on_write=self.metrics.status_writes.inc,
        )
        self.event_recorder = (EventRecorder(_EventSink(events), reporting_instance=reporting_instance)
                               if events is not None else None)
        self.events = EdgeNodeEvents(self.event_recorder) if self.event_recorder else None
        self.observer = _Observer(self.status, self.metrics, self.events)
        self.edgenode_stats = WatchStats()
        self.pod_stats = WatchStats()
        self.namespace_stats = WatchStats()
        self.admission = admission if admission is not None else NamespaceAdmission()
        self._namespaces_listed = threading.Event()
        self._stop_threads = threading.Event()
        self._stop_tasks = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._server: Any = None
        self._http: Any = None
        self._listed = threading.Event()
        self._compacting = threading.Lock()  # held while compaction writes, so stop() can wait for it
        self._export_dir = export_dir
        self._export_error: str | None = None  # last export failure logged (one line per distinct error)
        self._compact_error: str | None = None  # likewise for compaction
        self.unwritable: str | None = None  # why EdgeNode changes cannot be recorded now (disk full)
        self.recorder = Recorder(
            store, notify=self.notifier.notify_threadsafe, namespace=namespace,
            on_desired=lambda d: self._to_loop(self._edgenode_changed, d),
            on_deleted=lambda k: self._to_loop(self._edgenode_deleted, k),
            on_listed=self._on_listed,
            on_appended=self._on_appended,
            on_rejected=self.events.rejected if self.events else None,
            pod_check=self.admission,
            on_error=lambda _key, _exc: self.metrics.object_errors.inc(),
        )

    # -- start and stop -------------------------------------------------------------

    async def start(self, *, sync_address: str, tls: ServerTls | None, metrics_address: Address | None) -> None:
        """Start serving agents, metrics, then the watches and the background tasks."""
        self._loop = asyncio.get_running_loop()
        logger.info("Starting sync service")
        try:
            self._server, port = create_server(store=self.store, notifier=self.notifier, observer=self.observer,
                                               address=sync_address, tls=tls, settings=self._sync_settings)
        except BindProblem as exc:
            raise BindError("sync", exc.reason) from None
        await self._server.start()
        host = sync_address.rpartition(":")[0] or "[::]"
        mode = "plaintext" if tls is None else ("mTLS" if tls.client_ca_file else "TLS")
        logger.info("Starting sync service api server: listening on {}:{} ({})", host, port, mode)
        self.sync_port = port
        self.metrics.add_live(
            head_offset=lambda: self.store.head_offset,
            connected_agents=lambda: self.observer.connected_agents,
            node_lag=self._node_lag,
            watch_restarts=self._restarts,
            sync_streams=self._sync_streams,
        )
        self.metrics.add_retention(
            first_offset=lambda: self.store.first_offset,
            oldest_event_time_ns=self.store.oldest_event_time_ns,
            log_bytes=lambda: self.store.log_bytes,
            store_bytes=lambda: self.store.info().size_bytes,
            recording=lambda: self.unwritable is None,
        )
        if metrics_address is not None:
            try:
                self._http = serve(metrics_address, metrics=self.metrics, ready=self.ready,
                                   not_ready_reason=lambda: self.unwritable)
            except OSError as exc:
                raise BindError("metrics", _reason(exc)) from None
        logger.info("Starting edge controller")
        self._start_thread("namespace-watch", self._watch_namespaces)
        self._start_thread("edgenode-watch", self._watch_edgenodes)
        self._start_thread("mirror-pod-watch", self._watch_mirror_pods)
        self._start_thread("edgenode-retry", self._retry_edgenodes)
        logger.info("Waiting for the informer cache to sync")
        self._tasks.append(asyncio.create_task(self._announce_listed(), name="listed"))
        self._tasks.append(asyncio.create_task(self.status.run(self._stop_tasks), name="status"))
        if self._retention.enabled:
            self._tasks.append(asyncio.create_task(self._compact_forever(), name="compaction"))
        else:
            logger.warning("retention is off (--retain-age none --retain-bytes none): the event log grows "
                           "without bound")

    async def stop(self) -> None:
        """Stop watches, streams (with grace), tasks and metrics; the caller closes the store."""
        self._stop_threads.set()
        self._stop_tasks.set()
        # an in-flight append commits first; no append happens after this returns
        await asyncio.to_thread(self.recorder.close)
        if self.event_recorder is not None:  # before the streams end: our own stop is no AgentDisconnected
            await asyncio.to_thread(self.event_recorder.close)
        if self._server is not None:
            await self._server.stop(STOP_GRACE_SECONDS)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._compacting.acquire)  # a compaction thread outlives its cancelled task
        if self._http is not None:
            self._http.stop()

    def ready(self) -> bool:
        """Listed EdgeNodes once and serving agents."""
        return self._listed.is_set() and self._server is not None

    # -- watches (threads) ----------------------------------------------------------

    def _start_thread(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)  # a blocked read must not hold exit
        t.start()
        self._threads.append(t)

    def _watch_namespaces(self) -> None:
        kwargs = {"field_selector": f"metadata.name={self._namespace}"} if self._namespace else {}
        watch_forever(self._core.list_namespace, handle=self._handle_namespace, settings=self._watch_settings,
                      stats=self.namespace_stats, stop=self._stop_threads, what="namespaces", **kwargs)

    def _handle_namespace(self, item: Listed | Changed) -> None:
        if isinstance(item, Listed):
            moved = self.admission.listed(item.objects)
        elif item.type == "DELETED":
            self.admission.deleted(item.object)
            moved = set()
        else:
            name = (item.object.get("metadata") or {}).get("name") or ""
            moved = {name} if self.admission.changed(item.object) else set()
        for ns in sorted(moved):
            rules = self.admission.rules(ns)
            rec = self.recorder.reevaluate(ns)
            # at INFO only when the edge changes: a first list sees every labelled namespace "change"
            logger.log("INFO" if rec.events else "DEBUG",
                       "namespace {}: Pod Security {}, edge nodes {}; EdgeNodes re-evaluated, {} event(s) appended",
                       ns, rules.policy,
                       "any" if rules.allowed_nodes is None else ",".join(sorted(rules.allowed_nodes)),
                       len(rec.events))
        self._namespaces_listed.set()

    def _watch_edgenodes(self) -> None:
        # pods are judged by their namespace's labels: know them before the first EdgeNode list
        while not self._namespaces_listed.wait(0.5):
            if self._stop_threads.is_set():
                return
        if self._namespace:
            list_fn, kwargs = self._custom.list_namespaced_custom_object, {"namespace": self._namespace}
        else:
            list_fn, kwargs = self._custom.list_cluster_custom_object, {}
        watch_forever(list_fn, handle=self._handle_edgenode, settings=self._watch_settings,
                      stats=self.edgenode_stats, stop=self._stop_threads, what="EdgeNodes",
                      group=GROUP, version=VERSION, plural=PLURAL, **kwargs)

    def _retry_edgenodes(self) -> None:
        """Hand failed EdgeNodes back to the recorder when their backoff has passed."""
        while not self._stop_threads.wait(min(1.0, self.recorder.retries.next_due() or 1.0)):
            try:
                if self.recorder.retry_due() and self.unwritable is not None:
                    logger.info("the event log takes appends again (a retried EdgeNode was recorded)")
                    self.unwritable = None
            except StoreFullError as exc:  # kept for a later try, as a watch event would be
                self._recording_stopped(str(exc))
            except Exception as exc:  # the recorder counts its own failures; this is a bug of the loop
                logger.opt(exception=exc).error("retrying EdgeNodes failed")

    def _handle_edgenode(self, item: Listed | Changed) -> None:
        """One watch item; an object's failure is that object's (a failed list fails the watch).

        A store that cannot be written (disk full) is everyone's problem instead: recording
        stops, /readyz says why, and the watch relists with backoff until appends work again.
        """
        try:
            self._record(item)
        except StoreFullError as exc:
            self._recording_stopped(str(exc))
            raise HandlerUnavailable(str(exc)) from None
        except Exception as exc:
            if isinstance(item, Listed):
                raise  # watch_forever counts it and lists again with backoff
            self.metrics.object_errors.inc()
            key = key_of(item.object)
            if key is None:
                logger.opt(exception=exc).error("an EdgeNode event could not be handled; skipped")
                return
            delay = self.recorder.retries.failed(key, "deleted" if item.type == "DELETED" else "changed", item.object)
            logger.opt(exception=exc).error("EdgeNode {}/{} could not be handled; retrying in {:.1f}s",
                                            *key, delay)
            return
        if self.unwritable is not None:
            # only a relist gets here after a failure: it appended everything the API holds
            logger.info("the event log takes appends again; recording resumed (head offset {})",
                        self.store.head_offset)
            self.unwritable = None

    def _recording_stopped(self, why: str) -> None:
        """Not ready, with the reason; one log line per distinct reason, not one per retry."""
        if why != self.unwritable:
            logger.error("cannot record EdgeNode changes: {}; agents are still served what the log holds, and "
                         "recording resumes with a relist once the store can be written", why)
        self.unwritable = why

    def _record(self, item: Listed | Changed) -> None:
        if isinstance(item, Listed):
            rec = self.recorder.listed(item.objects)
            logger.info("EdgeNodes listed: {} object(s), {} event(s) appended to catch up",
                        len(item.objects), len(rec.events))
            self._listed.set()
        elif item.type == "DELETED":
            self.recorder.deleted(item.object)
        else:
            self.recorder.changed(item.object)

    def _watch_mirror_pods(self) -> None:
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
        if self._namespace:
            list_fn, kwargs = self._core.list_namespaced_pod, {"namespace": self._namespace}
        else:
            list_fn, kwargs = self._core.list_pod_for_all_namespaces, {}
        watch_forever(list_fn, handle=self._handle_pod, settings=self._watch_settings, stats=self.pod_stats,
                      stop=self._stop_threads, what="mirror pods", label_selector=selector, **kwargs)

    def _handle_pod(self, item: Listed | Changed) -> None:
        if isinstance(item, Listed):
            pods = {_pod_key(p): _pod_running(p) for p in item.objects}
            self._to_loop(self.status.mirror_pods_listed, pods)
        else:
            running = None if item.type == "DELETED" else _pod_running(item.object)
            ns, name = _pod_key(item.object)
            self._to_loop(lambda: self.status.mirror_pod(ns, name, running=running))

    # -- hand-over to the loop ------------------------------------------------------

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
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
        puts = sum(c.manifest is not None for c in appended.changes)
        if puts:
            self.metrics.events_appended.labels(op="put").inc(puts)
        if len(appended) - puts:
            self.metrics.events_appended.labels(op="delete").inc(len(appended) - puts)
        self._to_loop(self.status.appended, set(appended.nodes))

    async def _announce_listed(self) -> None:
        while not self._listed.is_set():
            await asyncio.sleep(0.1)
        logger.info("Starting workers (EdgeNodes listed; head offset {})", self.store.head_offset)

    # -- status writes, metrics, compaction ----------------------------------------

    def _patch_status(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body,
                _content_type="application/merge-patch+json", _request_timeout=(5, 15))
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{namespace}/{name}") from None
            if exc.status == 409:
                raise Conflict(f"{namespace}/{name}") from None
            raise

    def _sync_streams(self) -> dict[str, int]:
        table = self._server.stream_table
        files = getattr(self._server, "tls_files", None)
        return {"open": table.open, "refused": table.refused, "replaced": table.replaced,
                "tls_reloads": files.reloads if files is not None else 0}

    def _head_offset(self, node: str) -> int:
        st = self.store.node_state(node)
        return st.head_offset if st else 0

    def _node_lag(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for node, agent in list(self.status.agents.items()):
            if agent.synced_offset is not None:
                out[node] = max(0, self._head_offset(node) - agent.synced_offset)
        return out

    def _restarts(self) -> dict[tuple[str, str], int]:
        out = {("edgenodes", r): n for r, n in list(self.edgenode_stats.restarts.items())}
        out.update({("pods", r): n for r, n in list(self.pod_stats.restarts.items())})
        out.update({("namespaces", r): n for r, n in list(self.namespace_stats.restarts.items())})
        return out

    async def _compact_forever(self) -> None:
        while True:
            await asyncio.sleep(self._compaction_interval)
            await self.compact_once()

    async def compact_once(self) -> None:
        """Apply retention once: export what it drops first (when asked to), then drop it."""
        r = self._retention
        older = time.time_ns() - int(r.max_age_seconds * 1e9) if r.max_age_seconds is not None else None
        try:
            res = await asyncio.to_thread(self._compact, keep_last=r.keep_last, older_than_ns=older,
                                          max_bytes=r.max_bytes)
        except Exception as exc:
            why = " ".join(str(exc).split())
            if why != self._compact_error:  # one line per distinct error: a full disk fails every interval
                logger.warning("compaction failed: {}", why)
            self._compact_error = why
            return
        self._compact_error = None
        if res is not None and res.dropped:
            self.metrics.compacted_events.inc(res.dropped)
            logger.info("compaction dropped {} event(s); the log now starts at offset {}",
                        res.dropped, res.first_offset)

    def _compact(self, **bounds: Any) -> Any:
        with self._compacting:
            first = self.store.first_offset
            cut = self.store.compaction_cut(**bounds)
            if cut <= first:
                return None
            if self._export_dir is not None and not self._export(first, cut - 1):
                return None  # nothing is dropped that was not exported first
            return self.store.compact_before(cut)

    def _export(self, first: int, last: int) -> bool:
        """Write what compaction is about to drop into the export directory; False when it could not."""
        try:
            path = export_file(self.store, self._export_dir, first=first, last=last)  # type: ignore[arg-type]
        except OSError as exc:
            why = f"{exc.filename or self._export_dir}: {exc.strerror or exc}"
        except Exception as exc:
            why = " ".join(str(exc).split())
        else:
            if self._export_error is not None:
                logger.info("export before compaction works again")
            self._export_error = None
            logger.info("exported offsets {}..{} to {} before compaction", first, last, path)
            return True
        if why != self._export_error:
            logger.error("cannot export offsets {}..{} before compaction, so nothing is compacted: {}",
                         first, last, why)
        self._export_error = why
        return False


def _pod_key(pod: dict[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def _pod_running(pod: dict[str, Any]) -> bool:
    return ((pod.get("status") or {}).get("phase")) == "Running"

