"""The benchmarks run: `bench/run_all.py --quick` exits 0 and prints the combined table (no thresholds)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.kit.processes import REPO


def _quick(script: str, *, timeout: float) -> tuple[int, str]:
    """Run bench/<script> --quick; (exit code, output). Its whole process group dies at the timeout."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / script), "--quick"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the benchmarks' children die with their parents
            proc.wait(timeout=30)
    return proc.returncode, out


def _row(out: str, bench: str, figure: str) -> list[str]:
    """The cells of the combined table's row of one figure (bench, figure, value, target, met, ...)."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] == bench and cells[1].startswith(figure):
            return cells
    raise AssertionError(f"no row {figure!r} of {bench}:\n{out[-3000:]}")


@pytest.mark.timeout(900)
def test_run_all_quick_prints_one_table() -> None:
    returncode, out = _quick("run_all.py", timeout=840)
    failures = [part[:4000] for part in out.split("\n== ") if " FAILED (exit " in part.split("\n", 1)[0]]
    assert returncode == 0, "\n".join(failures) or out[-5000:]  # the failing bench's own output first
    assert "k8s-edge benchmarks (quick)" in out
    for bench in ("latency", "catchup", "fanout", "reconnect", "apicost", "memory", "streams", "soak",
                  "failover", "replication", "takeover"):
        assert f"| {bench} " in out, f"no figures of {bench}:\n{out[-3000:]}"
    # manager HA (#14): the benches assert these themselves (exit 1); the table must show them
    assert _row(out, "failover", "snapshots sent / installed")[2] == "0 / 0"
    assert _row(out, "failover", "kill -9 -> every agent at its head")[3] == "< 15 s"
    assert _row(out, "takeover", "relist on takeover appended")[2].startswith("0 events")
    assert " ms" in _row(out, "replication", "standby lag per event")[2]


@pytest.mark.timeout(300)
def test_soak_quick_converges_exactly_and_prints_the_slopes() -> None:
    returncode, out = _quick("soak_bench.py", timeout=240)
    assert returncode == 0, out[-5000:]
    assert "| end state " in out and "converged exactly" in out, out[-3000:]
    for figure in ("store on disk (data.mdb)", "manager heap (anonymous RSS)", "log bytes per event"):
        assert f"| {figure} " in out, out[-3000:]
