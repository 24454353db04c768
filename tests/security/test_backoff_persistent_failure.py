"""A persistent apply failure backs off to the maximum with one log line, instead of reconnecting in a tight loop.

Attack (or accident): the edge node's disk is full, so every snapshot the manager sends fails
to commit. Before issue 12 the backoff was reset by every Welcome: 38 reconnects and 38 full
snapshots in 10 s, one log line each (44 snapshots in this test's 10 s against that code).
Now only progress (an apply that committed) resets it: about 5 tries in 10 s, one line.
The full disk is real: the agent's --data-dir is a small tmpfs mounted by the test (as root).
A real agent process against the real sync service (tests/kit/servers.py).
"""

from __future__ import annotations

import subprocess
import time

from eventlog import Change, canonical_manifest
from tests.kit.agents import make_replica
from tests.kit.builders import pod_manifest
from tests.kit.manifests import expected_files, managed_files
from tests.kit.waits import wait_for

WINDOW = 10.0
BIG_PODS = 8  # x ~128 KiB: a snapshot of ~1 MiB, on a 512 KiB disk


def big_pod(node: str, name: str) -> Change:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.25",
                                     "env": [{"name": "BLOB", "value": f"{name}-" + "x" * (128 << 10)}]}]}}
    return Change(node, "put", "ns", name, canonical_manifest(body))


def failure_lines(log: str, needle: str) -> list[str]:
    return [l for l in log.splitlines() if needle in l and (" WARNING " in l or " ERROR " in l)]


def test_full_disk_backs_off_with_one_log_line_and_loses_nothing(agents, logserver, tmpfs):
    a = agents(node="edge01", servers=[logserver.address])
    tmpfs(a.data_dir, size="512k")  # a snapshot of ~1 MiB does not fit
    old = {("ns", "old"): pod_manifest("ns", "old")}
    make_replica(a.data_dir / "replica", node="edge01", pods=old)  # of another log: the manager sends a snapshot
    logserver.append([big_pod("edge01", f"p{i}") for i in range(BIG_PODS)])
    a.start()

    wait_for(lambda: len(logserver.observer.snapshots) >= 1, timeout=60, what="the first snapshot",
             on_timeout=a.log_tail)
    first = time.monotonic()
    time.sleep(WINDOW)
    sent = len(logserver.observer.snapshots)
    reconnects = a.metrics()["k8s_edge_agent_reconnects_total"]
    # nothing lost meanwhile: the replica and the folder still hold what they held
    assert managed_files(a.manifests) == expected_files(old)
    with a.replica() as r:
        assert {k: p.manifest for k, p in r.pods().items()} == old
    log = a.log()
    assert "mdb_txn_commit" in log, a.log_tail()
    # a handful of tries in 10 s, not dozens: each failure doubles the ceiling (0.5 s, 1 s, 2 s, ... 30 s)
    assert 2 <= sent <= 8, (sent, a.log_tail())
    assert reconnects <= 8
    # one line for the repeating error, whatever the number of tries; the repeats are at debug level
    assert len(failure_lines(log, "mdb_txn_commit")) == 1, a.log_tail(60)
    assert log.count("ended again") >= sent - 2
    assert time.monotonic() - first < WINDOW + 30

    subprocess.run(["mount", "-o", "remount,size=64m", str(a.data_dir)], check=True, capture_output=True, timeout=30)
    a.wait_files(expected_files(logserver.desired("edge01")), timeout=90)  # the next try (<= 30 s) commits
    a.wait_log("works again after")
    log = a.log()
    assert len(failure_lines(log, "mdb_txn_commit")) == 1, a.log_tail(60)
    line = next(l for l in log.splitlines() if "works again after" in l)
    assert "mdb_txn_commit" in line
    a.kill()


def test_a_repeating_error_is_news_once_and_summed_up_when_it_changes_or_clears():
    from edgecommon.backoff import ErrorStreak

    s = ErrorStreak()
    assert [s.failed("disk full") for _ in range(3)] == [(True, 0), (False, 0), (False, 0)]
    assert s.failed("connection refused") == (True, 2)  # new error: the old one repeated twice more
    assert s.failed("connection refused") == (False, 0)
    assert s.cleared() == (5, "connection refused", 1)  # progress: 5 failed tries, the last error twice
    assert s.cleared() == (0, "", 0) and s.failed("disk full") == (True, 0)
