"""The manager's seam to the kubernetes client: the few methods it calls, and its two kinds of writes.

Owns the Protocols of the client objects main builds (CoreV1Api, CustomObjectsApi,
EventsV1Api, CoordinationV1Api: only the methods used), the EdgeNode resource's coordinates, and the writes
of EdgeNode status and Events, whose API errors become the exceptions status.py and
events.py understand. Builds no clients (main does); must not import grpc or the agent.
"""

from __future__ import annotations

from typing import Any, Protocol

from manager.events import EventNotFound
from manager.status import Conflict, NotFound
from manager.watching import ListFn

GROUP, VERSION, PLURAL = "edge.k8s.io", "v1alpha1", "edgenodes"
_TIMEOUT = (5, 15)  # (connect, read) seconds of one write: a hung API server must not hold a writer thread
_MERGE_PATCH = "application/merge-patch+json"


class CoreApi(Protocol):
    """What the manager calls of kubernetes.client.CoreV1Api: list+watch of namespaces and mirror pods."""

    @property
    def list_namespace(self) -> ListFn: ...

    @property
    def list_namespaced_pod(self) -> ListFn: ...

    @property
    def list_pod_for_all_namespaces(self) -> ListFn: ...


class CustomObjectsApi(Protocol):
    """What the manager calls of kubernetes.client.CustomObjectsApi: list+watch of EdgeNodes, their status."""

    @property
    def list_namespaced_custom_object(self) -> ListFn: ...

    @property
    def list_cluster_custom_object(self) -> ListFn: ...

    def patch_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any, *,
        _content_type: str, _request_timeout: tuple[int, int],
    ) -> Any: ...


class EventsApi(Protocol):
    """What the manager calls of kubernetes.client.EventsV1Api."""

    def create_namespaced_event(self, namespace: str, body: Any, *, _preload_content: bool,
                                _request_timeout: tuple[int, int]) -> Any: ...

    def patch_namespaced_event(self, name: str, namespace: str, body: Any, *, _preload_content: bool,
                               _content_type: str, _request_timeout: tuple[int, int]) -> Any: ...


class LeaseApi(Protocol):
    """What leader election calls of kubernetes.client.CoordinationV1Api (raw JSON: _preload_content=False).

    _request_timeout is a total in seconds, derived from the renew deadline; build the client with
    Configuration.retries = False, or urllib3 retries a timed-out PUT and multiplies the bound.
    """

    def read_namespaced_lease(self, name: str, namespace: str, *, _preload_content: bool,
                              _request_timeout: float) -> Any: ...

    def create_namespaced_lease(self, namespace: str, body: Any, *, _preload_content: bool,
                                _request_timeout: float) -> Any: ...

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, *, _preload_content: bool,
                                 _request_timeout: float) -> Any: ...


def api_status(exc: Exception) -> int | None:
    """The HTTP status of a kubernetes client error (0: no response); None for any other error."""
    return _status_code(exc)


def _status_code(exc: Exception) -> int | None:
    """The HTTP status of a kubernetes client error; None for any other error."""
    from kubernetes.client.exceptions import ApiException  # only the manager process pays for the import

    return exc.status if isinstance(exc, ApiException) else None


class StatusPatcher:
    """status.PatchFn over the API: a merge patch of an EdgeNode's status subresource (on a worker thread)."""

    def __init__(self, api: CustomObjectsApi) -> None:
        self._api = api

    def __call__(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Write; raises NotFound (404) or Conflict (409), anything else as the client raised it."""
        try:
            self._api.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, _content_type=_MERGE_PATCH, _request_timeout=_TIMEOUT)
        except Exception as exc:
            code = _status_code(exc)
            if code == 404:
                raise NotFound(f"{namespace}/{name}") from None
            if code == 409:
                raise Conflict(f"{namespace}/{name}") from None
            raise


class ApiEventSink:
    """events.EventSink over events.k8s.io/v1 (called on the event recorder's worker thread)."""

    def __init__(self, api: EventsApi) -> None:
        self._api = api

    def create(self, namespace: str, body: dict[str, Any]) -> None:
        """Create an Event."""
        self._api.create_namespaced_event(namespace, body, _preload_content=False, _request_timeout=_TIMEOUT)

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Merge-patch an Event (its series); raises EventNotFound when it expired."""
        try:
            self._api.patch_namespaced_event(name, namespace, body, _preload_content=False,
                                             _content_type=_MERGE_PATCH, _request_timeout=_TIMEOUT)
        except Exception as exc:
            if _status_code(exc) == 404:
                raise EventNotFound(f"{namespace}/{name}") from None
            raise
