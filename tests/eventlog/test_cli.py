"""edge-eventlog as a user runs it: every command on both store kinds, every failure in one line."""

from __future__ import annotations

import hashlib
import subprocess
import time

import lmdb
import orjson
import pytest

from eventlog import LogStore, ReplicaStore
from eventlog.encoding import u64
from tests.kit.builders import delete, put
from tests.kit.files import raw_env
from tests.kit.processes import cli_command, run_cli


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A manager data dir (log under eventlog/) compacted once, and an agent replica of edge01."""
    root = tmp_path_factory.mktemp("stores")
    with LogStore(root / "manager" / "eventlog") as log, ReplicaStore(root / "agent" / "replica", node="edge01") as rep:
        for v in range(10):
            log.append([put("edge01", f"p{i}", v) for i in range(3)] + [put("edge02", "x", v)],
                       time_ns=1_700_000_000_000_000_000 + v * 60 * 10**9)
        log.append([delete("edge01", "p2")], time_ns=1_700_000_000_000_000_000 + 600 * 10**9)
        log.compact(keep_last=20)  # log holds 22..41
        rep.install_snapshot(log.snapshot("edge01"))
        log.append([put("edge01", "p0", 99)])
        rep.apply(log.read_node("edge01", after=41), log_id=log.log_id)
    return root


def _ok(*args):
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    return res


def _fails(*args, expect: str, code: int | None = None):
    res = run_cli(*args)
    assert res.returncode != 0 if code is None else res.returncode == code
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert expect in lines[0], lines[0]
    return lines[0]


def test_dump_jsonl_with_filters(stores):
    log = stores / "manager"
    events = [orjson.loads(x) for x in _ok("dump", log).stdout.splitlines()]
    assert [e["offset"] for e in events] == list(range(22, 43))
    e = events[-1]
    assert (e["node"], e["op"], e["name"], e["manifest"]["kind"]) == ("edge01", "put", "p0", "Pod")
    assert e["source"] == {"uid": "uid-edge01", "resource_version": "99", "generation": 1}
    sel = [orjson.loads(x)["offset"] for x in _ok("dump", log, "--node", "edge02", "--from", 25, "--to", 36).stdout.splitlines()]
    assert sel == [28, 32, 36]
    # batch v was appended at 2023-11-14T22:13:20Z + v minutes: 22:19:20..22:21:20 are batches 6, 7, 8
    timed = [orjson.loads(x) for x in _ok("dump", log, "--since", "2023-11-14T22:19:20Z", "--until", "2023-11-14T23:21:20+01:00").stdout.splitlines()]
    assert [e["offset"] for e in timed] == list(range(25, 37))
    assert timed[0]["time"] == "2023-11-14T22:19:20.000Z"
    assert _ok("dump", log, "--since", "1h").stdout.splitlines() == [_ok("dump", log, "--from", 42).stdout.strip()]


def test_dump_table_and_agent_journal(stores):
    table = _ok("dump", stores / "manager", "--format", "table", "--to", 23).stdout.splitlines()
    assert table[0].split()[:4] == ["OFFSET", "TIME", "NODE", "OP"] and len(table) == 3
    assert "default/p" in table[1] and "uid-edge01/" in table[1]
    lines = [orjson.loads(x) for x in _ok("dump", stores / "agent").stdout.splitlines()]
    assert [x["kind"] for x in lines] == ["snapshot", "event"]
    assert lines[0]["snapshot"]["offset"] == 41 and lines[1]["offset"] == 42
    assert "snapshot" in _ok("dump", stores / "agent" / "replica", "--format", "table").stdout


def test_stats_of_both_kinds(stores):
    s = orjson.loads(_ok("stats", stores / "manager", "--format", "json").stdout)
    assert (s["role"], s["head_offset"], s["first_offset"], s["event_count"]) == ("manager", 42, 22, 21)
    nodes = {n["node"]: n for n in s["nodes"]}
    assert nodes["edge01"]["pods"] == 2 and nodes["edge02"]["events"] == 5
    a = orjson.loads(_ok("stats", stores / "agent", "--format", "json").stdout)
    assert (a["role"], a["node"], a["applied_offset"], a["log_id"]) == ("agent", "edge01", 42, s["log_id"])
    text = _ok("stats", stores / "manager").stdout
    assert "head_offset:" in text and "edge02" in text


def test_verify_both_kinds(stores):
    assert _ok("verify", stores / "manager").stdout.startswith("ok: manager store")
    assert _ok("verify", stores / "agent").stdout.startswith("ok: agent store")


def test_state_as_of_an_offset_and_of_the_replica(stores):
    now = orjson.loads(_ok("state", stores / "manager", "--node", "edge01").stdout)
    assert now["offset"] == 42 and [p["name"] for p in now["pods"]] == ["p0", "p1"]
    then = orjson.loads(_ok("state", stores / "manager", "--node", "edge01", "--at", 30).stdout)
    assert [p["name"] for p in then["pods"]] == ["p0", "p1", "p2"]
    rep = orjson.loads(_ok("state", stores / "agent").stdout)
    assert rep["pods"] == now["pods"] and rep["digest"] == now["digest"]
    assert "node edge01 as of offset 42: 2 pods" in _ok("state", stores / "agent", "--format", "table").stdout


def test_reading_never_modifies_a_store(stores):
    files = [stores / "manager" / "eventlog" / "data.mdb", stores / "agent" / "replica" / "data.mdb"]
    before = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    for path in (stores / "manager", stores / "agent"):
        for args in (("dump",), ("stats",), ("verify",), ("state", "--node", "edge01")):
            run_cli(args[0], path, *args[1:])
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in files] == before


def test_a_closed_pipe_is_not_an_error(stores):
    p = subprocess.Popen([*cli_command(), "dump", str(stores / "manager")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, bufsize=0)
    p.stdout.read(10)
    p.stdout.close()
    _, err = p.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_follow_stops_at_to(stores):
    t0 = time.monotonic()
    res = _ok("dump", stores / "manager", "--follow", "--from", 40, "--to", 41)
    assert [orjson.loads(x)["offset"] for x in res.stdout.splitlines()] == [40, 41]
    assert time.monotonic() - t0 < 30


# -- failure modes -----------------------------------------------------------


def test_path_missing_file_and_plain_directory(tmp_path):
    _fails("dump", tmp_path / "nope", expect="does not exist")
    (tmp_path / "file").write_text("x")
    _fails("stats", tmp_path / "file", expect="is a file")
    _fails("verify", tmp_path, expect="holds no store")


def test_foreign_and_empty_lmdb(tmp_path):
    env = lmdb.open(str(tmp_path / "foreign"))
    with env.begin(write=True) as txn:
        txn.put(b"hello", b"world")
    env.close()
    _fails("dump", tmp_path / "foreign", expect="not a k8s-edge store")
    lmdb.open(str(tmp_path / "empty")).close()
    _fails("stats", tmp_path / "empty", expect="empty LMDB environment")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "data.mdb").write_bytes(b"\0" * 100)
    _fails("verify", tmp_path / "junk", expect="junk")


@pytest.mark.parametrize(("fmt", "command", "expect"), [
    (99, "dump", "newer than this version reads"),
    (1, "stats", "older than this version reads"),
])
def test_other_store_formats(tmp_path, fmt, command, expect):
    LogStore(tmp_path / "log").close()
    env = raw_env(tmp_path / "log")
    with env.begin(write=True) as txn:
        txn.put(b"format", u64(fmt), db=env.open_db(b"meta", txn=txn))
    env.close()
    _fails(command, tmp_path / "log", expect=expect)


def test_offsets_out_of_range_and_compacted(stores):
    log = stores / "manager"
    _fails("state", log, "--node", "edge01", "--at", 43, expect="beyond the head")
    _fails("state", log, "--node", "edge01", "--at", 5, expect="was compacted")
    _fails("dump", log, "--from", 3, expect="were compacted")
    _fails("dump", log, "--from", 100, expect="beyond the head")
    _fails("dump", log, "--from", 9, "--to", 8, expect="is after --to")
    _fails("state", stores / "agent", "--at", 30, expect="only its current replica")


def test_bad_times_nodes_and_arguments(stores):
    log = stores / "manager"
    _fails("dump", log, "--since", "yesterday", expect="bad time 'yesterday'")
    _fails("dump", log, "--until", "10 minutes", expect="bad time")
    _fails("state", log, "--node", "edge99", expect="node 'edge99' is not in this log (known: edge01, edge02)")
    _fails("dump", log, "--node", "edge99", expect="not in this log")
    _fails("state", log, expect="needs --node")
    _fails("dump", stores / "agent", "--node", "edge02", expect="replica of 'edge01'")
    _fails("dump", log, "--from", "x", expect="not a number", code=2)
    _fails("state", log, "--at", "-3", expect="offset -3 is negative", code=2)
    _fails("frobnicate", log, expect="invalid choice", code=2)
    _fails(expect="required", code=2)
