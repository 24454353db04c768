"""A local Kubernetes control plane (etcd + kube-apiserver) for development and tests.

No scheduler or controller-manager: only the API, and on request hollow kubelets
(kubemark, ``tools/hollow_kubelet.py``) that run edge nodes' static pods in a fake
runtime. Everything listens on 127.0.0.1 at free ports, all state lives in one directory,
and the binaries are the ones ``tools/build-control-plane.sh`` builds at pinned versions.

Library use (what ``tests/conftest.py`` does)::

    with ControlPlane() as cp:            # builds binaries if needed, starts, waits for /readyz
        cp.kubectl("get", "ns")
        cp.kill_apiserver(); cp.restart_apiserver()
        cp.compact_etcd()
        k = cp.start_hollow_kubelet("edge01")   # Node edge01 Ready; k.static_pod_dir for its agent
        k.restart(); k.kill()

By hand::

    python -m tools.controlplane up [--foreground] [--state-dir DIR] [--hollow-kubelet edge01[=DIR]]
    eval "$(python -m tools.controlplane env)"; kubectl get ns
    python -m tools.controlplane down

Identity: a static token (``--token-auth-file``) for user ``admin`` in ``system:masters``;
authorization is RBAC only, so RBAC tests mean something. Service-account tokens work
(``kubectl create token``): the signing key flags are set.

Clean-up: ``stop()`` sends SIGTERM to each child's process group, then SIGKILL. Children
started by a library ``ControlPlane`` (and by ``up --foreground``) get PR_SET_PDEATHSIG =
SIGKILL, so they die with the thread that started them even if it is SIGKILLed; atexit
and SIGTERM/SIGHUP handlers stop them on ordinary exits. ``up`` without ``--foreground``
detaches them on purpose; ``down`` stops them from the pids in ``state.json``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import ctypes
import json
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tools.hollow_kubelet import HollowKubelet, HollowKubeletError

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "tools" / "build-control-plane.sh"
DEFAULT_STATE_DIR = REPO / ".demo" / "controlplane"
ADMIN_USER = "admin"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ControlPlaneError(RuntimeError):
    pass


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def build_binaries() -> Path:
    """Run tools/build-control-plane.sh (a fast no-op when cached); return the bin dir."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_established(kubectl, name: str = "edgenodes.edge.k8s.io", timeout: float = 60) -> None:
    """`kubectl wait` for a CRD to be Established, also in the moment before its status has conditions.

    (kubectl wait fails at once with "accessor error: <nil>" then; the EdgeNode CRD's large
    generated schema makes that moment longer.) `kubectl` is a ControlPlane.kubectl-like callable.
    """
    deadline = time.monotonic() + timeout
    while True:
        res = kubectl("wait", "--for=condition=established", f"--timeout={int(timeout)}s", f"crd/{name}",
                      check=time.monotonic() > deadline)
        if res.returncode == 0:
            return
        time.sleep(0.2)


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """True if pid runs (zombies count as dead) and, given a marker, its cmdline contains it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        if marker is not None:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            return marker.encode() in cmdline
        return True
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _terminate(pid: int, marker: str, proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM the process group of pid, then SIGKILL after timeout; reap if it is our child."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        if not pid_alive(pid, marker):
            break
        try:
            os.killpg(pid, sig)  # children run in their own session: pgid == pid
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            if proc is None and not pid_alive(pid, marker):
                break
            time.sleep(0.05)
    if proc is not None:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _run(cmd: list[str], **kw) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def _make_pki(d: Path) -> None:
    """CA, a serving certificate for 127.0.0.1/localhost, and the service-account key pair."""
    d.mkdir(parents=True, exist_ok=True)
    if (d / "apiserver.crt").exists():
        return
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
          "-subj", "/CN=k8s-edge-local-ca", "-keyout", d / "ca.key", "-out", d / "ca.crt",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"])
    _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
          "-keyout", d / "apiserver.key", "-out", d / "apiserver.csr"])
    (d / "apiserver.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,IP:10.0.0.1\n")
    _run(["openssl", "x509", "-req", "-in", d / "apiserver.csr", "-CA", d / "ca.crt",
          "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "3650",
          "-extfile", d / "apiserver.ext", "-out", d / "apiserver.crt"])
    _run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
          "-out", d / "sa.key"])
    _run(["openssl", "pkey", "-in", d / "sa.key", "-pubout", "-out", d / "sa.pub"])
    for f in d.glob("*.key"):
        f.chmod(0o600)


# Every running ControlPlane of this process, stopped at exit or on SIGTERM/SIGHUP.
_running: set["ControlPlane"] = set()
_handlers_installed = False


def _stop_all() -> None:
    for cp in list(_running):
        try:
            cp.stop()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            print(f"controlplane: stop failed: {e}", file=sys.stderr)


def _install_exit_handlers() -> None:
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)
        if previous not in (signal.SIG_DFL, None):
            continue  # someone else handles it; atexit still runs if they exit normally

        def handler(signum, frame, _sig=sig):
            _stop_all()
            signal.signal(_sig, signal.SIG_DFL)
            os.kill(os.getpid(), _sig)

        signal.signal(sig, handler)


class ControlPlane:
    """etcd + kube-apiserver on loopback. See the module docstring."""

    def __init__(
        self,
        state_dir: str | os.PathLike | None = None,
        *,
        bin_dir: str | os.PathLike | None = None,
        etcd_compaction_interval: str | None = None,
        extra_apiserver_args: list[str] | tuple[str, ...] = (),
        pdeathsig: bool = True,
        ready_timeout: float = 90.0,
        token: str | None = None,
    ) -> None:
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="k8s-edge-cp-")).resolve()
        self.bin_dir = Path(bin_dir) if bin_dir else None
        self.etcd_compaction_interval = etcd_compaction_interval or os.environ.get(
            "K8S_EDGE_ETCD_COMPACTION_INTERVAL", "5m")
        self.extra_apiserver_args = list(extra_apiserver_args) + shlex.split(
            os.environ.get("K8S_EDGE_APISERVER_ARGS", ""))
        self.pdeathsig = pdeathsig
        self.ready_timeout = ready_timeout
        self.token = token or base64.b32encode(os.urandom(20)).decode().lower()
        self.etcd_port = self.etcd_peer_port = self.apiserver_port = 0
        self.etcd: subprocess.Popen | None = None
        self.apiserver: subprocess.Popen | None = None
        self.kubelets: dict[str, HollowKubelet] = {}

    # -- paths and addresses -------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    @property
    def kubectl_path(self) -> Path:
        assert self.bin_dir is not None
        return self.bin_dir / "kubectl"

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in (("etcd", self.etcd), ("kube-apiserver", self.apiserver))
                if p is not None and p.poll() is None}

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "ControlPlane":
        if self.bin_dir is None:
            self.bin_dir = build_binaries()
        _make_pki(self.state_dir / "pki")
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        tokens = self.state_dir / "tokens.csv"
        tokens.write_text(f'{self.token},{ADMIN_USER},{ADMIN_USER}-uid,"system:masters"\n')
        tokens.chmod(0o600)
        _install_exit_handlers()
        _running.add(self)
        try:
            for attempt in range(3):  # a free port can be taken between probe and bind
                self.etcd_port, self.etcd_peer_port = free_port(), free_port()
                self.etcd = self._spawn("etcd", self._etcd_cmd())
                try:
                    self._wait(lambda: self._http_ok(self.etcd_url + "/health"), self.etcd, "etcd", 30)
                    break
                except ControlPlaneError:
                    self._stop_proc("etcd")
                    if attempt == 2:
                        raise
            self.apiserver_port = free_port()
            self.start_apiserver()
            self._write_kubeconfig()
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        for k in self.kubelets.values():
            k.kill()
        self._stop_proc("kube-apiserver", timeout)
        self._stop_proc("etcd", timeout)
        _running.discard(self)
        state = self.state_dir / "state.json"
        if state.exists():
            state.unlink()

    def cleanup(self) -> None:
        """Stop and, if the state directory was a temporary one, remove it."""
        self.stop()
        if self._own_state_dir:
            subprocess.run(["rm", "-rf", str(self.state_dir)], check=False)

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def start_apiserver(self) -> None:
        if self.apiserver is not None and self.apiserver.poll() is None:
            raise ControlPlaneError("kube-apiserver is already running")
        self.apiserver = self._spawn("kube-apiserver", self._apiserver_cmd())
        self.wait_ready()

    def kill_apiserver(self) -> None:
        """SIGKILL kube-apiserver (a crash, not a shutdown) and reap it."""
        if self.apiserver is not None and self.apiserver.poll() is None:
            os.killpg(self.apiserver.pid, signal.SIGKILL)
            self.apiserver.wait(timeout=10)

    def restart_apiserver(self, kill: bool = True) -> None:
        """Stop kube-apiserver (SIGKILL if kill, else SIGTERM) and start it on the same port."""
        if kill:
            self.kill_apiserver()
        else:
            self._stop_proc("kube-apiserver")
        self.start_apiserver()
        self._write_state()

    def wait_ready(self, timeout: float | None = None) -> None:
        self._wait(lambda: self._http_ok(self.server + "/readyz", tls=True), self.apiserver,
                   "kube-apiserver", timeout or self.ready_timeout)

    def start_hollow_kubelet(self, node: str, *, static_pod_dir: str | os.PathLike | None = None,
                             wait_ready: bool = True, timeout: float = 60.0) -> HollowKubelet:
        """Start (or restart) a hollow kubelet for node, reading static pods from static_pod_dir.

        Default folder: <state dir>/kubelets/<node>/static-pods. Stopped with the control plane."""
        if self.bin_dir is None:
            raise ControlPlaneError("start the control plane first")
        k = self.kubelets.get(node)
        if k is None or (static_pod_dir is not None and Path(static_pod_dir).resolve() != k.static_pod_dir):
            if k is not None:
                k.kill()
            k = HollowKubelet(node, kubemark=self.bin_dir / "kubemark", kubeconfig=self.kubeconfig,
                              static_pod_dir=Path(static_pod_dir or self.state_dir / "kubelets" / node / "static-pods"),
                              log_path=self.state_dir / "logs" / f"kubelet-{node}.log", kubectl=self.kubectl,
                              pdeathsig=self.pdeathsig)
            self.kubelets[node] = k
        k.kill()
        k.start(wait_ready=wait_ready, timeout=timeout)
        self._write_state()
        return k

    # -- operations ----------------------------------------------------------------------
    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig),
               "--cache-dir", str(self.state_dir / "kubectl-cache"), *map(str, args)]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise KubectlError(res.returncode, cmd, res.stdout, res.stderr)
        return res

    def etcd_request(self, path: str, body: dict) -> dict:
        """POST to etcd's v3 JSON gateway, e.g. etcd_request("/v3/maintenance/status", {})."""
        req = urllib.request.Request(self.etcd_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")

    def etcd_revision(self) -> int:
        return int(self.etcd_request("/v3/maintenance/status", {})["header"]["revision"])

    def compact_etcd(self, revision: int | None = None) -> int:
        """Compact etcd's history up to revision (default: the current one); return it.

        With the watch cache on (the default) the apiserver keeps serving watches and even
        exact lists from older resourceVersions out of its cache: they get 410 Gone only
        after ``restart_apiserver()`` (the cache restarts at the current revision) or with
        ``--watch-cache=false``, where etcd serves them."""
        rev = revision or self.etcd_revision()
        try:
            self.etcd_request("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            if "compacted" not in body:  # already compacted at or past rev: fine
                raise ControlPlaneError(f"etcd compaction failed: {e} {body}") from e
        return rev

    def api_client(self):
        """A kubernetes.client.ApiClient for this cluster (imports the kubernetes package)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig), "K8S_EDGE_SERVER": self.server,
                "K8S_EDGE_TOKEN": self.token, "K8S_EDGE_ETCD_URL": self.etcd_url,
                "K8S_EDGE_BIN": str(self.bin_dir), "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}"}

    # -- internals -----------------------------------------------------------------------
    def _etcd_cmd(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        return [str(self.bin_dir / "etcd"), "--name=default",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}", "--log-level=warn",
                "--unsafe-no-fsync=true", "--quota-backend-bytes=2147483648"]

    def _apiserver_cmd(self) -> list[str]:
        pki = self.state_dir / "pki"
        return [str(self.bin_dir / "kube-apiserver"),
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--etcd-servers={self.etcd_url}",
                f"--etcd-compaction-interval={self.etcd_compaction_interval}",
                f"--token-auth-file={self.state_dir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                *self.extra_apiserver_args]

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.state_dir / "logs" / f"{name}.log", "ab")
        try:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=self.state_dir,
                                    preexec_fn=_set_pdeathsig if self.pdeathsig else None)
        finally:
            log.close()

    def _stop_proc(self, name: str, timeout: float = 15.0) -> None:
        attr = "apiserver" if name == "kube-apiserver" else "etcd"
        proc = getattr(self, attr)
        if proc is not None:
            _terminate(proc.pid, str(self.state_dir), proc, timeout)
            setattr(self, attr, None)

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _http_ok(self, url: str, tls: bool = False) -> bool:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"} if tls else {})
        try:
            with urllib.request.urlopen(req, timeout=5, context=self._ssl_context() if tls else None) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return False

    def _wait(self, ok, proc: subprocess.Popen | None, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is None or proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited (rc={proc and proc.returncode}):\n{self._log_tail(name)}")
            if ok():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} not ready after {timeout}s:\n{self._log_tail(name)}")

    def _log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join((self.state_dir / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _write_kubeconfig(self) -> None:
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "k8s-edge", "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": ADMIN_USER, "user": {"token": self.token}}],
            "contexts": [{"name": "k8s-edge", "context": {"cluster": "k8s-edge", "user": ADMIN_USER,
                                                          "namespace": "default"}}],
            "current-context": "k8s-edge",
        }, indent=2))
        self.kubeconfig.chmod(0o600)

    def _write_state(self) -> None:
        (self.state_dir / "state.json").write_text(json.dumps({
            "pids": self.pids, "server": self.server, "etcd_url": self.etcd_url, "token": self.token,
            "kubeconfig": str(self.kubeconfig), "bin_dir": str(self.bin_dir),
            "launcher_pid": os.getpid(),
            "kubelets": {n: {"pid": k.pid, "static_pod_dir": str(k.static_pod_dir),
                             "root_dir": str(k.root_dir) if k.root_dir else None,
                             "runtime_socket": str(k.runtime_socket() or "") or None}
                         for n, k in self.kubelets.items() if k.running},
        }, indent=2))


# -- command line ------------------------------------------------------------------------
def _load_state(state_dir: Path) -> dict:
    try:
        return json.loads((state_dir / "state.json").read_text())
    except FileNotFoundError:
        return {}


def down(state_dir: Path, timeout: float = 15.0) -> bool:
    """Stop the processes recorded in state_dir/state.json; True if anything was running."""
    state = _load_state(state_dir)
    pids = state.get("pids", {})
    for k in state.get("kubelets", {}).values():
        _terminate(k["pid"], str(state_dir), None, timeout)
        if k.get("runtime_socket"):  # kubemark's fake CRI runtime leaves it in /tmp
            Path(k["runtime_socket"]).unlink(missing_ok=True)
        if k.get("root_dir"):  # kubemark's /tmp/hollow-kubelet.* (the static-pod symlink, not the folder)
            subprocess.run(["rm", "-rf", k["root_dir"]], check=False)
    for name in ("kube-apiserver", "etcd"):
        if name in pids:
            _terminate(pids[name], str(state_dir), None, timeout)
    (state_dir / "state.json").unlink(missing_ok=True)
    return bool(pids)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.controlplane", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["up", "down", "env", "status"])
    p.add_argument("--state-dir", type=Path,
                   default=Path(os.environ.get("K8S_EDGE_STATE_DIR", DEFAULT_STATE_DIR)))
    p.add_argument("--foreground", action="store_true",
                   help="up: stay in the foreground; Ctrl-C, SIGTERM or the death of this process stops all")
    p.add_argument("--etcd-compaction-interval", default=None, help="kube-apiserver flag (default 5m)")
    p.add_argument("--apiserver-arg", action="append", default=[], help="extra kube-apiserver flag")
    p.add_argument("--hollow-kubelet", action="append", default=[], metavar="NODE[=DIR]",
                   help="up: also run a hollow kubelet (kubemark) for NODE reading static pods from DIR "
                        "(default <state-dir>/kubelets/NODE/static-pods); repeatable")
    a = p.parse_args(argv)
    sd = a.state_dir.resolve()

    if a.command == "down":
        print("stopped" if down(sd) else "nothing running", file=sys.stderr)
        return 0
    if a.command in ("env", "status"):
        st = _load_state(sd)
        alive = {n: pid for n, pid in st.get("pids", {}).items() if pid_alive(pid, str(sd))}
        if not st or len(alive) < 2:
            print(f"control plane in {sd} is not running {alive or ''}", file=sys.stderr)
            return 1
        if a.command == "status":
            print(json.dumps({**st, "alive": alive}, indent=2))
        else:
            print(f"export KUBECONFIG={shlex.quote(st['kubeconfig'])}")
            print(f"export PATH={shlex.quote(st['bin_dir'])}:\"$PATH\"")
            print(f"export K8S_EDGE_ETCD_URL={shlex.quote(st['etcd_url'])}")
        return 0

    # up
    if _load_state(sd).get("pids"):
        down(sd)  # a stale or running previous instance in the same directory
    sd.mkdir(parents=True, exist_ok=True)
    cp = ControlPlane(sd, etcd_compaction_interval=a.etcd_compaction_interval,
                      extra_apiserver_args=a.apiserver_arg, pdeathsig=a.foreground)
    for spec in a.hollow_kubelet:
        if not spec.partition("=")[0]:
            print(f"controlplane: --hollow-kubelet {spec!r}: no node name (NODE or NODE=DIR)", file=sys.stderr)
            return 2
    cp.start()
    try:
        for spec in a.hollow_kubelet:
            node, _, folder = spec.partition("=")
            k = cp.start_hollow_kubelet(node, static_pod_dir=Path(folder).resolve() if folder else None)
            print(f"hollow kubelet {node}: Node Ready, static pods from {k.static_pod_dir}, pid {k.pid}, "
                  f"log {k.log_path}", file=sys.stderr)
    except HollowKubeletError as e:
        cp.stop()
        print(f"controlplane: {e}", file=sys.stderr)
        return 1
    except BaseException:
        cp.stop()
        raise
    print(f"kube-apiserver {cp.server}  etcd {cp.etcd_url}  pids {cp.pids}", file=sys.stderr)
    print(f"export KUBECONFIG={shlex.quote(str(cp.kubeconfig))}")
    print(f"export PATH={shlex.quote(str(cp.bin_dir))}:\"$PATH\"")
    sys.stdout.flush()
    if not a.foreground:
        _running.discard(cp)  # detached: leave it running for `down`
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if (cp.etcd is None or cp.etcd.poll() is not None or cp.apiserver is None or cp.apiserver.poll() is not None
                or any(not k.running for k in cp.kubelets.values())):
            print("a control-plane process exited; stopping", file=sys.stderr)
            break
    cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
