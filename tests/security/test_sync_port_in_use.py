"""A port in use ends edge-manager (and edge-agent) with one line naming the flag and the address, exit 1."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventlog import LogStore
from tests.kit.builders import fill_node
from tests.kit.processes import REPO, one_error_line, run_manager


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on (as a second manager's default --metrics-addr would be)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("flag", ["--metrics-addr", "--sync-server"])
def test_a_manager_port_in_use_is_named(control_plane, edgenode_crd, namespace, taken_port: int, flag: str,
                                        tmp_path: Path) -> None:
    data = tmp_path / "data"
    with LogStore(data / "eventlog") as s:
        fill_node(s, "edge01", pods=3, size=200)
        head = s.head_offset
    address = f"127.0.0.1:{taken_port}"
    addresses = {"--metrics-addr": "127.0.0.1:0", "--sync-server": "127.0.0.1:0", flag: address}
    res = run_manager("--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace, "--insecure",
                      *[a for f, v in addresses.items() for a in (f, v)], data_dir=data)
    assert res.returncode == 1
    assert one_error_line(res.stderr).endswith(f"ERROR   {flag} {address}: address already in use")
    with LogStore(data / "eventlog", readonly=True) as s:  # nothing lost
        assert s.head_offset == head and len(s.pods("edge01")) == 3


def test_an_agent_metrics_port_in_use_is_named(taken_port: int, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "agent.main", "--node-name", "edge01", "--sync-server", "127.0.0.1:1",
         "--pod-manifest-path", str(tmp_path / "manifests"), "--data-dir", str(tmp_path / "agent"), "--insecure",
         "--metrics-addr", f"127.0.0.1:{taken_port}"],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 1
    assert one_error_line(res.stderr).endswith(f"--metrics-addr 127.0.0.1:{taken_port}: address already in use")
