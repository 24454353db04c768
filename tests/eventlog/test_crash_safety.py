"""A writer killed with SIGKILL mid-stream leaves a sound store holding whole batches only."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter

import orjson

from eventlog import LogStore
from eventlog.verify import verify_log
from tests.kit.builders import put
from tests.kit.processes import APPENDER, run_cli


BATCH = 64


def _start_writer(path, procs) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(APPENDER), str(path), "100000", str(BATCH)],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    procs.append(p)
    return p


def _wait_batches(p: subprocess.Popen, n: int, deadline_s: float = 120) -> None:
    """Read the writer's progress lines until n more batches committed."""
    deadline = time.monotonic() + deadline_s
    for _ in range(n):
        assert time.monotonic() < deadline, "writer made no progress"
        assert p.stdout.readline(), "writer exited early"


def test_sigkill_mid_stream_leaves_whole_batches(tmp_path, procs):
    path = tmp_path / "log"
    committed = 0
    for round_ in range(3):  # kill, reopen, continue, kill again: recovery is repeatable
        p = _start_writer(path, procs)
        _wait_batches(p, random.randint(5, 30))
        time.sleep(random.random() * 0.05)  # land somewhere inside a transaction
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        assert p.returncode == -signal.SIGKILL
        with LogStore(path, readonly=True) as store:
            assert verify_log(store) == []
            head = store.head_offset
            assert head % BATCH == 0 and head > committed
            committed = head
            batches = Counter(orjson.loads(e.manifest)["batch"] for e in store.iter_events())
            assert set(batches.values()) == {BATCH}
            assert sorted(batches) == list(range(head // BATCH))
        res = run_cli("verify", path)
        assert res.returncode == 0 and res.stdout.startswith("ok: manager store"), res.stderr
    # the store stays writable after the crashes
    with LogStore(path) as store:
        assert store.append([put("edge0", "after-crash")])[0].offset == committed + 1
