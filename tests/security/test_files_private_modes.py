"""Private files: data dirs 0700 and LMDB files 0600 for both daemons; private keys others can read are refused.

Attack: someone with a shell on the edge node (or the manager's host) but not the daemon's
user reads the replica or the log (every manifest, env values included) or the TLS key.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from loguru import logger

from agent.main import parse_args
from edgecommon import files
from edgecommon.files import PrivacyError, check_private_key_mode, ensure_private_dir
from eventlog import LogStore, ReplicaStore
from manager.sync_service import ServerTls
from tests.kit.agents import make_replica
from tests.kit.builders import pod_manifest, put
from tests.kit.files import PRIVATE_STORE, mode, store_modes
from tests.kit.manifests import expected_files, managed_files
from tests.kit.pki import make_pki
from tests.kit.processes import EDGE_MANAGER, REPO, free_port, one_error_line, run_agent
from tests.kit.servers import LogServer

PODS = {("ns", "web"): pod_manifest("ns", "web"), ("ns", "db"): pod_manifest("ns", "db", "postgres:16")}


def _loosen(store: Path) -> None:
    """What an older version left: a store 0755 with files 0644."""
    os.chmod(store, 0o755)
    for f in ("data.mdb", "lock.mdb"):
        os.chmod(store / f, 0o644)


# -- data dirs and stores -----------------------------------------------------------------------------------------


def test_agent_creates_its_data_dir_0700_and_replica_files_0600(agents):
    a = agents(node="edge01", servers=[f"127.0.0.1:{free_port()}"])
    a.start()
    a.wait_serving()
    assert mode(a.data_dir) == 0o700
    assert store_modes(a.data_dir / "replica") == PRIVATE_STORE


def test_agent_tightens_a_looser_data_dir_and_replica_and_keeps_the_pods(agents):
    a = agents(node="edge01", servers=[f"127.0.0.1:{free_port()}"])
    make_replica(a.data_dir / "replica", node="edge01", pods=PODS)
    os.chmod(a.data_dir, 0o755)
    _loosen(a.data_dir / "replica")
    a.start()
    a.wait_files(expected_files(PODS))  # restored from the tightened replica: nothing lost
    assert mode(a.data_dir) == 0o700
    assert store_modes(a.data_dir / "replica") == PRIVATE_STORE
    assert f"{a.data_dir}: tightened from mode 0755 to 0700" in a.log()
    with a.replica() as r:
        assert {k: p.manifest for k, p in r.pods().items()} == PODS


def test_agent_refuses_a_shared_data_dir_and_changes_nothing(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp: taking it over would break its other users
    res = run_agent("--insecure", "--sync-server", "127.0.0.1:1", "--node-name", "edge01",
                    "--data-dir", str(shared), "--pod-manifest-path", str(tmp_path))
    assert res.returncode == 1, res.stderr
    line = one_error_line(res.stderr)
    assert str(shared) in line and "1777" in line and "shared directory" in line
    assert mode(shared) == 0o1777 and list(shared.iterdir()) == []


def test_a_world_writable_data_dir_of_ours_is_tightened(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    os.chmod(d, 0o2777)  # what a local-path volume with fsGroup looks like
    ensure_private_dir(d)
    assert mode(d) == 0o700


def test_a_data_dir_this_user_may_not_chmod_is_kept_with_a_warning(tmp_path, monkeypatch):
    """A volume's mount point owned by root, handed to a non-root daemon through fsGroup (the test runs as root)."""
    d = tmp_path / "data"
    d.mkdir()
    os.chmod(d, 0o2775)

    def not_permitted(path, m):
        raise PermissionError(1, "Operation not permitted")

    lines: list[str] = []
    monkeypatch.setattr(files.os, "chmod", not_permitted)
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    try:
        ensure_private_dir(d)
    finally:
        logger.remove(sink)
    assert mode(d) == 0o2775
    assert len(lines) == 1 and str(d) in lines[0] and "2775" in lines[0] and "private (0700)" in lines[0]


def test_manager_creates_its_data_dir_0700_and_log_files_0600(manager):
    os.makedirs(manager.data_dir, mode=0o755)
    os.chmod(manager.data_dir, 0o755)  # an existing, looser data dir is tightened
    with LogStore(manager.data_dir / "eventlog") as s:  # a log an older version wrote, with its identity
        log_id = s.info().log_id
    _loosen(manager.data_dir / "eventlog")
    manager.start().wait_ready()
    assert mode(manager.data_dir) == 0o700
    assert store_modes(manager.data_dir / "eventlog") == PRIVATE_STORE
    with manager.store() as s:
        assert s.info().log_id == log_id  # the same log, tightened, not replaced
    assert f"{manager.data_dir}: tightened from mode 0755 to 0700" in manager.log_path.read_text()


def test_stores_are_created_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        with LogStore(tmp_path / "log"):
            pass
        with ReplicaStore(tmp_path / "replica", node="edge01"):
            pass
    finally:
        os.umask(old)
    assert store_modes(tmp_path / "log") == PRIVATE_STORE
    assert store_modes(tmp_path / "replica") == PRIVATE_STORE


# -- private keys -------------------------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    return make_pki(d)


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o644])
def test_agent_refuses_a_key_others_can_read_with_one_line(pki, tmp_path, loose):
    cert, key = pki.client("edge01")
    os.chmod(key, loose)
    before = key.read_bytes()
    args = ["--node-name", "edge01", "--sync-server", "127.0.0.1:1", "--ca-file", str(pki.ca),
            "--cert-file", str(cert), "--key-file", str(key), "--data-dir", str(tmp_path / "data"),
            "--pod-manifest-path", str(tmp_path)]
    res = run_agent(*args)
    assert res.returncode == 2, res.stderr
    line = one_error_line(res.stderr)
    assert "--key-file" in line and str(key) in line and f"mode {loose:04o}" in line
    assert not (tmp_path / "data").exists()  # refused before anything was created
    assert key.read_bytes() == before and mode(key) == loose  # the key is the operator's to fix
    os.chmod(key, 0o600)
    assert parse_args(args).key_file == key  # the same key, private, is accepted


@pytest.mark.parametrize("loose", [0o640, 0o644])
def test_manager_refuses_a_key_others_can_read_with_one_line(pki, tmp_path, loose):
    os.chmod(pki.server_key, loose)
    res = subprocess.run(
        [str(EDGE_MANAGER), "--tls-cert-file", str(pki.server_cert), "--tls-private-key-file", str(pki.server_key),
         "--client-ca-file", str(pki.ca), "--data-dir", str(tmp_path / "data"), "--kubeconfig", "/nonexistent"],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 2, res.stderr
    line = one_error_line(res.stderr)
    assert "--tls-private-key-file" in line and str(pki.server_key) in line and f"mode {loose:04o}" in line
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("key_mode, accepted", [(0o440, True), (0o640, True), (0o444, False), (0o460, False)])
def test_a_root_owned_key_handed_to_the_daemon_by_group_is_accepted_as_a_secret_volume_mounts_it(
        pki, monkeypatch, key_mode, accepted):
    """A Secret volume with fsGroup is root:<fsGroup> 0440 whatever its defaultMode (PostgreSQL's rule).

    The daemon runs as a non-root user there: stood in for by its effective uid (the test runs as root).
    """
    assert os.stat(pki.server_key).st_uid == 0
    os.chmod(pki.server_key, key_mode)
    monkeypatch.setattr(files.os, "geteuid", lambda: 65532)
    if accepted:
        check_private_key_mode(pki.server_key)
    else:
        with pytest.raises(PrivacyError, match=f"mode {key_mode:04o}"):
            check_private_key_mode(pki.server_key)
    monkeypatch.undo()  # the same file, for a daemon running as root (its owner): private or refused
    with pytest.raises(PrivacyError, match=f"mode {key_mode:04o}"):
        check_private_key_mode(pki.server_key)


def test_agent_syncs_with_a_private_key(pki, tmp_path, agents):
    """The check does not get in the way: openssl's 0600 key is used as before."""
    srv = LogServer(tmp_path / "tls-log", tls=ServerTls(cert_file=pki.server_cert, key_file=pki.server_key,
                                                       client_ca_file=pki.ca)).start()
    try:
        srv.append([put("edge01", "web", ns="ns")])
        cert, key = pki.client("edge01")
        assert mode(key) == 0o600
        a = agents(node="edge01", servers=[srv.address], insecure=False,
                   extra=["--ca-file", str(pki.ca), "--cert-file", str(cert), "--key-file", str(key)])
        a.start()
        a.wait_files(expected_files(srv.desired("edge01")))
        assert managed_files(a.manifests)
    finally:
        srv.close()
