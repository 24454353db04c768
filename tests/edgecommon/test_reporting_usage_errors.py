"""Both daemons report a flag mistake the same way: one line `<prog>: error: <what>` on stderr, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgecommon.logs import LEVELS


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("module, prog", [("agent.main", "edge-agent"), ("manager.main", "edge-manager")])
@pytest.mark.parametrize("args, words", [
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--log-level", "loud"], "--log-level"),
    (["--metrics-addr", "nowhere"], "--metrics-addr: not an address: 'nowhere'"),
])
def test_one_line_and_exit_2(module, prog, args, words):
    res = run(module, "--insecure", *args)
    assert res.returncode == 2, res.stderr
    assert res.stdout == "" and "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and words in lines[0], res.stderr


@pytest.mark.parametrize("module", ["agent.main", "manager.main"])
def test_log_levels_are_the_same_in_any_case(module):
    help_text = run(module, "--help").stdout
    assert "--log-level LEVEL" in help_text and "--log-format {text,json}" in help_text
    assert LEVELS == ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
