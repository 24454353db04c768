"""The manager's log at INFO says what changed state (a relist, a compaction), not each recorded change (#18).

The real Intake, Recorder and Compactor of a Daemon over a real LogStore, fed watch items
directly (no API server); the lines are captured from loguru at DEBUG and split by level.
"""

from __future__ import annotations

import asyncio
import json

from manager.daemon import Daemon
from manager.settings import Retention
from manager.sync_service import SyncSettings
from manager.watching import Changed, Listed
from tests.kit.builders import edgenode_yaml
from tests.kit.logs import captured_logs

NODES = ("edge01", "edge02", "edge03")


def edgenode(name: str, rev: int) -> dict:
    return json.loads(edgenode_yaml(name, "tenant", {"web": f"nginx:1.{rev}", "db": "redis"}))


def daemon_over(store) -> Daemon:
    return Daemon(store=store, custom=None, core=None, namespace=None, retention=Retention(keep_last=5),
                  compaction_interval=60, status_refresh_seconds=90, sync_settings=SyncSettings())


class TestLoggingStateChangesAtInfo:
    def test_recorded_changes_log_at_debug_only(self, store):
        daemon = daemon_over(store)
        daemon.intake.edgenode_item(Listed([edgenode(n, 0) for n in NODES], "1"))
        with captured_logs("DEBUG") as lines:
            for rev in range(1, 8):
                for n in NODES:
                    daemon.intake.edgenode_item(Changed("MODIFIED", edgenode(n, rev)))
        assert store.head_offset == 6 + 21  # each change recorded: one event each
        assert [line for line in lines if line.level != "DEBUG"] == []  # none at INFO or above
        per_event = [line.message for line in lines if line.message.startswith("recorded edge")]
        assert len(per_event) == 21 and "recorded edge03 put tenant/web at offset 27" in per_event  # there, at DEBUG

    def test_a_relist_and_a_compaction_log_one_info_line_each(self, store):
        daemon = daemon_over(store)
        with captured_logs("INFO") as lines:
            daemon.intake.edgenode_item(Listed([edgenode(n, 0) for n in NODES], "1"))
            for n in NODES:
                daemon.intake.edgenode_item(Changed("MODIFIED", edgenode(n, 1)))
            daemon.intake.edgenode_item(Listed([edgenode(n, 2) for n in NODES], "9"))
            asyncio.run(daemon.compactor.compact_once())
        assert [(line.level, line.message) for line in lines] == [
            ("INFO", "EdgeNodes listed: 3 object(s), 6 event(s) appended to catch up"),
            ("INFO", "EdgeNodes listed: 3 object(s), 3 event(s) appended to catch up"),
            ("INFO", "compaction dropped 7 event(s); the log now starts at offset 8"),
        ]
