"""edge-agent refuses what it cannot run with: one clear line, a non-zero exit, nothing overwritten."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lmdb
import pytest

from eventlog import LogStore
from tests.kit.agents import make_replica
from tests.kit.builders import pod_manifest
from tests.kit.processes import error_lines, run_agent

BASE = ["--insecure", "--sync-server", "127.0.0.1:1", "--resync-interval", "1s"]


def digest_tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name not in ("lock.mdb", "agent.lock")}


def assert_one_clear_error(res, *needles: str, code: int = 1) -> None:
    text = res.stdout + res.stderr
    assert res.returncode == code, text
    assert "Traceback" not in text, text
    errs = error_lines(text)
    assert len(errs) == 1, text
    for n in needles:
        assert n in errs[0], errs[0]


@pytest.mark.parametrize("where", ["replica", "."])
def test_corrupt_lmdb_is_refused_and_kept(tmp_path, where):
    data = tmp_path / "data"
    (data / where).mkdir(parents=True, exist_ok=True)
    (data / where / "data.mdb").write_bytes(b"\x13\x37 not an lmdb file " * 4096)
    before = digest_tree(data)
    res = run_agent(*BASE, "--node-name", "edge01", "--data-dir", str(data), "--pod-manifest-path", str(tmp_path))
    assert_one_clear_error(res, "not an LMDB store")
    assert digest_tree(data) == before


@pytest.mark.parametrize("where", ["replica", "."])
def test_foreign_lmdb_is_refused_and_kept(tmp_path, where):
    store = tmp_path / "data" / where
    store.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(store))
    with env.begin(write=True) as txn:
        txn.put(b"someone-elses", b"precious")
    env.close()
    before = digest_tree(tmp_path / "data")
    res = run_agent(*BASE, "--node-name", "edge01", "--data-dir", str(tmp_path / "data"),
                    "--pod-manifest-path", str(tmp_path))
    assert_one_clear_error(res, "not a k8s-edge store")
    assert digest_tree(tmp_path / "data") == before


def test_manager_store_is_refused(tmp_path):
    with LogStore(tmp_path / "data" / "eventlog"):
        pass
    res = run_agent(*BASE, "--node-name", "edge01", "--data-dir", str(tmp_path / "data"),
                    "--pod-manifest-path", str(tmp_path))
    assert_one_clear_error(res, "manager store")


def test_replica_of_another_node_is_refused(tmp_path):
    make_replica(tmp_path / "data" / "replica", node="edge02", pods={("ns", "a"): pod_manifest("ns", "a")})
    before = digest_tree(tmp_path / "data")
    res = run_agent(*BASE, "--node-name", "edge01", "--data-dir", str(tmp_path / "data"),
                    "--pod-manifest-path", str(tmp_path))
    assert_one_clear_error(res, "belongs to node 'edge02'")
    assert digest_tree(tmp_path / "data") == before


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "data").write_text("x")
    res = run_agent(*BASE, "--node-name", "edge01", "--data-dir", str(tmp_path / "data"),
                    "--pod-manifest-path", str(tmp_path))
    assert_one_clear_error(res, "data")
    assert (tmp_path / "data").read_text() == "x"


@pytest.mark.parametrize("args, needle", [
    (["--node-name", "edge01", "--sync-server", "x:1"], "--insecure"),  # plaintext without --insecure
    (["--node-name", "Edge_01", "--insecure"], "--node-name"),
    (["--node-name", "edge01", "--insecure", "--sync-server", "no-port"], "--sync-server"),
    (["--node-name", "edge01", "--insecure", "--sync-server", "host:99999"], "--sync-server"),
    (["--node-name", "edge01", "--insecure", "--resync-interval", "often"], "duration"),
    (["--node-name", "edge01", "--ca-file", "/nonexistent/ca.pem"], "--ca-file"),
    (["--node-name", "edge01", "--ca-file", "/etc/hostname", "--cert-file", "/etc/hostname"], "--key-file"),
    (["--node-name", "edge01", "--ca-file", "/etc/hostname"], "no PEM certificate"),
    (["--node-name", "edge01", "--insecure", "--metrics-addr", "nowhere"], "--metrics-addr"),
    (["--node-name", "edge01", "--insecure", "--ca-file", "/etc/hostname"], "cannot be combined"),
    (["--node-name", "edge01", "--insecure", "--no-such-flag"], "unrecognized"),
])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, args, needle):
    res = run_agent(*args, "--data-dir", str(tmp_path / "data"))
    assert_one_clear_error(res, needle, code=2)
    assert not (tmp_path / "data").exists()


def test_bad_fault_spec_is_refused(tmp_path):
    res = run_agent(*BASE, "--node-name", "edge01", "--data-dir", str(tmp_path / "data"),
                    env={"K8S_EDGE_FAULT": "crash-sometime"})
    assert_one_clear_error(res, "K8S_EDGE_FAULT", code=2)


def test_second_agent_on_the_same_data_dir_is_refused(tmp_path, agents):
    a = agents(node="edge01", servers=["127.0.0.1:1"])
    a.start()
    a.wait_serving()
    res = run_agent(*BASE, "--node-name", "edge01", "--data-dir", str(a.data_dir),
                    "--pod-manifest-path", str(a.manifests))
    assert_one_clear_error(res, f"another edge-agent (pid {a.pid})")
    a.check_alive()
