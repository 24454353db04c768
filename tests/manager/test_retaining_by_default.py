"""Retention is on by default, can be turned off, shows how far back the log reaches, and can export before it drops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eventlog import LogStore
from eventlog.export import verify_exports
from edgecommon.usage import UsageError
from manager.main import parse_args
from tests.kit.builders import apply
from tests.kit.manager import events, sample
from tests.kit.waits import wait_for

EDGE_EVENTLOG = Path(sys.executable).parent / "edge-eventlog"


def _retention(*args: str):
    return parse_args(["--insecure", *args]).store.retention


def test_the_defaults_bound_the_log_by_age_and_by_size():
    r = _retention()
    assert (r.max_age_seconds, r.max_bytes, r.keep_last) == (7 * 86400, 2**30, None) and r.enabled
    assert _retention("--retain-age", "36h", "--retain-bytes", "200Mi").max_bytes == 200 * 2**20
    off = _retention("--retain-age", "none", "--retain-bytes", "0")
    assert not off.enabled
    assert _retention("--retain-age", "off", "--retain-bytes", "none", "--retain-events", "9").keep_last == 9
    with pytest.raises(UsageError, match="not a duration"):
        _retention("--retain-age", "forever")


def test_metrics_show_how_far_back_the_log_reaches(control_plane, edgenode_crd, namespace, manager_factory, tmp_path):
    data = tmp_path / "data"
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=data, namespace=namespace)
    assert "retention: events older than 7d or beyond 1024 MiB of records are compacted every 300s" in mgr.log()
    apply(control_plane, "edge01", namespace, {"a": "nginx", "b": "nginx"})
    wait_for(lambda: len(events(data)) == 2, 60, "2 events")
    m = wait_for(lambda: (t := mgr.metrics()) and (sample(t, "k8s_edge_manager_log_retained_seconds") or 0) > 0 and t,
                 30, "a retained age")
    assert sample(m, "k8s_edge_manager_log_first_offset") == 1
    assert 0 < sample(m, "k8s_edge_manager_log_bytes") <= sample(m, "k8s_edge_manager_store_bytes")
    assert sample(m, "k8s_edge_manager_recording") == 1
    assert mgr.stop() == 0


def test_retention_off_is_said_at_start(control_plane, edgenode_crd, namespace, manager_factory):
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, namespace=namespace,
                          args=["--retain-age", "none", "--retain-bytes", "none"])
    assert "retention: off: the event log is never compacted" in mgr.log()
    assert "the event log grows without bound" in mgr.log()


def test_what_compaction_drops_is_exported_first_and_the_files_chain(control_plane, edgenode_crd, namespace,
                                                                    manager_factory, tmp_path):
    data, audit = tmp_path / "data", tmp_path / "audit"
    mgr = manager_factory(kubeconfig=control_plane.kubeconfig, data_dir=data, namespace=namespace,
                          args=["--retain-events", "2", "--compaction-interval", "1s",
                                "--export-before-compaction", str(audit)])

    def first_offset() -> int:
        with LogStore(data / "eventlog", readonly=True) as s:
            return s.first_offset

    apply(control_plane, "edge01", namespace, {f"p{i}": "nginx" for i in range(6)})
    wait_for(lambda: first_offset() == 5, 60, "compaction to keep the newest 2 events")
    apply(control_plane, "edge01", namespace, {f"p{i}": "nginx:2" for i in range(4)})  # 4 puts, 2 deletes: 7..12
    wait_for(lambda: first_offset() == 11, 60, "the second compaction")
    files = sorted(audit.glob("*.jsonl"))
    assert len(files) >= 2 and not list(audit.glob("*.partial"))
    check = verify_exports(files)
    assert check.problems == () and (check.first_offset, check.last_offset) == (1, 10)
    res = subprocess.run([str(EDGE_EVENTLOG), "verify-export", *map(str, files)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith(f"ok: {len(files)} export file(s)"), res.stderr
    assert "exported offsets 1..4 to" in mgr.log()
    assert mgr.stop() == 0
