"""List+watch of one Kubernetes resource: a finite generator and the thin loop around it.

Owns the only place the manager reads collections from the API (kopf's pattern):
`watch_once` lists, yields a `Listed` marker with the full state, then watches from the
list's resourceVersion with bookmarks and timeouts on both sides, and returns on 410 Gone
(as an exception or as an ERROR event in the stream) so `watch_forever` lists again.
Connection errors back off with jitter. Runs in a thread: the kubernetes client is
synchronous. Must not import grpc or the eventlog.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import urllib3
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from loguru import logger

from edgecommon.backoff import AROUND, Backoff

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
ListFn = Callable[..., Any]  # a kubernetes client list_* method (returns a dict or a model)


@dataclass(frozen=True, slots=True)
class Listed:
    """The full state as of a list: every object, and the resourceVersion to watch from."""

    objects: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True, slots=True)
class Changed:
    """One watch event for one object."""

    type: EventType
    object: dict[str, Any]


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class HandlerUnavailable(Exception):
    """The handler cannot take events now and has said why itself: relist after the backoff, quietly.

    Nothing is lost: the relist gives the handler the full state, so an event it could
    not take is taken then (a disk that filled up, until space returns).
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchSettings:
    """Timeouts and backoff of one watch."""

    server_timeout_seconds: int = 60
    """The apiserver ends each watch after this; the loop re-watches from the last resourceVersion
    (one cheap request a minute, no relist)."""
    read_timeout_seconds: float = 90.0
    """Client socket read timeout: a black-holed stream the server can no longer end is noticed
    within this, and the loop reconnects and relists."""
    connect_timeout_seconds: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    page_limit: int = 500
    """Objects per list page, so a large collection is listed in bounded chunks."""


@dataclass
class WatchStats:
    """Counters the metrics module exports: restarts of the list+watch by reason."""

    restarts: dict[str, int] = field(default_factory=dict)
    lists: int = 0

    def restart(self, reason: str) -> None:
        """Count one restart."""
        self.restarts[reason] = self.restarts.get(reason, 0) + 1


def list_all(list_fn: ListFn, *, settings: WatchSettings, **kwargs: Any) -> Listed:
    """List every object (paged), returning them with the list's resourceVersion."""
    objects: list[dict[str, Any]] = []
    cont: str | None = None
    while True:
        extra = {"_continue": cont} if cont else {}
        # raw JSON, not client models: camelCase keys as the API sends them, and no model building cost
        resp = list_fn(**kwargs, limit=settings.page_limit, _preload_content=False,
                       _request_timeout=(settings.connect_timeout_seconds, settings.read_timeout_seconds), **extra)
        page = json.loads(resp.data)
        objects.extend(page.get("items") or [])
        meta = page.get("metadata") or {}
        cont = meta.get("continue")
        if not cont:
            return Listed(objects, meta.get("resourceVersion") or "")


def watch_once(
    list_fn: ListFn, *, settings: WatchSettings, stop: threading.Event | None = None, **kwargs: Any
) -> Iterator[Listed | Changed]:
    """List, yield Listed, then yield Changed events until the stream ends; raise Gone on 410."""
    try:
        listed = list_all(list_fn, settings=settings, **kwargs)
    except ApiException as exc:
        if exc.status == 410:  # an expired continue token: list again from scratch
            raise Gone(f"list: {exc.reason}") from None
        raise
    yield listed
    rv = listed.resource_version
    while stop is None or not stop.is_set():
        w = k8s_watch.Watch(return_type="object")  # plain dicts, no client models
        try:
            stream = w.stream(
                list_fn, **kwargs, resource_version=rv, allow_watch_bookmarks=True,
                timeout_seconds=settings.server_timeout_seconds,
                _request_timeout=(settings.connect_timeout_seconds, settings.read_timeout_seconds),
            )
            for ev in stream:
                if stop is not None and stop.is_set():
                    return
                etype, raw = ev.get("type"), ev.get("raw_object") or ev.get("object") or {}
                if etype == "ERROR":
                    code = raw.get("code")
                    if code == 410:
                        raise Gone(f"watch: {raw.get('message', 'resourceVersion too old')}")
                    raise ApiException(status=code or 500, reason=raw.get("message") or "watch error")
                new_rv = (raw.get("metadata") or {}).get("resourceVersion")
                if new_rv:
                    rv = new_rv
                if etype == "BOOKMARK":
                    continue
                if etype in ("ADDED", "MODIFIED", "DELETED"):
                    yield Changed(etype, raw)
        except ApiException as exc:
            if exc.status == 410:
                raise Gone(f"watch: {exc.reason}") from None
            raise
        finally:
            w.stop()
        # the server's timeout ended the stream: watch again from the newest resourceVersion


def watch_forever(
    list_fn: ListFn,
    *,
    handle: Callable[[Listed | Changed], None],
    settings: WatchSettings = WatchSettings(),
    stats: WatchStats | None = None,
    stop: threading.Event,
    what: str = "objects",
    **kwargs: Any,
) -> None:
    """Run watch_once until `stop` is set: relist on 410, back off on connection errors."""
    stats = stats if stats is not None else WatchStats()
    backoff = Backoff(initial=settings.backoff_initial, maximum=settings.backoff_max, jitter=AROUND)
    while not stop.is_set():
        try:
            for item in watch_once(list_fn, settings=settings, stop=stop, **kwargs):
                if isinstance(item, Listed):
                    stats.lists += 1
                    logger.info("listed {} {} (resourceVersion {})", len(item.objects), what, item.resource_version)
                handle(item)
                if isinstance(item, Listed):  # only once the handler took it: a failing handler backs off
                    backoff.reset()
            if not stop.is_set():
                stats.restart("stream_ended")
        except Gone as exc:
            stats.restart("gone")
            logger.info("watch of {} expired ({}); listing again", what, exc)
            continue  # relist at once: nothing is wrong with the connection
        except HandlerUnavailable:
            stats.restart("handler_unavailable")  # the handler logs once per distinct cause, not per try
        except ApiException as exc:
            stats.restart(f"http_{exc.status}")
            logger.warning("watch of {} failed: HTTP {} {}; retrying in {:.1f}s",
                           what, exc.status, " ".join(str(exc.reason).split()), backoff.ceiling())
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            stats.restart("connection")
            logger.warning("watch of {} lost its connection ({}); retrying in {:.1f}s",
                           what, " ".join(str(exc).split())[:200], backoff.ceiling())
        except Exception as exc:  # a bug in a handler must not end the watch for good
            stats.restart("error")
            logger.opt(exception=exc).error("watch of {} failed unexpectedly; retrying in {:.1f}s", what,
                                            backoff.ceiling())
        if stop.wait(backoff.next()):  # about the ceiling logged above (AROUND), which then doubles
            return
