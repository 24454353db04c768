"""The manifest folder is repaired on a timer; a broken folder is logged once, reported, retried, and loses nothing."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.kit.builders import delete, put
from tests.kit.manifests import expected_files, foreign_files, managed_files
from tests.kit.waits import wait_for


RESYNC = 2.0


def test_hand_deleted_or_edited_manifests_come_back_within_one_resync(logserver, agents):
    srv = logserver
    srv.append([put("edge01", f"p{i}", ns="ns") for i in range(3)])
    a = agents(node="edge01", servers=[srv.address], resync=f"{RESYNC:g}s")
    foreign = a.foreign
    a.start()
    want = expected_files(srv.desired("edge01"))
    a.wait_files(want)
    (a.manifests / "k8s-edge_ns_p0.json").unlink()
    (a.manifests / "k8s-edge_ns_p1.json").write_bytes(b'{"kind":"Pod","edited":"by hand"}')
    (a.manifests / ".k8s-edge_ns_p2.json.tmp").write_bytes(b"left by a crash")
    t0 = time.monotonic()
    a.wait_files(want, timeout=RESYNC * 3 + 10)
    took = time.monotonic() - t0
    assert took < RESYNC * 3 + 10
    wait_for(lambda: not (a.manifests / ".k8s-edge_ns_p2.json.tmp").exists(), timeout=RESYNC * 3 + 10,
             what="the stale temp file to go")
    assert foreign_files(a.manifests) == foreign
    print(f"repaired after {took:.2f}s (resync interval {RESYNC:g}s)")


def _error_lines(log: str) -> list[str]:
    return [l for l in log.splitlines() if "manifests not in sync" in l]


@pytest.mark.parametrize("broken", ["missing", "under-a-file"])
def test_missing_manifest_folder_is_reported_and_retried(logserver, agents, tmp_path, broken):
    srv = logserver
    srv.append([put("edge01", "a", ns="ns"), put("edge01", "b", ns="ns")])
    a = agents(node="edge01", servers=[srv.address], resync="1s")
    shutil.rmtree(a.manifests)
    a.check_foreign = False
    if broken == "under-a-file":
        a.manifests.write_text("not a folder")
        folder_arg = a.manifests / "manifests"
        a.cmd[a.cmd.index("--pod-manifest-path") + 1] = str(folder_arg)
    a.start()
    a.wait_applied(srv.head("edge01"))  # the replica follows the log whatever the folder does
    wait_for(lambda: a.metrics()['k8s_edge_agent_reconciles_total{kind="full"}'] >= 4, timeout=60,
             what="several resyncs")
    log = a.log()
    assert len(_error_lines(log)) == 1, log  # one line, not one per retry
    assert "Traceback" not in log
    assert a.http("/readyz")[0] == 503 and a.metrics()["k8s_edge_agent_manifests_ok"] == 0
    assert any(n == "edge01" and not ok and msg for n, ok, msg, _ in srv.observer.reports), srv.observer.reports
    if broken == "missing":
        assert not a.manifests.exists()  # never created by the agent
        a.manifests.mkdir()
        a.wait_files(expected_files(srv.desired("edge01")))
        a.wait_log("in sync again")
        assert a.http("/readyz")[0] == 200
    a.stop()
    assert a.proc.returncode == 0


def test_read_only_folder_loses_nothing_and_converges_when_writable(logserver, agents):
    """chattr +i makes the folder unwritable even for root (tests run as root; chmod would not stop root)."""
    srv = logserver
    srv.append([put("edge01", f"p{i}", ns="ns") for i in range(3)])
    a = agents(node="edge01", servers=[srv.address], resync="1s")
    foreign = a.foreign
    a.start()
    a.wait_files(expected_files(srv.desired("edge01")))
    before = managed_files(a.manifests)
    r = subprocess.run(["chattr", "+i", str(a.manifests)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot make the folder immutable: {r.stderr.strip()}")
    try:
        srv.append([put("edge01", "p0", ns="ns", image="nginx:2"), delete("edge01", "p1", ns="ns"), put("edge01", "p5", ns="ns")])
        a.wait_applied(srv.head("edge01"))  # committed to the replica: nothing is lost
        wait_for(lambda: a.metrics()["k8s_edge_agent_manifest_write_errors_total"] > 0, timeout=30,
                 what="a failed write")
        time.sleep(2.5)  # a few resync attempts
        assert managed_files(a.manifests) == before
        assert len(_error_lines(a.log())) == 1 and "Operation not permitted" in _error_lines(a.log())[0]
        assert any(not ok and "Operation not permitted" in msg for _, ok, msg, _ in srv.observer.reports)
    finally:
        subprocess.run(["chattr", "-i", str(a.manifests)], check=True)
    a.wait_files(expected_files(srv.desired("edge01")))
    a.wait_log("in sync again")
    assert foreign_files(a.manifests) == foreign
    assert "Traceback" not in a.log()
