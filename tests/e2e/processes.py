"""Real processes for the end-to-end tests: start, kill -9, restart, and wait with deadlines.

Every daemon runs in its own session (process group) with PR_SET_PDEATHSIG=SIGKILL (via
setpriv), so a killed test run leaves nothing behind; finalizers kill the groups explicitly too.
Imports only the standard library.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tools.processes import DEATHSIG, kill_group

# Die with the test process: setpriv sets PR_SET_PDEATHSIG=SIGKILL and execs the daemon. Not
# preexec_fn: a fork with Python code in the child can deadlock or abort when the test process
# has gRPC loaded (other test modules in the same session run in-process gRPC servers).


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaemonDied(RuntimeError):
    """A daemon exited while the test expected it to run."""


class Deadline(AssertionError):
    """A condition did not hold within its deadline."""


def wait_for(
    cond: Callable[[], object], *, timeout: float, what: str, interval: float = 0.2,
    on_timeout: Callable[[], str] | None = None,
) -> object:
    """Poll cond until it returns something truthy; raise Deadline with context after timeout."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            out = cond()
            if out:
                return out
        except DaemonDied:
            raise
        except Exception as e:  # noqa: BLE001 - keep polling; show the last error on timeout
            last_exc = e
        if time.monotonic() > deadline:
            extra = f"\nlast error: {last_exc!r}" if last_exc else ""
            extra += f"\n{on_timeout()}" if on_timeout else ""
            raise Deadline(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)
        interval = min(interval * 1.5, max(interval, 1.0))


class Daemon:
    """One long-running process, restartable with the same command line."""

    def __init__(self, name: str, cmd: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running else None  # type: ignore[union-attr]

    def start(self) -> Daemon:
        """Start the process (appending to its log); a running one is an error."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts + 1}: {' '.join(self.cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [*DEATHSIG, *self.cmd], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, start_new_session=True,
            )
        self.starts += 1
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (kill -9 by default) and reap it."""
        if self.proc is None:
            return
        kill_group(self.proc, sig)

    def stop(self, *, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM), then kill -9 after timeout."""
        if not self.running:
            return
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
        self.kill()

    def restart(self, *, kill: bool = True) -> Daemon:
        """kill -9 (or stop) and start again with the same command line."""
        self.kill() if kill else self.stop()
        return self.start()

    def check_alive(self) -> None:
        """Raise DaemonDied (with its log tail) if the process exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise DaemonDied(f"{self.name} exited with {self.proc.returncode}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the daemon's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"--- {self.name}: no log"
        return f"--- {self.name} log ({self.log_path}), last {lines} lines:\n" + "\n".join(text[-lines:])
