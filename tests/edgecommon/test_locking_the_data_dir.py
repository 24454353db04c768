"""One daemon per data dir: the lock names the holder's pid, is released with its descriptor, and keeps the dir private."""

from __future__ import annotations

import os
import stat

import pytest

from edgecommon.files import PrivacyError
from edgecommon.locks import LockHeld, lock_data_dir, unlock


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    data = tmp_path / "data"
    fd = lock_data_dir(data, program="edge-manager")
    assert (data / "manager.lock").read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    with pytest.raises(LockHeld, match=rf"another edge-manager \(pid {os.getpid()}\) is using --data-dir {data}"):
        lock_data_dir(data, program="edge-manager")
    unlock(fd)
    unlock(lock_data_dir(data, program="edge-manager"))  # free again


def test_each_daemon_has_its_own_lock_file(tmp_path):
    fds = [lock_data_dir(tmp_path, program="edge-agent"), lock_data_dir(tmp_path, program="edge-manager")]
    assert sorted(p.name for p in tmp_path.glob("*.lock")) == ["agent.lock", "manager.lock"]
    for fd in fds:
        unlock(fd)


def test_a_shared_dir_is_refused_before_locking(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(PrivacyError, match="shared directory"):
        lock_data_dir(shared, program="edge-agent")
    assert list(shared.iterdir()) == []
