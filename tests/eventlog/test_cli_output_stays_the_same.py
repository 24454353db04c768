"""edge-eventlog prints byte for byte what it printed before its reads moved to the stores' public read API.

The expected text (golden/cli_outputs.txt) was written by the tool before that change; a store's
random log_id, its temporary path and its size on disk are replaced by placeholders. To accept a
deliberate change of output: K8S_EDGE_UPDATE_GOLDEN=1 scripts/test tests/eventlog/test_cli_output_stays_the_same.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from eventlog import LogStore, ReplicaStore
from eventlog.encoding import u64, view_key, encode_view_value
from tests.kit.builders import delete, put
from tests.kit.files import raw_env
from tests.kit.processes import run_cli


GOLDEN = Path(__file__).resolve().parent / "golden" / "cli_outputs.txt"
LOG_ID = "0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000_000_000_000


def _set_log_id(path: Path) -> None:
    """A fixed log_id in place of the random one, so outputs can be compared."""
    env = raw_env(path)
    try:
        with env.begin(write=True) as txn:
            txn.put(b"log_id", LOG_ID.encode(), db=env.open_db(b"meta", txn=txn))
    finally:
        env.close()


def _stores(root: Path) -> None:
    """A compacted manager log of two nodes and its replica of edge01; a copy of both, tampered with."""
    for name in ("manager", "broken"):
        with LogStore(root / name / "eventlog") as log:
            for v in range(6):
                log.append([put("edge01", f"p{i}", v) for i in range(3)] + [put("edge02", "x", v)],
                           time_ns=T0 + v * 60 * 10**9)
            log.append([delete("edge01", "p2")], time_ns=T0 + 400 * 10**9)
            log.compact(keep_last=12)
        _set_log_id(root / name / "eventlog")
        with LogStore(root / name / "eventlog") as log, \
                ReplicaStore(root / name / "replica", node="edge01") as rep:
            snapshot = log.snapshot("edge01")
            rep.install_snapshot(snapshot, applied_ns=T0 + 450 * 10**9)
            log.append([put("edge02", "y", 1), put("edge01", "p0", 9)], time_ns=T0 + 500 * 10**9)
            rep.apply(log.read_node("edge01", after=snapshot.offset), log_id=LOG_ID, applied_ns=T0 + 510 * 10**9)
    (root / "agent").mkdir()
    (root / "manager" / "replica").rename(root / "agent" / "replica")
    env = raw_env(root / "broken" / "eventlog")
    try:
        with env.begin(write=True) as txn:
            txn.put(view_key("edge01", "default", "ghost"), encode_view_value(3, 0, b"{}"),
                    db=env.open_db(b"view", txn=txn, create=False))
            txn.put(u64(99), b"\x07garbage", db=env.open_db(b"log", txn=txn, create=False))
            txn.put(b"bad key", b"", db=env.open_db(b"log", txn=txn, create=False))
    finally:
        env.close()
    env = raw_env(root / "broken" / "replica")
    try:
        with env.begin(write=True) as txn:
            txn.put(view_key("edge09", "default", "z"), encode_view_value(3, 0, b"{}"),
                    db=env.open_db(b"view", txn=txn, create=False))
            txn.delete(u64(1), db=env.open_db(b"journal", txn=txn, create=False))
    finally:
        env.close()


COMMANDS: tuple[tuple[str, ...], ...] = (
    ("dump", "manager"),
    ("dump", "manager", "--format", "table", "--node", "edge02"),
    ("dump", "agent"),
    ("dump", "agent", "--format", "table"),
    ("stats", "manager"),
    ("stats", "manager", "--format", "json"),
    ("stats", "agent"),
    ("stats", "agent", "--format", "json"),
    ("verify", "manager"),
    ("verify", "agent"),
    ("verify", "broken"),
    ("verify", "broken/replica"),
    ("state", "manager", "--node", "edge01"),
    ("state", "manager", "--node", "edge01", "--at", "20", "--format", "table"),
    ("state", "agent", "--format", "table"),
    ("state", "manager", "--node", "edge01", "--at", "2"),
    ("export", "manager", "--from", "14", "--to", "25"),
    ("export", "manager"),
)


def _transcript(root: Path) -> str:
    out = []
    for cmd in COMMANDS:
        res = run_cli(cmd[0], root / cmd[1], *cmd[2:])
        out.append(f"$ edge-eventlog {' '.join(cmd)}\n[exit {res.returncode}]\n{res.stdout}[stderr]\n{res.stderr}")
    text = "\n".join(out).replace(str(root), "<ROOT>")
    return re.sub(r'("size_bytes": |size_bytes:\s+)\d+', r"\g<1><SIZE>", text)


def test_every_command_prints_what_it_printed_before(tmp_path):
    _stores(tmp_path)
    got = _transcript(tmp_path)
    if os.environ.get("K8S_EDGE_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text()
