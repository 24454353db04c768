"""edge-agent flags: the original's names and defaults keep working; durations and address lists parse.

The duration and address syntax itself is edgecommon's, proven for both daemons in tests/edgecommon.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.main import parse_args
from edgecommon.addresses import Address
from edgecommon.usage import UsageError


def test_defaults_follow_the_original():
    s = parse_args(["--insecure"])
    assert s.node_name == socket.gethostname().lower()
    assert s.sync_servers == ("localhost:50051",)
    assert s.pod_manifest_path == Path("/etc/kubernetes/manifests")
    assert s.data_dir == Path("/var/lib/k8s-edge/agent")
    assert (s.resync_interval, s.connect_timeout) == (10.0, 5.0)
    assert s.metrics_addr is None and s.insecure and s.retain_journal == 100_000


def test_original_flag_names_are_aliases():
    s = parse_args(["--insecure", "--node-name", "edge01", "--sync-interval", "30s", "--sync-timeout", "2s"])
    assert (s.resync_interval, s.connect_timeout) == (30.0, 2.0)


def test_sync_servers_repeat_or_comma_separate():
    s = parse_args(["--insecure", "--sync-server", "a:1,b:2", "--sync-server", "[::1]:3", "--sync-server",
                    "unix:/run/edge.sock"])
    assert s.sync_servers == ("a:1", "b:2", "[::1]:3", "unix:/run/edge.sock")


@pytest.mark.parametrize("flag", ["--resync-interval", "--sync-timeout"])
@pytest.mark.parametrize("text, seconds", [("10s", 10), ("1m30s", 90), ("250ms", 0.25), ("1.5h", 5400), ("7", 7),
                                           ("1d", 86400)])
def test_durations(flag, text, seconds):
    s = parse_args(["--insecure", flag, text])
    assert (s.resync_interval if flag == "--resync-interval" else s.connect_timeout) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10x", "-1s", "1s2", "ten", "0s"])
def test_bad_durations(text):
    with pytest.raises(UsageError, match="--resync-interval"):
        parse_args(["--insecure", "--resync-interval", text])


def test_log_level_is_any_case():
    assert parse_args(["--insecure", "--log-level", "debug"]).logging.level == "DEBUG"
    assert parse_args(["--insecure", "--log-level", "WARNING"]).logging.level == "WARNING"


def test_metrics_addr_forms():
    assert parse_args(["--insecure", "--metrics-addr", ":9478"]).metrics_addr == Address("", 9478)
    assert parse_args(["--insecure", "--metrics-addr", "127.0.0.1:0"]).metrics_addr == Address("127.0.0.1", 0)
