"""A hollow kubelet for one edge node: kubemark's `--morph=kubelet` (real kubelet code, fake CRI runtime).

It registers a Node, reads static-pod manifests from a folder, "runs" their containers in
kubemark's fake runtime and publishes mirror pods `<pod>-<node>` that turn Running, so the
last hop (manifest -> kubelet -> mirror pod) is exercised without containers or root-only
host changes (stub container manager, fake mounter/OOM adjuster, fake image service).

The static-pod folder: kubemark builds its kubelet configuration itself
(pkg/kubemark/hollow_kubelet.go, `GetHollowKubeletConfig`) with a fresh
`/tmp/hollow-kubelet.*/static-pods*` directory and no flag to change it. A real kubelet
keeps its `staticPodPath` across restarts, so the agent gets a stable folder and each
kubelet start replaces kubemark's empty temp directory with a symlink to that folder as
soon as kubemark logs its root dir. The kubelet's file source starts a few milliseconds
later: if it finds no path it retries every second, and then watches the symlink's
target; if it already watched the temp directory it would only relist every 20 s. So a
start counts only once the kubelet's inotify watches (/proc/<pid>/fdinfo) include the
folder's inode, and is retried otherwise.

Credentials: the control plane's admin kubeconfig (RBAC only, no Node authorizer or
NodeRestriction admission on the local apiserver, so no node identity is needed).

Imports only the standard library; `tools.controlplane` starts these for a ControlPlane.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tools.processes import DEATHSIG, kill_group

ROOT_DIR_RE = re.compile(rb"Using (/\S+) as root dir for hollow-kubelet")
# kubemark's fake CRI runtime listens on /tmp/kubelet_remote_<random>.sock and leaves it behind; --vmodule=log=3
# makes cri-client log it (two lines), so it can be removed
SOCKET_RE = re.compile(rb'"Connecting to runtime service" endpoint="unix://(/tmp/kubelet_remote_\d+\.sock)"')
WATCH_SECONDS = 5.0  # the file source retries a missing path every second
# Die with the thread that started it, via setpriv: no preexec_fn fork in a process that may have gRPC loaded.


class HollowKubeletError(RuntimeError):
    """kubemark did not start or did not take the static-pod folder."""


def _kubelet_port() -> int:
    """A free port below Linux's ephemeral range (32768+), where the tests' probed-then-bound ports come from,
    so a kubelet (re)started between another daemon's probe and its bind cannot take that daemon's port."""
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise HollowKubeletError("no free port in 20000-32000 for the kubelet API")


def inotify_watched_inodes(pid: int) -> set[int]:
    """Inode numbers that pid's inotify instances watch (from /proc/<pid>/fdinfo)."""
    out: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return out
    for fd in fds:
        try:
            if os.readlink(fd) != "anon_inode:inotify":
                continue
            for line in Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text().splitlines():
                if line.startswith("inotify wd:"):
                    fields = dict(f.split(":", 1) for f in line.split()[1:] if ":" in f)
                    out.add(int(fields["ino"], 16))
        except (OSError, KeyError, ValueError):
            continue
    return out


class HollowKubelet:
    """One kubemark hollow kubelet process for `node`; `static_pod_dir` is the folder for the agent."""

    def __init__(
        self,
        node: str,
        *,
        kubemark: Path,
        kubeconfig: Path,
        static_pod_dir: Path,
        log_path: Path,
        kubectl: Callable[..., subprocess.CompletedProcess] | None = None,
        pdeathsig: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.node = node
        self.kubemark = Path(kubemark)
        self.kubeconfig = Path(kubeconfig)
        self.static_pod_dir = Path(static_pod_dir).resolve()
        self.log_path = Path(log_path)
        self.kubectl = kubectl
        self.pdeathsig = pdeathsig
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.root_dir: Path | None = None  # kubemark's /tmp/hollow-kubelet.* of the current run
        self.starts = 0
        self.port = 0  # the kubelet API port of the current run; the Node reports it
        self._log_offset = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running else None  # type: ignore[union-attr]

    def command(self) -> list[str]:
        """kubemark's command line: no read-only port, a free API port, the fake image service."""
        self.port = _kubelet_port()
        return [str(self.kubemark), "--morph=kubelet", f"--name={self.node}", f"--kubeconfig={self.kubeconfig}",
                f"--kubelet-port={self.port}", "--kubelet-read-only-port=0",
                "--use-host-image-service=false", "--vmodule=log=3", *self.extra_args]

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, *, timeout: float = 60.0, wait_ready: bool = True) -> HollowKubelet:
        """Start kubemark, hand it the static-pod folder; with wait_ready, wait for its Node to be Ready."""
        if self.running:
            raise HollowKubeletError(f"hollow kubelet {self.node} is already running")
        self.static_pod_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            if self._start_once(timeout):
                break
            print(f"hollow kubelet {self.node}: its file source did not watch {self.static_pod_dir}; restarting it",
                  file=sys.stderr)
            self.kill()
            if attempt == 2:
                raise HollowKubeletError(f"hollow kubelet {self.node} started its file source before its static-pod "
                                         f"folder could be set, 3 times:\n{self.log_tail()}")
        if wait_ready:
            self.wait_ready(timeout=timeout)
        return self

    def _start_once(self, timeout: float) -> bool:
        """One start; False if the kubelet's file source watched its temp folder before the symlink was in place."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts + 1}: {' '.join(cmd)}\n".encode())
            log.flush()
            offset = self._log_offset = log.tell()
            self.proc = subprocess.Popen([*(DEATHSIG if self.pdeathsig else []), *cmd], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            text = self._log_since(offset)
            m = ROOT_DIR_RE.search(text)
            if m:
                break
            if self.proc.poll() is not None:
                raise HollowKubeletError(f"kubemark for {self.node} exited with {self.proc.returncode}:\n"
                                         f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise HollowKubeletError(f"kubemark for {self.node} did not log its root dir in {timeout:.0f}s:\n"
                                         f"{self.log_tail()}")
            time.sleep(0.001)
        self.root_dir = Path(m.group(1).decode())
        temp = [p for p in self.root_dir.glob("static-pods*") if p.is_dir() and not p.is_symlink()]
        if len(temp) != 1:
            raise HollowKubeletError(f"expected one static-pods* folder in {self.root_dir}, found {temp}")
        temp[0].rmdir()
        temp[0].symlink_to(self.static_pod_dir, target_is_directory=True)
        inode = self.static_pod_dir.stat().st_ino
        until = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < until:
            if inode in inotify_watched_inodes(self.proc.pid):
                return True
            if self.proc.poll() is not None:
                raise HollowKubeletError(f"kubemark for {self.node} exited with {self.proc.returncode}:\n"
                                         f"{self.log_tail()}")
            time.sleep(0.05)
        return False

    def runtime_socket(self) -> Path | None:
        """The fake runtime's socket of the latest run, from its log."""
        try:
            m = SOCKET_RE.search(self._log_since(self._log_offset))
        except FileNotFoundError:
            return None
        return Path(m.group(1).decode()) if m else None

    def _log_since(self, offset: int) -> bytes:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read()

    def wait_ready(self, *, timeout: float = 60.0) -> None:
        """Wait until this run of the kubelet reported its Node Ready (needs a kubectl callable).

        A Node left by an earlier run may still say Ready: it must also report this run's kubelet port."""
        if self.kubectl is None:
            return
        deadline = time.monotonic() + timeout
        jsonpath = '{.status.conditions[?(@.type=="Ready")].status} {.status.daemonEndpoints.kubeletEndpoint.Port}'
        while True:
            if not self.running:
                raise HollowKubeletError(f"hollow kubelet {self.node} exited:\n{self.log_tail()}")
            res = self.kubectl("get", "node", self.node, "-o", f"jsonpath={jsonpath}", check=False)
            if res.returncode == 0 and res.stdout.split() == ["True", str(self.port)]:
                return
            if time.monotonic() > deadline:
                raise HollowKubeletError(f"Node {self.node} not Ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.3)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal kubemark's process group (kill -9 by default: a crash), reap it, remove its temp files."""
        if self.proc is None:
            return
        kill_group(self.proc, sig)
        self._remove_temp()

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM, then kill -9 after timeout."""
        if self.running:
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        self.kill()

    def restart(self, **kw) -> HollowKubelet:
        """kill -9 and start again on the same static-pod folder (the pods keep their names and UIDs)."""
        self.kill()
        return self.start(**kw)

    def _remove_temp(self) -> None:
        """kubemark's /tmp root dir (through the symlink only the link goes) and its fake runtime's socket."""
        if self.root_dir is not None:
            shutil.rmtree(self.root_dir, ignore_errors=True)
            self.root_dir = None
        sock = self.runtime_socket()
        if sock is not None:
            sock.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of kubemark's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"--- hollow kubelet {self.node}: no log"
        return f"--- hollow kubelet {self.node} log ({self.log_path}), last {lines} lines:\n" + "\n".join(text[-lines:])
