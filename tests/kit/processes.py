"""Real processes for tests: daemons started, killed -9 and restarted; commands run to their exit.

Every daemon runs in its own session (process group); finalizers kill the groups. Daemons of
the end-to-end tests also get PR_SET_PDEATHSIG=SIGKILL (via setpriv), so a killed test run
leaves nothing behind. Imports only the standard library and tools.processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.kit.waits import DaemonDied
from tools.processes import DEATHSIG, kill_group

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
EDGE_MANAGER = VENV_BIN / "edge-manager"
AGENT = [sys.executable, "-m", "agent.main"]
APPENDER = Path(__file__).resolve().parent / "appender.py"  # a writer process for crash and reader tests

__all__ = ["AGENT", "APPENDER", "EDGE_MANAGER", "REPO", "VENV_BIN", "Daemon", "DaemonDied", "cli_command", "command",
           "error_lines", "error_log_line", "free_port", "kill_group", "one_error_line", "refused_start", "run_agent",
           "run_cli", "run_manager", "usage_line"]

# Die with the test process: setpriv sets PR_SET_PDEATHSIG=SIGKILL and execs the daemon. Not
# preexec_fn: a fork with Python code in the child can deadlock or abort when the test process
# has gRPC loaded (other test modules in the same session run in-process gRPC servers).


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(script: str, module: str) -> list[str]:
    """The installed console script, or `python -m <module>` when the venv has none."""
    exe = VENV_BIN / script
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def cli_command() -> list[str]:
    """edge-eventlog: the installed console script, else the module (same code)."""
    return command("edge-eventlog", "eventlog.cli")


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run edge-eventlog as a real process and capture its output."""
    return subprocess.run([*cli_command(), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def run_agent(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run edge-agent to completion (for the start-up refusals)."""
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


def run_manager(*args: str, data_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """edge-manager run to its exit (it is expected to refuse to start)."""
    return subprocess.run([str(EDGE_MANAGER), "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=timeout)


def refused_start(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """edge-manager with a fresh --data-dir, no metrics and a sync port 0, run to its exit (a refused start)."""
    return subprocess.run([str(EDGE_MANAGER), "--data-dir", str(tmp_path / "data"), "--metrics-addr", "",
                           "--sync-server", "127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=60)


def error_log_line(res: subprocess.CompletedProcess) -> str:
    """A start-up error: the one ERROR log line (no traceback)."""
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, res.stderr
    return errors[0]


def usage_line(res: subprocess.CompletedProcess) -> str:
    """A flag mistake: the whole stderr is one line `edge-manager: error: <what>`, as edge-agent's and argparse's."""
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-manager: error: "), res.stderr
    return lines[0]


def error_lines(text: str) -> list[str]:
    """Lines a user would read as errors."""
    return [l for l in text.splitlines() if " ERROR " in l or "error:" in l]


def one_error_line(text: str) -> str:
    """The only error line of a refused start; fails if there are several, none, or a traceback."""
    assert "Traceback" not in text, text
    errs = error_lines(text)
    assert len(errs) == 1, text
    return errs[0]


class Daemon:
    """One long-running process, restartable with the same command line.

    deathsig=False starts it without setpriv's PR_SET_PDEATHSIG, for daemons of a test process
    that hosts a gRPC server: Popen then spawns with vfork and runs no fork handlers (a plain
    fork() runs gRPC's atfork handlers in the child, which can abort it before exec); the
    fixtures' finalizers kill those groups. header=False keeps the log the daemon's own output
    (no "===== start" line before each start).
    """

    def __init__(self, name: str, cmd: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, deathsig: bool = True, header: bool = True) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.deathsig = deathsig
        self.header = header
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
            if self.header:
                log.write(f"\n===== start #{self.starts + 1}: {' '.join(self.cmd)}\n".encode())
                log.flush()
            self.proc = subprocess.Popen(
                [*(DEATHSIG if self.deathsig else []), *self.cmd], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
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

    def log(self) -> str:
        """Everything the daemon logged so far (all its runs)."""
        return self.log_path.read_bytes().decode(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the daemon's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"--- {self.name}: no log"
        return f"--- {self.name} log ({self.log_path}), last {lines} lines:\n" + "\n".join(text[-lines:])
