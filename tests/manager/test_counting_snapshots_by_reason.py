"""Snapshots are counted by their reason's enum value: one bounded label per reason, never the words.

The real AgentActivity, StatusWriter and Metrics; a recording patch function stands in for the API.
"""

from __future__ import annotations

import re

from prometheus_client import generate_latest

from eventlog import SnapshotCause, SnapshotReason
from manager.agent_activity import AgentActivity
from manager.metrics import Metrics
from manager.status import StatusWriter

LABEL = re.compile(r"[a-z][a-z_]*")  # bounded: no offsets, no spaces


def test_every_reason_counts_under_its_own_label_whatever_its_words():
    metrics = Metrics()
    activity = AgentActivity(status=StatusWriter(patch=lambda *_: None, head_offset=lambda _node: 0), metrics=metrics)
    for i, reason in enumerate(SnapshotReason, start=1):
        for offset in range(i):  # the words differ per snapshot (offsets); the label must not
            activity.snapshot_sent("edge01", cause=SnapshotCause(reason, f"{reason.name} at offset {offset}"))
    text = generate_latest(metrics.registry).decode()
    counted = dict(re.findall(r'k8s_edge_manager_snapshots_sent_total\{reason="([^"]*)"\} (\S+)', text))
    assert counted == {r.value: f"{float(i)}" for i, r in enumerate(SnapshotReason, start=1)}
    assert all(LABEL.fullmatch(label) for label in counted)


def test_the_labels_are_the_ones_dashboards_already_use():
    # the enum replaced a substring search over the words; the label values it produced are kept
    assert {r.value for r in SnapshotReason} == {"empty_replica", "unknown_log_id", "beyond", "compacted", "digest"}
