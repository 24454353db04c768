"""Keepalive options on both sides (edgecommon.keepalive), listen addresses, and generated protobuf modules that match sync.proto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.sync_client import SyncClient, channel_options
from eventlog import LogStore, ReplicaStore
from manager.notify import LogNotifier
from manager.sync_service import NullObserver, SyncSettings, create_server, listen_address, server_options
from tests.kit.processes import REPO
from tests.kit.waits import run


def test_server_keepalive_options_follow_the_doc() -> None:
    options = dict(server_options(SyncSettings()))
    assert options == {
        "grpc.keepalive_time_ms": 10_000,
        "grpc.keepalive_timeout_ms": 10_000,
        "grpc.http2.min_ping_interval_without_data_ms": 5_000,
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.http2.max_pings_without_data": 0,
        "grpc.so_reuseport": 0,
    }
    tuned = dict(server_options(SyncSettings(keepalive_time_ms=7_000, keepalive_timeout_ms=3_000)))
    assert (tuned["grpc.keepalive_time_ms"], tuned["grpc.keepalive_timeout_ms"]) == (7_000, 3_000)


def test_client_keepalive_options_follow_the_doc(tmp_path: Path) -> None:
    replica = ReplicaStore(tmp_path / "replica", node="edge01")

    async def reconcile() -> None:
        return None

    client = SyncClient(node="edge01", addresses=["127.0.0.1:1"], replica=replica, after_apply=reconcile)
    options = dict(client.channel_options)
    assert options == dict(channel_options())
    assert options["grpc.keepalive_time_ms"] == 10_000
    assert options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0
    # a client may not ping more often than the server permits without data
    assert options["grpc.keepalive_time_ms"] >= dict(server_options(SyncSettings()))[
        "grpc.http2.min_ping_interval_without_data_ms"]
    replica.close()


def test_listen_address_colon_port_means_every_interface() -> None:
    assert listen_address(":50051") == "[::]:50051"
    assert listen_address("127.0.0.1:0") == "127.0.0.1:0"


def test_an_address_in_use_is_one_clear_error(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "log")

    async def scenario() -> None:
        built = create_server(store=store, notifier=LogNotifier(), observer=NullObserver(),
                              address="127.0.0.1:0", tls=None)
        server, port = built.grpc_server, built.port
        await server.start()
        try:
            with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
                create_server(store=store, notifier=LogNotifier(), observer=NullObserver(),
                              address=f"127.0.0.1:{port}", tls=None)
        finally:
            await server.stop(0)

    run(scenario())
    store.close()


def test_generated_modules_are_not_stale(tmp_path: Path) -> None:
    (tmp_path / "proto").mkdir()
    shutil.copy(REPO / "proto" / "sync.proto", tmp_path / "proto" / "sync.proto")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.", "--grpc_python_out=.",
         "proto/sync.proto"],
        cwd=tmp_path, check=True, capture_output=True, timeout=120,
    )
    for name in ("sync_pb2.py", "sync_pb2.pyi", "sync_pb2_grpc.py"):
        fresh = (tmp_path / "proto" / name).read_text()
        committed = (REPO / "proto" / name).read_text()
        assert fresh == committed, f"proto/{name} is stale: run proto/generate.sh"


@pytest.mark.parametrize("bad", [{"window": 0}, {"batch_size": 0}, {"heartbeat_seconds": 0.0},
                                 {"snapshot_chunk_entries": 0}])
def test_nonsense_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SyncSettings(**bad)
