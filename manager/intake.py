"""What the namespace and EdgeNode watches' items do to the recorder (on the watch threads).

Owns three rules: a namespace whose rules change re-judges its EdgeNodes; one EdgeNode that
fails is that EdgeNode's problem (counted, retried alone with backoff); a store that cannot
be written (disk full) is everyone's (recording stops, /readyz says why, the watch relists
with backoff until appends work again). Imports neither grpc nor the kubernetes client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from loguru import logger

from eventlog import StoreFullError
from manager.admitting import NamespaceAdmission
from manager.recording import FencedError, Recorder, key_of
from manager.watching import Changed, HandlerUnavailable, Listed


class Intake:
    """Hands watch items to the recorder; knows whether EdgeNodes were listed and whether the log takes appends."""

    def __init__(self, *, recorder: Recorder, admission: NamespaceAdmission, head_offset: Callable[[], int],
                 on_object_error: Callable[[], None]) -> None:
        self._recorder = recorder
        self._admission = admission
        self._head_offset = head_offset
        self._on_object_error = on_object_error
        self.namespaces_listed = threading.Event()  # pods are judged by their namespace: EdgeNodes wait for it
        self.edgenodes_listed = threading.Event()
        self.unwritable: str | None = None  # why EdgeNode changes cannot be recorded now (disk full)

    def namespace_item(self, item: Listed | Changed) -> None:
        """A namespace list or change: EdgeNodes of namespaces whose rules moved are judged again."""
        if isinstance(item, Listed):
            moved = self._admission.listed(item.objects)
        elif item.type == "DELETED":
            self._admission.deleted(item.object)
            moved = set()
        else:
            name = (item.object.get("metadata") or {}).get("name") or ""
            moved = {name} if self._admission.changed(item.object) else set()
        for ns in sorted(moved):
            rules = self._admission.rules(ns)
            rec = self._recorder.reevaluate(ns)
            # at INFO only when the edge changes: a first list sees every labelled namespace "change"
            logger.log("INFO" if rec.events else "DEBUG",
                       "namespace {}: Pod Security {}, edge nodes {}; EdgeNodes re-evaluated, {} event(s) appended",
                       ns, rules.policy,
                       "any" if rules.allowed_nodes is None else ",".join(sorted(rules.allowed_nodes)),
                       len(rec.events))
        self.namespaces_listed.set()

    def edgenode_item(self, item: Listed | Changed) -> None:
        """One watch item; an object's failure is that object's (a failed list fails the watch)."""
        try:
            self._record(item)
        except StoreFullError as exc:
            self._recording_stopped(str(exc))
            raise HandlerUnavailable(str(exc)) from None
        except FencedError as exc:  # the leader term is ending (docs/ha.md): nothing to retry here
            raise HandlerUnavailable(str(exc)) from None
        except Exception as exc:
            if isinstance(item, Listed):
                raise  # watch_forever counts it and lists again with backoff
            self._on_object_error()
            key = key_of(item.object)
            if key is None:
                logger.opt(exception=exc).error("an EdgeNode event could not be handled; skipped")
                return
            delay = self._recorder.retries.failed(key, "deleted" if item.type == "DELETED" else "changed",
                                                  item.object)
            logger.opt(exception=exc).error("EdgeNode {}/{} could not be handled; retrying in {:.1f}s",
                                            *key, delay)
            return
        if self.unwritable is not None:
            # only a relist gets here after a failure: it appended everything the API holds
            logger.info("the event log takes appends again; recording resumed (head offset {})", self._head_offset())
            self.unwritable = None

    def retry_forever(self, stop: threading.Event) -> None:
        """Hand failed EdgeNodes back to the recorder when their backoff has passed, until `stop` is set."""
        while not stop.wait(min(1.0, self._recorder.retries.next_due() or 1.0)):
            try:
                if self._recorder.retry_due() and self.unwritable is not None:
                    logger.info("the event log takes appends again (a retried EdgeNode was recorded)")
                    self.unwritable = None
            except StoreFullError as exc:  # kept for a later try, as a watch event would be
                self._recording_stopped(str(exc))
            except FencedError:  # the leader term is ending; the next leader relists
                return
            except Exception as exc:  # the recorder counts its own failures; this is a bug of the loop
                logger.opt(exception=exc).error("retrying EdgeNodes failed")

    def _recording_stopped(self, why: str) -> None:
        """Not ready, with the reason; one log line per distinct reason, not one per retry."""
        if why != self.unwritable:
            logger.error("cannot record EdgeNode changes: {}; agents are still served what the log holds, and "
                         "recording resumes with a relist once the store can be written", why)
        self.unwritable = why

    def _record(self, item: Listed | Changed) -> None:
        if isinstance(item, Listed):
            rec = self._recorder.listed(item.objects)
            logger.info("EdgeNodes listed: {} object(s), {} event(s) appended to catch up",
                        len(item.objects), len(rec.events))
            self.edgenodes_listed.set()
        elif item.type == "DELETED":
            self._recorder.deleted(item.object)
        else:
            self._recorder.changed(item.object)
