"""The manager's own Pod label edge.k8s.io/manager-role=leader|standby, so a Service can select the leader.

Owns the label's name and values and the merge patch that sets it (only that label: the
Pod's other metadata is left alone). Patches on its own thread, so the leader elector's
callbacks never wait on the API; the newest role asked for wins. A failure is logged once
per distinct error and retried with backoff, never fatal: without the label the leader
Service has no endpoint, and agents' address lists still find the leader (a standby
answers "not the leader" with its address). Builds no client (main does); must not import
grpc or the agent.
"""

from __future__ import annotations

import enum
import json
import threading
import time
from typing import Any, Protocol

from loguru import logger

from edgecommon.backoff import AROUND, Backoff, ErrorStreak

ROLE_LABEL = "edge.k8s.io/manager-role"
_MERGE_PATCH = "application/merge-patch+json"
_TIMEOUT = (5, 15)  # (connect, read) seconds: a hung API server must not hold the labeller for long
_STOP_POLL_SECONDS = 1.0  # how soon run() notices `stop` while it has nothing to do


class Role(enum.Enum):
    """The manager's role, as the label says it (a Service selects `leader`)."""

    LEADER = "leader"
    STANDBY = "standby"


class PodPatchApi(Protocol):
    """What the labeller calls of kubernetes.client.CoreV1Api."""

    def patch_namespaced_pod(self, name: str, namespace: str, body: Any, *, _content_type: str,
                             _preload_content: bool, _request_timeout: tuple[int, int]) -> Any: ...


def role_patch(role: Role) -> dict[str, Any]:
    """The merge patch that sets the label and nothing else."""
    return {"metadata": {"labels": {ROLE_LABEL: role.value}}}


def describe_failure(exc: Exception) -> str:
    """One line for a failed patch: the HTTP status and the API's own message when it answered."""
    from kubernetes.client.exceptions import ApiException  # only the manager process pays for the import

    if isinstance(exc, ApiException):
        message = ""
        try:
            message = str(json.loads(exc.body or b"{}").get("message") or "")
        except (ValueError, AttributeError):
            pass
        return f"HTTP {exc.status} {exc.reason}" + (f": {message}" if message else "")
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class PodRoleLabel:
    """Keeps the label of one Pod (the manager's own) equal to the role last asked for; thread-safe."""

    def __init__(self, api: PodPatchApi, *, namespace: str, name: str,
                 backoff: Backoff | None = None) -> None:
        self._api = api
        self.namespace = namespace
        self.name = name
        self._backoff = backoff or Backoff(initial=1.0, maximum=60.0, jitter=AROUND)
        self._streak = ErrorStreak()
        self._lock = threading.Lock()
        self._wanted: Role | None = None
        self._labelled: Role | None = None  # what the last successful patch wrote
        self._changed = threading.Event()
        self.patches = 0  # successful patches (for tests and metrics)
        self.failures = 0  # failed patches

    @property
    def pod(self) -> str:
        """namespace/name, as log lines name the Pod."""
        return f"{self.namespace}/{self.name}"

    @property
    def labelled(self) -> Role | None:
        """The role the Pod's label is known to carry (None until a patch succeeded)."""
        with self._lock:
            return self._labelled

    def set(self, role: Role) -> None:
        """Label the Pod with `role` soon; returns at once (safe on the elector's thread)."""
        with self._lock:
            self._wanted = role
        self._changed.set()

    def run(self, stop: threading.Event) -> None:
        """Thread body: patch whenever the wanted role differs from the labelled one, retrying failures."""
        retry_at: float | None = None  # monotonic time of the next retry of a failed patch
        attempted: Role | None = None  # the role of the last patch tried
        while not stop.is_set():
            timeout = _STOP_POLL_SECONDS if retry_at is None else min(
                max(0.0, retry_at - time.monotonic()), _STOP_POLL_SECONDS)
            self._changed.wait(timeout)
            if stop.is_set():
                return
            self._changed.clear()
            with self._lock:
                wanted, labelled = self._wanted, self._labelled
            if wanted is None or wanted == labelled:
                retry_at = None
                continue
            if retry_at is not None and time.monotonic() < retry_at and wanted == attempted:
                continue  # the retry is not due (a new role is tried at once)
            attempted = wanted
            retry_at = None if self._patch(wanted) else time.monotonic() + self._backoff.next()

    def _patch(self, role: Role) -> bool:
        """One merge patch; True when it succeeded."""
        try:
            self._api.patch_namespaced_pod(self.name, self.namespace, role_patch(role), _content_type=_MERGE_PATCH,
                                           _preload_content=False, _request_timeout=_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 (never fatal: the leader is found without the label too)
            self.failures += 1
            self._failed(role, describe_failure(exc))
            return False
        with self._lock:
            self._labelled = role
        self.patches += 1
        self._backoff.reset()
        failures, error, _ = self._streak.cleared()
        if failures:
            logger.info("labelled Pod {} {}={} after {} failed attempt(s); the last error: {}",
                        self.pod, ROLE_LABEL, role.value, failures, error)
        else:
            logger.info("labelled Pod {} {}={}", self.pod, ROLE_LABEL, role.value)
        return True

    def _failed(self, role: Role, error: str) -> None:
        """One warning per distinct error; repeats go to debug."""
        new, previous_repeats = self._streak.failed(error)
        if previous_repeats:
            logger.warning("labelling Pod {}: the previous error repeated {} more time(s)", self.pod,
                           previous_repeats)
        if new:
            logger.warning("could not label Pod {} {}={}: {} (retrying with backoff; a Service selecting the "
                           "leader has no endpoint here meanwhile, agents find the leader through their "
                           "--sync-server addresses)", self.pod, ROLE_LABEL, role.value, error)
        else:
            logger.debug("could not label Pod {} {}={} again: {}", self.pod, ROLE_LABEL, role.value, error)
