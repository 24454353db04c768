"""Leader election on a coordination.k8s.io/v1 Lease, with the rules of client-go's tools/leaderelection.

Owns the elector: who holds the Lease, when this manager may take it, renews it, gives it up or
must stop leading, and the fence `is_leader()` every leader-only action checks. Talks to the API
only through kubeapi.LeaseApi (raw JSON bodies, bounded request timeouts); must not import grpc,
eventlog or the agent, and builds no clients.

The client-go rules kept (tools/leaderelection/leaderelection.go, resourcelock/leaselock.go):
- tryAcquireOrRenew every retry period, jittered to [1, 2.2) x retry period while not leading,
  every retry period while leading; a leader first updates its cached Lease (the fast path) and
  reads it again only when that fails.
- a Lease held by another is taken only once the locally observed record (the spec, compared
  whole) has not changed for the record's leaseDurationSeconds, timed by the local clock,
  never by the record's renewTime (clocks of two hosts need not agree).
- leaseTransitions + 1 whenever the holder changes (also after a release); acquireTime kept
  while the holder stays; writes are optimistic on resourceVersion, so a 409 is a lost race.
- release: holder cleared, leaseDurationSeconds 1, transitions kept (ReleaseOnCancel).

Where this elector is stricter than client-go (each only shortens leading):
- the fence is measured from the START of the last successful acquire/renew request, and the
  leader stops leading once renew_deadline has passed since then (client-go measures its
  renew deadline from the start of the failing retry loop, up to a retry period later);
- a leader that reads the Lease held by another stops leading at once;
- on a release, on_stopped_leading runs before the holder is cleared (client-go clears first).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from manager.kubeapi import LeaseApi, api_status
from manager.settings import LeaseSettings

log = logging.getLogger(__name__)

SYNC_ADDRESS_ANNOTATION = "edge.k8s.io/sync-address"
JITTER_FACTOR = 1.2  # client-go's leaderelection.JitterFactor
_MIN_REQUEST_SECONDS = 0.05  # below this a request cannot succeed: treat the deadline as passed


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaderRecord:
    """The Lease as this elector last read or wrote it; holder_identity "" when nobody holds it."""

    holder_identity: str
    sync_address: str | None
    """The holder's annotation edge.k8s.io/sync-address (None when absent)."""
    lease_duration_seconds: int
    transitions: int
    acquire_time: str | None
    renew_time: str | None
    observed_at: float
    """The elector's clock() when this record (its spec) was first seen: the start of its expiry."""

    @property
    def spec_key(self) -> tuple[object, ...]:
        """What client-go compares (the whole record) to decide whether the lease changed."""
        return (self.holder_identity, self.lease_duration_seconds, self.transitions, self.acquire_time,
                self.renew_time)


class _ApiFailed(Exception):
    """One Lease request failed; str() says why in a line."""

    def __init__(self, why: str, *, status: int | None = None) -> None:
        super().__init__(why)
        self.status = status


def _now_micro() -> str:
    """A metav1.MicroTime of the wall clock (always six fraction digits, UTC)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _describe(exc: Exception) -> str:
    """One line for a failed request: the HTTP status and reason, or the error's type and message."""
    status = api_status(exc)
    reason = str(getattr(exc, "reason", "") or "").strip().splitlines()
    if status:
        return f"HTTP {status} {reason[0] if reason else ''}".strip()
    if status == 0 and reason:  # the client's own failure (TLS, a body it could not send): no HTTP status
        return reason[0][:300]
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


class LeaderElector:
    """Contends for one Lease from a thread (`run`); callbacks run on that thread and must not block."""

    def __init__(
        self, leases: LeaseApi, settings: LeaseSettings, *,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        on_new_leader: Callable[[LeaderRecord], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = leases
        self._s = settings
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._clock = clock
        self._lock = threading.Lock()  # guards the fields is_leader()/observed() read from other threads
        self._observed: LeaderRecord | None = None
        self._lease: dict[str, Any] | None = None  # the object last read or written: its resourceVersion
        self._held = False
        self._renewed_at = 0.0  # clock() at the start of the last successful acquire/renew
        self._reported: tuple[str, str | None] | None = None
        self._last_error = ""
        self._stop: threading.Event | None = None
        self._running = threading.Event()
        self._done = threading.Event()
        self._release_asked = False
        self._released = False
        self._thread: threading.Thread | None = None
        self._stop_reason = ""

    # -- what other threads ask ----------------------------------------------------------

    def is_leader(self) -> bool:
        """Whether this manager may act as leader now: it holds the lease and renewed it within renew_deadline."""
        with self._lock:
            return self._held and self._clock() < self._renewed_at + self._s.renew_deadline

    def observed(self) -> LeaderRecord | None:
        """The Lease as last read or written (None before the first answer from the API)."""
        with self._lock:
            return self._observed

    @property
    def stop_reason(self) -> str:
        """Why leading last ended, in a line ("" before): for on_stopped_leading, which takes no argument."""
        return self._stop_reason

    @property
    def identity(self) -> str:
        """This elector's holder identity."""
        return self._s.identity

    # -- the thread ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Acquire, lead, lose, acquire again... until stop; a stop while leading leaves the lease to expire."""
        self._stop = stop
        self._thread = threading.current_thread()
        self._done.clear()
        self._running.set()
        try:
            while not stop.is_set():
                if not self._acquire(stop):
                    break
                self._lead(stop)
        finally:
            try:
                if self._release_asked:
                    self._released = self._try_release()
            finally:
                self._running.clear()
                self._done.set()

    def release(self) -> bool:
        """Graceful stop: end run() (leadership first) and clear the holder so another takes over at once.

        Returns whether the Lease no longer names this manager (True also when it never did).
        Callable from any thread, during or after run(); from the elector's own thread (a
        callback) it only asks, and run() releases on its way out.
        """
        self._release_asked = True
        if self._stop is not None:
            self._stop.set()
        if threading.current_thread() is self._thread:
            return False
        if self._running.is_set():
            # the thread is at most in one bounded request, then releases (bounded by renew_deadline)
            self._done.wait(timeout=3 * self._s.renew_deadline + 5)
            return self._released
        self._released = self._try_release()
        return self._released

    # -- acquiring and leading -----------------------------------------------------------

    def _acquire(self, stop: threading.Event) -> bool:
        """Try every retry period (jittered) until this elector holds the lease; False when stopped."""
        while not stop.is_set():
            acquired = self.try_acquire_or_renew()
            self._report_leader()
            if acquired:
                log.info("acquired the lease %s/%s as %s (leading; sync address %s)", self._s.namespace,
                         self._s.name, self._s.identity, self._s.sync_address)
                return True
            stop.wait(self._s.retry_period * (1 + random.random() * JITTER_FACTOR))
        return False

    def _lead(self, stop: threading.Event) -> None:
        """on_started_leading, renew every retry period until a renew fails past the deadline, then stop leading."""
        self._on_started()
        why = "stopping"
        while not stop.wait(self._s.retry_period):
            lost = self._renew(stop)
            if lost:
                why = lost
                break
        with self._lock:
            self._held = False
        if why == "stopping":
            log.info("stopped leading the lease %s/%s: this manager is stopping%s", self._s.namespace,
                     self._s.name, " (releasing it)" if self._release_asked else "")
        else:
            log.info("lost the lease %s/%s: %s", self._s.namespace, self._s.name, why)
        self._stop_reason = why
        self._on_stopped()

    def _renew(self, stop: threading.Event) -> str | None:
        """Retry a renew until it succeeds (None) or leading must end (why, in a line)."""
        while True:
            if self.try_acquire_or_renew():
                self._report_leader()
                return None
            self._report_leader()
            holder = self._observed.holder_identity if self._observed else ""
            if holder != self._s.identity:
                return f"the lease is now held by {holder!r}" if holder else "the lease was released by another"
            left = self._renewed_at + self._s.renew_deadline - self._clock()
            if left <= _MIN_REQUEST_SECONDS:
                return (f"no renew succeeded within the renew deadline ({self._s.renew_deadline:g}s); "
                        f"last error: {self._last_error or 'none'}")
            if stop.wait(min(self._s.retry_period, left)):
                return "stopping"

    # -- one attempt (client-go's tryAcquireOrRenew) ---------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the lease; True when this elector holds it afterwards."""
        started = self._clock()
        now = _now_micro()
        duration = int(self._s.lease_duration)
        try:
            ok = self._attempt(started, now, duration)
        except _ApiFailed as exc:
            self._note_error(str(exc))
            ok = False
        if ok:
            self._last_error = ""
            with self._lock:
                self._held = True
                self._renewed_at = started
        return ok

    def _attempt(self, started: float, now: str, duration: int) -> bool:
        obs = self._observed
        if self._lease is not None and obs is not None and obs.holder_identity == self._s.identity \
                and self._valid(obs, started):
            # fast path: update the cached object; a 409 or any error falls back to a read
            try:
                self._write(self._spec(now, duration, acquire=obs.acquire_time, transitions=obs.transitions),
                            started, create=False)
                return True
            except _ApiFailed as exc:
                log.debug("lease renew on the cached object failed (%s); reading it", exc)
        lease = self._read(started)
        if lease is None:
            self._lease = None
            self._write(self._spec(now, duration, acquire=now, transitions=0), started, create=True)
            return True
        self._lease = lease
        current = self._record_of(lease, self._clock())  # seen now, after the read: the later, the safer
        with self._lock:
            if self._observed is None or self._observed.spec_key != current.spec_key:
                self._observed = current
            elif self._observed.sync_address != current.sync_address:  # same spec: keep its observed_at
                self._observed = replace(self._observed, sync_address=current.sync_address)
            obs = self._observed
        if obs.holder_identity and obs.holder_identity != self._s.identity and self._valid(obs, started):
            return False
        if obs.holder_identity == self._s.identity:
            spec = self._spec(now, duration, acquire=obs.acquire_time, transitions=obs.transitions)
        else:
            spec = self._spec(now, duration, acquire=now, transitions=obs.transitions + 1)
        self._write(spec, started, create=False)
        return True

    def _valid(self, record: LeaderRecord, now: float) -> bool:
        """client-go's isLeaseValid: observed_at + the record's leaseDurationSeconds is still ahead."""
        return record.observed_at + record.lease_duration_seconds > now

    def _spec(self, now: str, duration: int, *, acquire: str | None, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self._s.identity, "leaseDurationSeconds": duration, "acquireTime": acquire,
                "renewTime": now, "leaseTransitions": transitions}

    # -- release (client-go's tryRelease) -----------------------------------------------------

    def _try_release(self) -> bool:
        """Clear the holder if the lease still names this elector (leadership already ended)."""
        with self._lock:
            self._held = False
        deadline = self._clock() + self._s.renew_deadline
        for _ in range(5):  # a 409 is retried on a fresh read, as client-go does
            try:
                lease = self._read(self._clock(), deadline=deadline)
                if lease is None:
                    return True
                self._lease = lease
                record = self._record_of(lease, self._clock())
                if record.holder_identity != self._s.identity:
                    return True
                now = _now_micro()
                spec = {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now,
                        "leaseTransitions": record.transitions}
                self._write(spec, self._clock(), create=False, release=True, deadline=deadline)
                log.info("released the lease %s/%s", self._s.namespace, self._s.name)
                return True
            except _ApiFailed as exc:
                if exc.status != 409:
                    log.warning("could not release the lease %s/%s: %s", self._s.namespace, self._s.name, exc)
                    return False
        return False

    # -- requests ------------------------------------------------------------------------

    def _timeout(self, started: float, deadline: float | None) -> float:
        """The request's total timeout: what is left of the fence while holding, else the renew deadline."""
        if deadline is None:
            with self._lock:
                held = self._held
            deadline = (self._renewed_at if held else started) + self._s.renew_deadline
        left = deadline - self._clock()
        if left < _MIN_REQUEST_SECONDS:
            raise _ApiFailed("the renew deadline passed before the request")
        return left

    def _read(self, started: float, *, deadline: float | None = None) -> dict[str, Any] | None:
        """The Lease object, or None when it does not exist."""
        try:
            resp = self._api.read_namespaced_lease(self._s.name, self._s.namespace, _preload_content=False,
                                                   _request_timeout=self._timeout(started, deadline))
            return json.loads(resp.data)
        except _ApiFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the request is one failed attempt
            status = api_status(exc)
            if status == 404:
                return None
            raise _ApiFailed(f"reading the lease: {_describe(exc)}", status=status) from None

    def _write(self, spec: dict[str, Any], started: float, *, create: bool, release: bool = False,
               deadline: float | None = None) -> None:
        """Create or replace (optimistic on the cached resourceVersion) the Lease; remember what the API answered."""
        if create:
            body: dict[str, Any] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                    "metadata": {"name": self._s.name, "namespace": self._s.namespace}}
        else:
            assert self._lease is not None
            body = dict(self._lease)
            body["metadata"] = dict(body.get("metadata") or {})
        annotations = dict(body["metadata"].get("annotations") or {})
        if release:
            annotations.pop(SYNC_ADDRESS_ANNOTATION, None)
        else:
            annotations[SYNC_ADDRESS_ANNOTATION] = self._s.sync_address
        body["metadata"]["annotations"] = annotations
        body["spec"] = spec  # the whole spec, as client-go's Update (no preferredHolder, no strategy)
        what = "creating" if create else ("releasing" if release else "updating")
        try:
            timeout = self._timeout(started, deadline)
            if create:
                resp = self._api.create_namespaced_lease(self._s.namespace, body, _preload_content=False,
                                                         _request_timeout=timeout)
            else:
                resp = self._api.replace_namespaced_lease(self._s.name, self._s.namespace, body,
                                                          _preload_content=False, _request_timeout=timeout)
            lease = json.loads(resp.data)
        except _ApiFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - a 409 is a lost race, anything else a failed attempt
            status = api_status(exc)
            why = "another manager changed it first (409)" if status == 409 else _describe(exc)
            raise _ApiFailed(f"{what} the lease: {why}", status=status) from None
        self._lease = lease
        with self._lock:
            self._observed = self._record_of(lease, self._clock())

    @staticmethod
    def _record_of(lease: dict[str, Any], observed_at: float) -> LeaderRecord:
        spec = lease.get("spec") or {}
        annotations = (lease.get("metadata") or {}).get("annotations") or {}
        return LeaderRecord(
            holder_identity=spec.get("holderIdentity") or "",
            sync_address=annotations.get(SYNC_ADDRESS_ANNOTATION) or None,
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
            acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"), observed_at=observed_at)

    # -- reporting -----------------------------------------------------------------------

    def _note_error(self, why: str) -> None:
        """Log a failing attempt once per distinct error (not once per retry)."""
        if why != self._last_error:
            log.log(logging.WARNING if self._held else logging.INFO, "lease %s/%s: %s (retrying every %gs)",
                    self._s.namespace, self._s.name, why, self._s.retry_period)
        else:
            log.debug("lease %s/%s: %s", self._s.namespace, self._s.name, why)
        self._last_error = why

    def _report_leader(self) -> None:
        """on_new_leader (and a log line) when the observed holder or its sync address changed."""
        obs = self._observed
        if obs is None:
            return
        key = (obs.holder_identity, obs.sync_address)
        if key == self._reported:
            return
        self._reported = key
        if obs.holder_identity == self._s.identity:
            pass  # "acquired" says it
        elif obs.holder_identity:
            log.info("new leader observed on the lease %s/%s: %s at %s", self._s.namespace, self._s.name,
                     obs.holder_identity, obs.sync_address or "an unknown sync address")
        else:
            log.info("the lease %s/%s has no holder (released)", self._s.namespace, self._s.name)
        if self._on_new_leader is not None:
            self._on_new_leader(obs)
