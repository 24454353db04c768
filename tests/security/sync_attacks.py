"""Helpers of the sync-channel attack tests (tests/security/test_sync_*.py): fixtures, the legit agent, process runs.

Fixtures are imported by the test modules themselves (no conftest.py: other security tests
live beside these).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sync_client import ClientTls, SyncClient
from eventlog import Change, LogStore, ReplicaStore
from tests.manager.manager_helpers import EDGE_MANAGER
from tests.sync.sync_helpers import Pki, make_pki, wait_until

POD_BYTES = 5 * 1024  # the reproduction: 256 pods of 5 KB each


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    s = LogStore(tmp_path / "log")
    yield s
    s.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def big_manifest(node: str, name: str, size: int = POD_BYTES, rev: int = 0) -> bytes:
    pad = "x" * max(0, size - 100)
    return (f'{{"kind":"Pod","metadata":{{"name":"{name}","namespace":"default"}},'
            f'"spec":{{"nodeName":"{node}","pad":"{pad}"}},"rev":{rev}}}').encode()


def fill_node(store: LogStore, node: str, *, pods: int = 256, size: int = POD_BYTES) -> None:
    """A node of `pods` pods of about `size` bytes each."""
    store.append([Change(node, "put", "default", f"app{i:04d}", big_manifest(node, f"app{i:04d}", size))
                  for i in range(pods)])


async def legit_agent_syncs(address: str, store: LogStore, node: str, replica_dir: Path, *,
                            tls: ClientTls | None = None, timeout: float = 60.0) -> SyncClient:
    """A well-behaved agent of `node` syncs; its replica then equals the log's view exactly (pods and digest)."""
    replica = ReplicaStore(replica_dir, node=node)

    async def reconcile() -> None:
        return None

    agent = SyncClient(node=node, addresses=[address], replica=replica, after_apply=reconcile, tls=tls,
                       backoff_initial=0.05, backoff_max=0.5, connect_timeout=5.0)
    task = asyncio.create_task(agent.run())
    try:
        head = store.node_state(node).head_offset
        await wait_until(lambda: agent.applied_offset == head, timeout=timeout, what=f"{node} synced to {head}")
        expected = {(p.namespace, p.name): p.manifest for p in store.pods(node).values()}
        got = {(p.namespace, p.name): p.manifest for p in replica.pods().values()}
        assert got == expected
        assert replica.state().digest == store.node_state(node).digest
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        replica.close()
    return agent


def run_manager(*args: str, data_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """edge-manager run to its exit (it is expected to refuse to start)."""
    return subprocess.run([str(EDGE_MANAGER), "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(stderr: str) -> str:
    """The single error line of a refused start: an ERROR log line, or a usage line `edge-manager: error: ...`."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if " ERROR " in line or line.startswith("edge-manager: error: ")]
    assert len(errors) == 1, stderr
    return errors[0]
