"""Exports outlive compaction: JSON Lines that verify against the log's digests, alone and as a chain."""

from __future__ import annotations

import gzip

import orjson

from eventlog import LogStore
from eventlog.export import export_file, verify_exports
from eventlog.verify import verify_log
from tests.kit.builders import delete, put
from tests.kit.processes import run_cli


def _fill(store: LogStore, rounds: int = 12) -> None:
    for r in range(rounds):
        store.append([put(f"edge{n}", f"p{r % 3}", r) for n in range(3)] + [delete("edge1", f"p{(r + 1) % 3}")],
                     time_ns=(r + 1) * 10**9)


def test_what_compaction_drops_exported_in_steps_verifies_as_one_chain(tmp_path):
    out = tmp_path / "audit"
    with LogStore(tmp_path / "log") as store:
        _fill(store)
        for keep in (30, 15, 5):  # three compactions, each exporting what it drops first
            cut = store.compaction_cut(keep_last=keep)
            export_file(store, out, first=store.first_offset, last=cut - 1)
            store.compact_before(cut)
        _fill(store, 4)
        export_file(store, out, first=store.first_offset, last=store.head_offset)  # the rest, from the live log
        head = store.head_offset
        assert verify_log(store) == []
    files = sorted(out.glob("*.jsonl"))
    assert len(files) == 4
    rotated = files[0].with_name(files[0].name + ".gz")  # what an operator's log rotation leaves
    rotated.write_bytes(gzip.compress(files[0].read_bytes()))
    files[0].unlink()
    files[0] = rotated
    check = verify_exports(files)
    assert check.problems == ()
    assert (check.first_offset, check.last_offset, check.events) == (1, head, head)
    res = run_cli("verify-export", *files)
    assert res.returncode == 0 and res.stdout.startswith("ok: 4 export file(s), log "), res.stderr


def test_a_changed_manifest_a_missing_file_or_a_truncated_file_is_found(tmp_path):
    out = tmp_path / "audit"
    with LogStore(tmp_path / "log") as store:
        _fill(store)
        a = export_file(store, out, first=1, last=20)
        b = export_file(store, out, first=21, last=store.head_offset)
    lines = b.read_bytes().splitlines()
    ev = orjson.loads(lines[3])
    ev["manifest"]["spec"]["containers"][0]["image"] = "evil:latest"
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"\n".join([*lines[:3], orjson.dumps(ev), *lines[4:]]) + b"\n")
    problems = verify_exports([a, tampered]).problems
    assert any(p.startswith(f"{tampered}:4: node ") and "replay gives" in p for p in problems), problems
    assert verify_exports([a, b]).problems == ()  # the untampered pair chains
    with LogStore(tmp_path / "log") as store:
        c = export_file(store, tmp_path / "other", first=30, last=store.head_offset)
    assert any("gap" in p for p in verify_exports([a, c]).problems)

    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"\n".join(a.read_bytes().splitlines()[:-3]) + b"\n")
    assert any("truncated" in p for p in verify_exports([cut]).problems)
    res = run_cli("verify-export", a, tampered)
    assert res.returncode == 1 and "problem(s)" in res.stderr and "Traceback" not in res.stderr


def test_the_cli_exports_a_range_and_refuses_bad_ones_in_one_line(tmp_path):
    with LogStore(tmp_path / "data" / "eventlog") as store:
        _fill(store)
        store.compact(keep_last=10)
        first, head = store.first_offset, store.head_offset
    f = tmp_path / "x.jsonl"
    res = run_cli("export", tmp_path / "data", "-o", f)
    assert res.returncode == 0, res.stderr
    assert f"exported offsets {first}..{head}" in res.stderr
    assert verify_exports([f]).problems == ()
    res = run_cli("export", tmp_path / "data", "--from", "1")
    assert res.returncode == 1 and "were compacted" in res.stderr and len(res.stderr.splitlines()) == 1
    res = run_cli("verify-export", tmp_path / "nope.jsonl")
    assert res.returncode == 1 and "no such file" in res.stderr
