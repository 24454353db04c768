"""Certificate rotation: renew the node's certificate at 70-90% of its lifetime, as kubelet's certificate manager does.

Owns the schedule (client-go util/certificate's nextRotationDeadline: notBefore + lifetime x
(0.7 + 0.2 x uniform jitter), so nodes that joined together do not renew together) and the
thread that renews over the current identity, replaces agent.pem in one rename and retries a
failure with backoff, one log line per distinct error. The sync client picks the new files up
at its next connection: the live stream is never interrupted. Must not import manager or grpc.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loguru import logger

from edgecommon.backoff import Backoff, ErrorStreak
from agent.join_settings import JoinSettings
from agent.joining import JoinError, join, renew, stored_identity
from agent.pki import Identity, write_renewed

ROTATION_START = 0.7  # kubelet: jitteryDuration = Jitter(lifetime, 0.2) - 0.3 x lifetime
ROTATION_JITTER = 0.2
RETRY_INITIAL_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0  # a failing renewal is tried at least once a minute
ATTEMPT_SECONDS = 60.0  # one renewal attempt (renewals are approved at once): then its failure is logged and retried
LONGEST_SLEEP_SECONDS = 300.0  # the deadline is wall-clock: look again after a suspend or a clock step


def _now() -> datetime:
    return datetime.now(UTC)


def rotation_deadline(identity: Identity, *, received: datetime | None = None,
                      rng: Callable[[], float] = random.random) -> datetime:
    """When to renew: a uniformly jittered point between 70% and 90% of the certificate's lifetime.

    The lifetime counts from notBefore, or from when the certificate was `received` if that is
    later: kube's signer backdates notBefore 5 minutes, which would put a short certificate's
    70-90% at or just after its arrival and renew it in a loop.
    """
    start = identity.not_before if received is None else max(identity.not_before, received)
    fraction = ROTATION_START + ROTATION_JITTER * rng()
    return start + (identity.not_after - start) * fraction


class Renewer:
    """A thread keeping <data-dir>/pki/agent.pem renewed before it expires."""

    def __init__(self, settings: JoinSettings, *, node: str, data_dir: Path, identity: Identity,
                 received: datetime | None = None, rng: Callable[[], float] = random.random,
                 now: Callable[[], datetime] = _now) -> None:
        self.settings = settings
        self.node = node
        self.data_dir = data_dir
        self.identity = identity
        self._received = received  # when `identity` was issued to this process; None: read from disk
        self.renewals = 0  # certificates renewed by this process
        self._rng = rng
        self._now = now
        self._backoff = Backoff(initial=RETRY_INITIAL_SECONDS, maximum=RETRY_MAX_SECONDS, rng=rng)
        self._streak = ErrorStreak()
        self._said_expired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="certificate-renewer", daemon=True)

    def expires_at(self) -> float:
        """When the current certificate expires, as Unix time (the agent's metric)."""
        return self.identity.not_after.timestamp()

    def start(self) -> Renewer:
        """Start renewing in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop at the next wake-up; a renewal under way finishes or is abandoned whole (agent.pem is one rename)."""
        self._stop.set()

    def _run(self) -> None:
        deadline = self._schedule()
        while True:
            wait = min(LONGEST_SLEEP_SECONDS, max(0.0, (deadline - self._now()).total_seconds()))
            if self._stop.wait(wait):
                return
            if self._now() < deadline:
                continue
            try:
                self.renew_once()
            except Exception as exc:  # noqa: BLE001 (a JoinError, or a bug: the thread must outlive one attempt)
                deadline = self._failed(exc)
                continue
            deadline = self._schedule()

    def _schedule(self) -> datetime:
        deadline = rotation_deadline(self.identity, received=self._received, rng=self._rng)
        logger.info("certificate of node {} valid until {}; renewing it at {}", self.node,
                    self.identity.not_after.isoformat(), deadline.isoformat())
        return deadline

    def renew_once(self) -> Identity:
        """Ask for a new certificate over the current one and store it; raises JoinError."""
        pem, identity = renew(self.settings, node=self.node, data_dir=self.data_dir,
                              deadline=time.monotonic() + min(self.settings.timeout, ATTEMPT_SECONDS), now=self._now)
        try:
            write_renewed(self.data_dir, pem)
        except OSError as exc:
            raise JoinError(f"cannot store the renewed certificate in {self.data_dir}: {exc.strerror or exc}") from None
        self.identity, self._received = identity, self._now()
        self.renewals += 1
        self._backoff.reset()
        self._said_expired = False
        failures, error, _ = self._streak.cleared()
        if failures:
            logger.info("renewing the certificate works again after {} failed attempt(s); the last error: {}",
                        failures, error)
        logger.info("renewed the certificate of node {} (serial {:x})", self.node, identity.serial)
        return identity

    def _failed(self, exc: Exception) -> datetime:
        """Log once per distinct error, say once that the certificate expired; when to try again."""
        error = str(exc) if isinstance(exc, JoinError) else f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        delay = self._backoff.next()
        new, repeats = self._streak.failed(error)
        if repeats:
            logger.warning("certificate renewal: the previous error repeated {} more time(s)", repeats)
        if new:
            logger.warning("certificate renewal failed: {}; retrying with backoff up to {:g}s (repeats of this "
                           "error are not logged)", error, RETRY_MAX_SECONDS)
        if not self._said_expired and self._now() >= self.identity.not_after:
            self._said_expired = True
            logger.error("the certificate of node {} expired at {}: new connections to the manager fail until a "
                         "renewal succeeds; the node keeps its pods from the replica meanwhile",
                         self.node, self.identity.not_after.isoformat())
        return self._now() + timedelta(seconds=delay)


def start_renewing(settings: JoinSettings, *, node: str, data_dir: Path,
                   submitted: Callable[[], None] = lambda: None) -> Renewer:
    """The node's identity (the stored one, or a new one by joining: JoinError if that fails), kept renewed."""
    identity, received = stored_identity(settings, node=node, data_dir=data_dir), None
    if identity is None:
        identity, received = join(settings, node=node, data_dir=data_dir, submitted=submitted), _now()
    return Renewer(settings, node=node, data_dir=data_dir, identity=identity, received=received).start()
