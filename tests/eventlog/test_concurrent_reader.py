"""Readers in other processes see a gap-free prefix of a log another process appends to."""

from __future__ import annotations

import subprocess
import sys

import orjson

from eventlog import LogStore
from tests.kit.processes import APPENDER, cli_command, run_cli


BATCHES, BATCH = 150, 16
TOTAL = BATCHES * BATCH


def test_follow_and_repeated_dumps_while_appending(tmp_path, procs):
    path = tmp_path / "log"
    LogStore(path).close()  # exists before the reader starts
    follower = subprocess.Popen([*cli_command(), "dump", str(path), "--follow", "--to", str(TOTAL)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    procs.append(follower)
    writer = subprocess.Popen([sys.executable, str(APPENDER), str(path), str(BATCHES), str(BATCH), "0.005"],
                              stdout=subprocess.DEVNULL, start_new_session=True)
    procs.append(writer)

    dumps = []
    while writer.poll() is None:
        res = run_cli("dump", path)
        assert res.returncode == 0, res.stderr
        offsets = [orjson.loads(line)["offset"] for line in res.stdout.splitlines()]
        assert offsets == list(range(1, len(offsets) + 1))  # a gap-free prefix
        assert len(offsets) % BATCH == 0  # never half a batch
        dumps.append(len(offsets))
        check = run_cli("verify", path)  # verify on a live store
        assert check.returncode == 0, check.stdout + check.stderr
    assert writer.wait(timeout=120) == 0
    assert dumps == sorted(dumps) and len(dumps) >= 2

    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err
    events = [orjson.loads(line) for line in out.splitlines()]
    assert [e["offset"] for e in events] == list(range(1, TOTAL + 1))
    assert [e["manifest"]["batch"] for e in events] == [o // BATCH for o in range(TOTAL)]
    final = run_cli("dump", path, "--from", TOTAL - 1)
    assert [orjson.loads(x)["offset"] for x in final.stdout.splitlines()] == [TOTAL - 1, TOTAL]


def test_follow_on_an_agent_store_sees_new_journal_lines(tmp_path, procs):
    from eventlog import ReplicaStore
    from tests.kit.builders import put
    with LogStore(tmp_path / "log") as log, ReplicaStore(tmp_path / "rep", node="edge0") as rep:
        log.append([put("edge0", "a")])
        rep.install_snapshot(log.snapshot("edge0"))
        follower = subprocess.Popen([*cli_command(), "dump", str(tmp_path / "rep"), "--follow"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(follower)
        assert orjson.loads(follower.stdout.readline())["kind"] == "snapshot"
        log.append([put("edge0", "b")])
        rep.apply(log.read_node("edge0", after=1), log_id=log.log_id)
        line = orjson.loads(follower.stdout.readline())
        assert (line["kind"], line["offset"], line["name"]) == ("event", 2, "b")
