"""The manifest reconciler on real folders: naming, atomic writes, foreign files, repair, failures."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.reconciling import ManifestReconciler, manifest_file_name, parse_manifest_file_name
from eventlog import PodEntry, canonical_manifest

LABEL = r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?"


def pod(ns: str, name: str, image: str = "nginx:1.25", offset: int = 1) -> PodEntry:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": image}]}}
    return PodEntry(ns, name, offset, canonical_manifest(body))


class Desired:
    """A mutable desired state standing in for the replica (pure unit tests of our own logic)."""

    def __init__(self, *pods: PodEntry) -> None:
        self.pods = {p.key: p for p in pods}

    def put(self, p: PodEntry) -> None:
        self.pods[p.key] = p

    def delete(self, ns: str, name: str) -> None:
        del self.pods[(ns, name)]

    def __call__(self):
        return dict(self.pods)


FOREIGN = {
    "kube-apiserver.yaml": b"apiVersion: v1\nkind: Pod\n",
    "nginx.json": b'{"kind":"Pod"}',
    "k8s-edge-default-nginx.json": b"{}",  # looks like ours but is not the scheme
    "k8s-edge_a_b_c.json": b"{}",  # three parts: not ours
    "k8s-edge_default_web.yaml": b"x",  # wrong suffix: not ours
    ".k8s-edge_other.json.tmp": b"x",  # a dot-file not of our scheme
    ".hidden": b"secret",
}


def put_foreign(folder: Path) -> dict[str, tuple[bytes, int]]:
    for n, data in FOREIGN.items():
        (folder / n).write_bytes(data)
    os.mkdir(folder / "subdir")
    return snapshot_foreign(folder)


def snapshot_foreign(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {n: ((folder / n).read_bytes(), (folder / n).stat().st_mtime_ns) for n in FOREIGN}


def managed(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if parse_manifest_file_name(p.name)}


def expected(desired: Desired) -> dict[str, bytes]:
    return {manifest_file_name(ns, n): p.manifest for (ns, n), p in desired.pods.items()}


def test_file_names_say_owner_namespace_and_pod():
    assert manifest_file_name("default", "nginx") == "k8s-edge_default_nginx.json"
    assert manifest_file_name("team--a", "web--1.v2") == "k8s-edge_team--a_web--1.v2.json"
    assert parse_manifest_file_name("k8s-edge_team--a_web--1.v2.json") == ("team--a", "web--1.v2")
    for foreign in FOREIGN:
        assert parse_manifest_file_name(foreign) is None
    for bad_ns, bad_name in [("Default", "x"), ("a_b", "x"), ("ns", "a_b"), ("ns", "../x"), ("", "x"), ("ns", ""),
                             ("ns", "x" * 250)]:
        with pytest.raises(ValueError):
            manifest_file_name(bad_ns, bad_name)


@settings(max_examples=300, deadline=None)
@given(ns=st.from_regex(rf"\A{LABEL}\Z"), name=st.from_regex(rf"\A{LABEL}(\.{LABEL}){{0,3}}\Z"))
def test_file_names_round_trip(ns, name):
    assert parse_manifest_file_name(manifest_file_name(ns, name)) == (ns, name)


def test_full_reconcile_writes_exact_bytes_atomically_and_leaves_foreign_files(tmp_path):
    foreign = put_foreign(tmp_path)
    desired = Desired(pod("default", "nginx"), pod("other", "nginx", "nginx:1.26"), pod("default", "web.v1"))
    rec = ManifestReconciler(tmp_path, desired=desired)
    out = rec.reconcile_full()
    assert out.ok and out.written == 3 and out.managed == 3
    assert managed(tmp_path) == expected(desired)  # same pod name in two namespaces: two files
    for n in expected(desired):
        assert stat.S_IMODE((tmp_path / n).stat().st_mode) == 0o600
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp") and p not in FOREIGN]
    assert snapshot_foreign(tmp_path) == foreign
    assert (tmp_path / "subdir").is_dir()


def test_changes_touch_only_changed_pods(tmp_path):
    foreign = put_foreign(tmp_path)
    desired = Desired(*(pod("ns", f"p{i}") for i in range(20)))
    rec = ManifestReconciler(tmp_path, desired=desired)
    assert rec.reconcile_full().written == 20
    inodes = {n: (tmp_path / n).stat().st_ino for n in expected(desired)}
    desired.put(pod("ns", "p3", "nginx:2", offset=30))
    desired.delete("ns", "p7")
    desired.put(pod("ns", "new", offset=31))
    out = rec.reconcile_changes()
    assert (out.ok, out.written, out.removed, out.managed) == (True, 2, 1, 20)
    assert managed(tmp_path) == expected(desired)
    for n, ino in inodes.items():
        if n not in ("k8s-edge_ns_p3.json", "k8s-edge_ns_p7.json"):
            assert (tmp_path / n).stat().st_ino == ino, f"{n} was rewritten without a change"
    assert rec.reconcile_changes().written == 0
    assert snapshot_foreign(tmp_path) == foreign


def test_full_reconcile_repairs_hand_deleted_edited_and_stale_files(tmp_path):
    foreign = put_foreign(tmp_path)
    desired = Desired(pod("ns", "a"), pod("ns", "b"), pod("ns", "c"))
    rec = ManifestReconciler(tmp_path, desired=desired)
    rec.reconcile_full()
    (tmp_path / "k8s-edge_ns_a.json").unlink()  # hand-deleted
    (tmp_path / "k8s-edge_ns_b.json").write_bytes(b'{"edited":true}')  # hand-edited
    (tmp_path / "k8s-edge_old_gone.json").write_bytes(b"{}")  # left by an earlier run, no longer desired
    (tmp_path / ".k8s-edge_ns_c.json.tmp").write_bytes(b"half")  # a crash between write and rename
    assert rec.reconcile_changes().written == 0  # the incremental pass trusts its record and reads no files
    out = rec.reconcile_full()
    assert (out.ok, out.written, out.removed) == (True, 2, 1)
    assert managed(tmp_path) == expected(desired)
    assert not (tmp_path / ".k8s-edge_ns_c.json.tmp").exists()
    assert snapshot_foreign(tmp_path) == foreign


def test_fresh_reconciler_adopts_and_prunes_files_of_an_earlier_process(tmp_path):
    desired = Desired(pod("ns", "a"), pod("ns", "b"))
    ManifestReconciler(tmp_path, desired=desired).reconcile_full()
    desired.delete("ns", "a")  # changed while no agent ran (the original forgot such files forever)
    out = ManifestReconciler(tmp_path, desired=desired).reconcile_full()
    assert (out.written, out.removed, out.managed) == (0, 1, 1)
    assert managed(tmp_path) == expected(desired)


def test_pods_whose_names_cannot_be_files_are_reported_not_written(tmp_path):
    desired = Desired(pod("ns", "ok"), pod("ns", "bad_name"))
    out = ManifestReconciler(tmp_path, desired=desired).reconcile_full()
    assert not out.ok and "bad_name" in out.message
    assert managed(tmp_path) == {"k8s-edge_ns_ok.json": desired.pods[("ns", "ok")].manifest}


def test_missing_folder_fails_softly_and_recovers(tmp_path):
    folder = tmp_path / "manifests"
    desired = Desired(pod("ns", "a"))
    rec = ManifestReconciler(folder, desired=desired)
    for run in (rec.reconcile_full, rec.reconcile_changes):
        out = run()
        assert not out.ok and "does not exist" in out.message, out
    assert not folder.exists()  # never created: a typo in --pod-manifest-path must not make folders
    folder.mkdir()
    out = rec.reconcile_full()
    assert out.ok and managed(folder) == expected(desired)


def test_folder_under_a_file_fails_softly(tmp_path):
    (tmp_path / "file").write_text("x")
    out = ManifestReconciler(tmp_path / "file" / "manifests", desired=Desired(pod("ns", "a"))).reconcile_full()
    assert not out.ok and "manifests" in out.message
    out = ManifestReconciler(tmp_path / "file", desired=Desired(pod("ns", "a"))).reconcile_full()
    assert not out.ok and "not a directory" in out.message


@pytest.fixture
def immutable(tmp_path):
    """Make a folder unwritable even for root: `chattr +i` (chmod does not stop root)."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr not installed")
    done: list[Path] = []

    def make(folder: Path) -> None:
        r = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot make a folder immutable here: {r.stderr.strip()}")
        done.append(folder)

    def undo(folder: Path) -> None:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
        done.remove(folder)

    make.undo = undo  # type: ignore[attr-defined]
    yield make
    for f in done:
        subprocess.run(["chattr", "-i", str(f)], check=False)


def test_unwritable_folder_fails_softly_changes_nothing_and_recovers(tmp_path, immutable):
    foreign = put_foreign(tmp_path)
    desired = Desired(pod("ns", "a"), pod("ns", "b"))
    rec = ManifestReconciler(tmp_path, desired=desired)
    rec.reconcile_full()
    before = managed(tmp_path)
    desired.put(pod("ns", "a", "nginx:2", offset=5))
    desired.delete("ns", "b")
    desired.put(pod("ns", "c", offset=6))
    immutable(tmp_path)
    for run in (rec.reconcile_changes, rec.reconcile_full, rec.reconcile_changes):
        out = run()
        assert not out.ok and "Operation not permitted" in out.message, out
        assert managed(tmp_path) == before
    immutable.undo(tmp_path)
    out = rec.reconcile_changes()  # failed writes left the record, so even the incremental pass retries them
    assert out.ok, out
    assert managed(tmp_path) == expected(desired)
    assert snapshot_foreign(tmp_path) == foreign
