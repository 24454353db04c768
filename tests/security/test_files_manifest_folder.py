"""The manifest folder against planted files: hard links and symlinks are not written through, a FIFO does not block.

Attack: someone who can write the static-pod folder (but not the files it links to) plants
a hard link or symlink at the reconciler's temp name, or a symlink or FIFO at a managed
file's name, to make the agent overwrite another file, read one, or hang while holding
the reconciler's lock. Real folders, the real reconciler.
"""

from __future__ import annotations

import os
import stat
import threading

from agent.reconciling import ManifestReconciler, manifest_file_name
from eventlog import PodEntry, canonical_manifest

VICTIM = b"root:x:0:0:root:/root:/bin/bash\n"


def pod(name: str, image: str = "nginx:1.25") -> PodEntry:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": image}]}}
    return PodEntry("ns", name, 1, canonical_manifest(body))


class Desired:
    """The desired pods, standing in for the replica (the reconciler's own logic under test)."""

    def __init__(self, *pods: PodEntry) -> None:
        self.pods = {p.key: p for p in pods}

    def __call__(self):
        return dict(self.pods)


def _regular_with(path, data: bytes) -> bool:
    st = os.lstat(path)
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and path.read_bytes() == data


def test_a_hard_link_planted_at_the_temp_name_is_not_written_through(tmp_path):
    folder, victim = tmp_path / "manifests", tmp_path / "passwd"
    folder.mkdir()
    victim.write_bytes(VICTIM)
    desired = Desired(pod("web"))
    r = ManifestReconciler(folder, desired=desired)
    assert r.reconcile_full().ok
    new = pod("web", "nginx:2")
    fname = manifest_file_name("ns", "web")
    os.link(victim, folder / f".{fname}.tmp")  # planted between two reconciles
    desired.pods[new.key] = new
    outcome = r.reconcile_changes()  # the pass after an applied batch: it does not scan the folder
    assert outcome.ok and outcome.written == 1
    assert victim.read_bytes() == VICTIM and os.stat(victim).st_nlink == 1  # untouched, the link is gone
    assert _regular_with(folder / fname, new.manifest)  # and the manifest was written all the same
    assert not (folder / f".{fname}.tmp").exists()


def test_a_symlink_planted_at_the_temp_name_is_not_written_through(tmp_path):
    folder, victim = tmp_path / "manifests", tmp_path / "passwd"
    folder.mkdir()
    victim.write_bytes(VICTIM)
    desired = Desired()
    r = ManifestReconciler(folder, desired=desired)
    assert r.reconcile_full().ok
    fname = manifest_file_name("ns", "web")
    os.symlink(victim, folder / f".{fname}.tmp")
    desired.pods[("ns", "web")] = pod("web")
    assert r.reconcile_changes().ok
    assert victim.read_bytes() == VICTIM
    assert _regular_with(folder / fname, pod("web").manifest)


def test_the_full_scan_neither_follows_a_symlink_nor_blocks_on_a_fifo(tmp_path):
    folder, outside = tmp_path / "manifests", tmp_path / "outside.json"
    folder.mkdir()
    web, db = pod("web"), pod("db")
    outside.write_bytes(web.manifest)  # the desired bytes: followed, the link would pass for in sync
    os.symlink(outside, folder / manifest_file_name("ns", "web"))
    os.mkfifo(folder / manifest_file_name("ns", "db"))  # opened for reading, it would block forever
    os.mkfifo(folder / manifest_file_name("ns", "gone"))  # ours by name, no longer desired
    r = ManifestReconciler(folder, desired=Desired(web, db))
    result = []
    t = threading.Thread(target=lambda: result.append(r.reconcile_full()), daemon=True)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), "the full scan blocked on the FIFO"
    outcome = result[0]
    assert outcome.ok, outcome.message
    assert _regular_with(folder / manifest_file_name("ns", "web"), web.manifest)  # a file of ours, not a link
    assert _regular_with(folder / manifest_file_name("ns", "db"), db.manifest)
    assert not os.path.lexists(folder / manifest_file_name("ns", "gone"))
    assert outside.read_bytes() == web.manifest  # the link's target is untouched
    assert r.reconcile_full().written == 0  # and the folder is in sync now
