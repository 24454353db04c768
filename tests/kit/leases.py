"""Leader election in tests: Lease clients (real and in-memory), a manual clock, electors run on threads.

- ``lease_api(control_plane, host=None)``: a CoordinationV1Api with no urllib3 retries (as the
  manager must build it), optionally through another HOST:PORT (a relay) to the same apiserver.
- ``FakeLeaseApi``: one namespace of Leases in memory with resourceVersion, 404 and 409 as the
  apiserver answers them; for the pure timing tests with ``FakeClock``.
- ``RunningElector``: a LeaderElector on its own thread, recording when (wall clock) it started
  and stopped leading and which leaders it saw.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from manager.leader_election import LeaderElector, LeaderRecord
from manager.settings import LeaseSettings


def lease_api(control_plane, *, host: str | None = None):
    """A CoordinationV1Api for the cluster; host (HOST:PORT) replaces the server's address."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(control_plane.kubeconfig), client_configuration=cfg)
    cfg.retries = False  # a timed-out renew must fail, not be sent again
    if host is not None:
        cfg.host = f"https://{host}"
    return client.CoordinationV1Api(client.ApiClient(cfg))


def parse_micro(value: str) -> float:
    """A MicroTime of the API as epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class _Response:
    data: bytes


@dataclass
class FakeLeaseApi:
    """CoordinationV1Api's three Lease calls over a dict; `fail` makes every call raise as a dead API would."""

    leases: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail: bool = False
    conflict_next_replace: bool = False
    timeouts: list[float] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    during_call: Any = None
    """Called with the call's name ("read", "create", "replace") inside it (a slow API, a racing writer)."""
    _rv: int = 0

    def _check(self, what: str, timeout: float) -> None:
        from kubernetes.client.exceptions import ApiException

        self.calls.append(what)
        self.timeouts.append(timeout)
        if self.during_call is not None:
            self.during_call(what)
        if self.fail:
            raise ApiException(status=0, reason="connection refused (fake)")

    def _stored(self, body: dict[str, Any]) -> _Response:
        self._rv += 1
        body = json.loads(json.dumps(body))
        body["metadata"]["resourceVersion"] = str(self._rv)
        self.leases[body["metadata"]["name"]] = body
        return _Response(json.dumps(body).encode())

    def read_namespaced_lease(self, name, namespace, *, _preload_content, _request_timeout):
        from kubernetes.client.exceptions import ApiException

        self._check("read", _request_timeout)
        if name not in self.leases:
            raise ApiException(status=404, reason="Not Found")
        return _Response(json.dumps(self.leases[name]).encode())

    def create_namespaced_lease(self, namespace, body, *, _preload_content, _request_timeout):
        from kubernetes.client.exceptions import ApiException

        self._check("create", _request_timeout)
        if body["metadata"]["name"] in self.leases:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._stored(body)

    def replace_namespaced_lease(self, name, namespace, body, *, _preload_content, _request_timeout):
        from kubernetes.client.exceptions import ApiException

        self._check("replace", _request_timeout)
        current = self.leases.get(name)
        if current is None:
            raise ApiException(status=404, reason="Not Found")
        if self.conflict_next_replace or body["metadata"].get("resourceVersion") != \
                current["metadata"]["resourceVersion"]:
            self.conflict_next_replace = False
            raise ApiException(status=409, reason="Conflict")
        return self._stored(body)

    def put_holder(self, name: str, holder: str, *, duration: int = 15, renew: str = "2000-01-01T00:00:00.000000Z",
                   transitions: int = 0) -> None:
        """Write a Lease as another elector (or a stranger) would have."""
        body = self.leases.get(name) or {"metadata": {"name": name, "namespace": "ns"}}
        body = {**body, "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                                 "acquireTime": renew, "renewTime": renew, "leaseTransitions": transitions}}
        self._stored(body)


def settings(identity: str, *, namespace: str = "ns", name: str = "edge-manager", lease: float = 15,
             renew: float = 10, retry: float = 2, address: str | None = None) -> LeaseSettings:
    """LeaseSettings for a test elector (sync address <identity>:7000 unless given)."""
    return LeaseSettings(namespace=namespace, name=name, identity=identity, lease_duration=lease,
                         renew_deadline=renew, retry_period=retry, sync_address=address or f"{identity}:7000")


class RunningElector:
    """A LeaderElector on a thread; started/stopped/leaders record wall-clock times of the callbacks."""

    def __init__(self, leases, s: LeaseSettings, **kw) -> None:
        self.settings = s
        self.started: list[float] = []
        self.stopped: list[float] = []
        self.stop_reasons: list[str] = []
        self.leaders: list[LeaderRecord] = []
        self.elector = LeaderElector(leases, s, on_started_leading=lambda: self.started.append(time.time()),
                                     on_stopped_leading=self._stopped, on_new_leader=self.leaders.append, **kw)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.elector.run, args=(self.stop_event,),
                                       name=f"elector-{s.identity}", daemon=True)

    def _stopped(self) -> None:
        self.stopped.append(time.time())
        self.stop_reasons.append(self.elector.stop_reason)

    def start(self) -> RunningElector:
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread without releasing the Lease (a crash, as far as the others can tell)."""
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), f"elector {self.settings.identity} did not stop"

    def release(self) -> bool:
        """Graceful stop: leadership ends, then the holder is cleared."""
        released = self.elector.release()
        self.thread.join(timeout=30)
        return released

    def is_leader(self) -> bool:
        return self.elector.is_leader()
