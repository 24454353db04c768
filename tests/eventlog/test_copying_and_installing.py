"""Copying a store (what a leader sends a standby) and installing a copy in place of a store, crash-safe."""

from __future__ import annotations

import subprocess
import sys

import pytest

import eventlog.installing as installing
from eventlog import LogStore, NotAStoreError
from eventlog.installing import install_store, recover_store_dir
from eventlog.verify import verify_log
from tests.kit.builders import delete, put
from tests.kit.files import log_records, mode
from tests.kit.processes import APPENDER


def test_a_copy_has_the_same_identity_meta_records_and_view(tmp_path):
    with LogStore(tmp_path / "log") as src:
        for v in range(20):
            src.append([put(f"edge{v % 3}", f"p{v % 7}", v), delete("edge1", f"p{v % 5}")])
        src.compact(keep_last=15)
        info = src.copy_to(tmp_path / "copy")
        assert (info.log_id, info.head_offset, info.first_offset) == (src.log_id, src.head_offset, src.first_offset)
        assert mode(tmp_path / "copy") == 0o700 and mode(tmp_path / "copy" / "data.mdb") == 0o600
        with LogStore(tmp_path / "copy") as copy:
            assert (copy.log_id, copy.head_offset, copy.first_offset, copy.log_bytes) == (
                src.log_id, src.head_offset, src.first_offset, src.log_bytes)
            assert log_records(copy) == log_records(src)
            assert copy.nodes() == src.nodes() and copy.all_pods() == src.all_pods()
            assert {n.node: copy.base(n.node) for n in copy.nodes()} == {n.node: src.base(n.node) for n in src.nodes()}
            assert verify_log(copy) == []
            copy.append([put("edge9", "new")])  # a copy is a store like any other
            assert copy.head_offset == src.head_offset + 1


def test_a_copy_goes_only_into_an_empty_directory(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    with LogStore(tmp_path / "log") as src:
        src.append([put("edge01", "a")])
        for dest in ("busy", "file"):
            with pytest.raises(NotAStoreError, match="not an empty directory"):
                src.copy_to(tmp_path / dest)
        (tmp_path / "empty").mkdir()
        assert src.copy_to(tmp_path / "empty").head_offset == 1


def test_a_copy_of_a_store_being_appended_to_is_one_consistent_moment(tmp_path, procs):
    path = tmp_path / "log"
    writer = subprocess.Popen([sys.executable, str(APPENDER), str(path), "100000", "32"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    procs.append(writer)
    for _ in range(5):
        assert writer.stdout.readline(), "writer exited early"
    with LogStore(path, readonly=True) as src:
        infos = []
        for i in range(3):  # each copy taken while the writer commits more batches
            infos.append(src.copy_to(tmp_path / f"copy{i}"))
            assert writer.stdout.readline(), "writer exited early"
        assert writer.poll() is None, "the writer stopped while the copies were taken"
        live = log_records(src)
    for i, info in enumerate(infos):
        with LogStore(tmp_path / f"copy{i}") as copy:
            head = copy.head_offset
            assert (copy.log_id, head) == (info.log_id, info.head_offset) and head % 32 == 0 and head > 0
            assert log_records(copy) == live[:head]
            assert verify_log(copy) == []
    assert infos[0].head_offset < infos[-1].head_offset <= len(live)


def _two_stores(tmp_path):
    """An installed store (the old) and a received copy of another log (the new), both closed."""
    with LogStore(tmp_path / "eventlog") as old, LogStore(tmp_path / "leader") as leader:
        old.append([put("edge01", "mine")])
        leader.append([put("edge01", "a"), put("edge02", "b")])
        leader.copy_to(tmp_path / "eventlog.incoming")
        return old.log_id, leader.log_id


def _installed(tmp_path) -> tuple[str, int]:
    with LogStore(tmp_path / "eventlog", readonly=True) as s:
        assert verify_log(s) == []
        return s.log_id, s.head_offset


def test_install_replaces_the_store_and_leaves_nothing_behind(tmp_path):
    _, new_id = _two_stores(tmp_path)
    install_store(tmp_path / "eventlog.incoming", tmp_path / "eventlog")
    assert _installed(tmp_path) == (new_id, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eventlog", "leader"]
    recover_store_dir(tmp_path / "eventlog")  # nothing to recover
    assert _installed(tmp_path) == (new_id, 2)


def test_install_into_a_data_dir_with_no_store_yet(tmp_path):
    with LogStore(tmp_path / "leader") as leader:
        leader.append([put("edge01", "a")])
        leader.copy_to(tmp_path / "eventlog.incoming")
    install_store(tmp_path / "eventlog.incoming", tmp_path / "eventlog")
    assert _installed(tmp_path)[1] == 1


def test_install_refuses_what_is_not_a_store_or_has_a_name_of_the_dance(tmp_path):
    (tmp_path / "eventlog.incoming").mkdir()
    with pytest.raises(NotAStoreError, match="holds no store"):
        install_store(tmp_path / "eventlog.incoming", tmp_path / "eventlog")
    with LogStore(tmp_path / "eventlog.new") as received:  # recovery would install a half-received .new
        received.append([put("edge01", "a")])
    with pytest.raises(ValueError, match="received under another name than eventlog.new"):
        install_store(tmp_path / "eventlog.new", tmp_path / "eventlog")


class _Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", [0, 1, 2, 3])
def test_a_crash_at_any_step_of_an_install_recovers_a_whole_store(tmp_path, monkeypatch, crash_at):
    """Cut the dance before rename `crash_at` (3: while the old store is removed); recovery gives old or new, whole."""
    old_id, new_id = _two_stores(tmp_path)
    renames = []
    real_rename, real_rmtree = installing._rename, installing.shutil.rmtree

    def rename(src, dest):
        if len(renames) == crash_at:
            raise _Crash
        renames.append((src.name, dest.name))
        real_rename(src, dest)

    def half_rmtree(path):  # a crash in the middle of removing the old store: its data file is gone, the dir stays
        (path / "data.mdb").unlink()
        raise _Crash

    monkeypatch.setattr(installing, "_rename", rename)
    monkeypatch.setattr(installing.shutil, "rmtree", half_rmtree)
    with pytest.raises(_Crash):
        install_store(tmp_path / "eventlog.incoming", tmp_path / "eventlog")
    monkeypatch.setattr(installing, "_rename", real_rename)
    monkeypatch.setattr(installing.shutil, "rmtree", real_rmtree)

    recover_store_dir(tmp_path / "eventlog")
    log_id, head = _installed(tmp_path)
    assert (log_id, head) == ((old_id, 1) if crash_at == 0 else (new_id, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["eventlog", "leader"] + (["eventlog.incoming"] if crash_at == 0 else []))
    if crash_at == 0:  # the install had not begun: it can run again from the start
        install_store(tmp_path / "eventlog.incoming", tmp_path / "eventlog")
        assert _installed(tmp_path) == (new_id, 2)
