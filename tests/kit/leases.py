"""Leader election in tests: Lease clients (real and in-memory), a manual clock, electors run on threads.

- ``lease_api(control_plane, host=None, workdir=None)``: a CoordinationV1Api with no urllib3
  retries (as the manager must build it), optionally through another HOST:PORT (a relay) to the
  same apiserver.
- ``FakeLeaseApi``: one namespace of Leases in memory with resourceVersion, 404 and 409 as the
  apiserver answers them; for the pure timing tests with ``FakeClock``.
- ``RunningElector``: a LeaderElector on its own thread, recording when (wall clock) it started
  and stopped leading and which leaders it saw.
- ``build_clientgo_elector(dir)`` and ``ClientGoElector``: client-go's own LeaderElector as a
  process (tests/manager/clientgo_elector), for the differential test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from manager.leader_election import LeaderElector, LeaderRecord
from manager.settings import LeaseSettings

REPO = Path(__file__).resolve().parents[2]


def lease_api(control_plane, *, host: str | None = None, workdir: Path | None = None):
    """A CoordinationV1Api for the cluster; host (HOST:PORT) replaces the server's address (kubeconfig in workdir)."""
    from kubernetes import client, config

    kubeconfig = Path(control_plane.kubeconfig)
    if host is not None:  # a kubeconfig naming host: the client re-reads its server on every token refresh
        text = kubeconfig.read_text()
        assert control_plane.server in text, "the kubeconfig does not name the control plane's server"
        assert workdir is not None, "a kubeconfig through another host needs a workdir to write it in"
        kubeconfig = workdir / f"kubeconfig-via-{host.replace(':', '-')}.yaml"
        kubeconfig.write_text(text.replace(control_plane.server, f"https://{host}"))
        kubeconfig.chmod(0o600)
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.retries = False  # a timed-out renew must fail, not be sent again
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


def build_clientgo_elector(workdir: Path) -> Path:
    """Build tests/manager/clientgo_elector (client-go's LeaderElector) against tools/kube's pinned modules."""
    go = shutil.which("go")
    assert go, "the differential leader-election test needs Go (the control plane is built with it)"
    for f in ("go.mod", "go.sum"):  # the control plane's module: the same client-go, already downloaded
        shutil.copy(REPO / "tools" / "kube" / f, workdir / f)
    (workdir / "elector").mkdir(exist_ok=True)
    shutil.copy(REPO / "tests" / "manager" / "clientgo_elector" / "main.go", workdir / "elector" / "main.go")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOWORK": "off", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    out = subprocess.run([go, "build", "-trimpath", "-o", str(workdir / "elector.bin"), "./elector"],
                         cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir / "elector.bin"


class ClientGoElector:
    """The client-go elector as a process; lines holds (its output line) as it prints them."""

    def __init__(self, binary: Path, *, kubeconfig: Path, s: LeaseSettings, log_path: Path) -> None:
        self.settings = s
        self.lines: list[str] = []
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [str(binary), f"--kubeconfig={kubeconfig}", f"--namespace={s.namespace}", f"--name={s.name}",
             f"--identity={s.identity}", f"--lease-duration={s.lease_duration}s",
             f"--renew-deadline={s.renew_deadline}s", f"--retry-period={s.retry_period}s"],
            stdout=subprocess.PIPE, stderr=self._log, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def times(self, kind: str) -> list[float]:
        """Unix times of its "started" or "stopped" lines."""
        return [float(line.split()[1]) for line in list(self.lines) if line.startswith(kind + " ")]

    def leading(self) -> bool:
        """Whether it printed started and not (yet) stopped."""
        return len(self.times("started")) > len(self.times("stopped"))

    def terminate(self) -> None:
        """SIGTERM: client-go cancels its context and releases the Lease (ReleaseOnCancel)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL: a crash; the Lease is left to expire."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._log.close()
