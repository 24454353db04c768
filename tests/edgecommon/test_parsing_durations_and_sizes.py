"""Both daemons read durations and sizes with one syntax: Go's units plus days and weeks, Kubernetes' sizes."""

from __future__ import annotations

import pytest

from agent.main import parse_args as agent_args
from edgecommon.quantities import QuantityError, parse_duration, parse_size
from manager.main import parse_args as manager_args


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("1h30m", 5400), ("250ms", 0.25), ("7d", 7 * 86400), ("2w", 14 * 86400), ("1.5h", 5400),
    ("500us", 0.0005), ("500µs", 0.0005), ("100ns", 1e-7), (".5s", 0.5), ("7", 7), ("0.25", 0.25), ("1d12h", 129600),
    ("90S", 90), (" 10s ", 10), ("0", 0),
])
def test_durations_in_every_unit(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10x", "-1s", "1s2", "ten", "1 s", "inf", "nan", "-5", "1y"])
def test_what_is_not_a_duration_is_named(text):
    with pytest.raises(QuantityError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["1d", "90s", "1h30m", "250ms", "500us", "7"])
def test_both_daemons_accept_the_same_durations(text):
    seconds = parse_duration(text)
    agent = agent_args(["--insecure", "--resync-interval", text, "--sync-timeout", text])
    manager = manager_args(["--insecure", "--heartbeat-interval", text, "--watch-timeout", text,
                            "--status-refresh-interval", text, "--compaction-interval", text, "--retain-age", text])
    assert agent.resync_interval == agent.connect_timeout == seconds
    assert manager.sync.heartbeat_seconds == manager.watch_timeout_seconds == manager.status_refresh_seconds \
        == manager.store.compaction_interval == manager.store.retention.max_age_seconds == seconds


@pytest.mark.parametrize("text, size", [
    ("1048576", 2**20), ("512Mi", 512 * 2**20), ("2Gi", 2 * 2**30), ("1G", 10**9), ("10k", 10_000), ("3Ki", 3072),
    ("1 Ti", 2**40), ("5mb", 5 * 10**6), ("7b", 7),
])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "1.5Gi", "-1", "1Qi", "Gi"])
def test_what_is_not_a_size_is_named(text):
    with pytest.raises(QuantityError, match="not a size"):
        parse_size(text)
