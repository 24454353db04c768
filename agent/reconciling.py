"""The manifest reconciler: makes the agent's files in the kubelet static-pod folder equal the replica.

Owns the pod manifest folder (`--pod-manifest-path`) and nothing else; reads the
replica only through `ReplicaStore.pods()` and never writes it. Imports no grpc,
no kubernetes and nothing from `manager`.

File naming: a pod `<name>` of namespace `<namespace>` is the file
`k8s-edge_<namespace>_<name>.json`. `_` is allowed neither in a namespace (a
DNS-1123 label) nor in a pod name (a DNS-1123 subdomain), so the name is
unambiguous, an operator sees at a glance that k8s-edge owns the file and which
pod it holds, and a file that does not match this scheme is never ours. The
original proof of concept wrote `<pod>.json`: two namespaces' pods of the same
name collided, and it could not tell its own files from an operator's, so it
forgot them across restarts. Files that do not match the scheme are NEVER
touched (read, rewritten or removed).

Writing: the manifest bytes of the replica (canonical JSON; kubelet decodes
JSON) go to the dot-file `.k8s-edge_<namespace>_<name>.json.tmp` in the same
folder (kubelet ignores dot-files), are fsynced, renamed over the target, and
the folder is fsynced once per reconcile. The temp file is unlinked first and
opened O_CREAT|O_EXCL|O_NOFOLLOW, so a hard link or symlink planted at its name
is never written through; the full scan opens O_NOFOLLOW|O_NONBLOCK and reads
regular files only (a symlink is not followed, a FIFO does not block). Mode 0600, as kubeadm writes static
pods: manifests may carry environment values. Such temp files left by a crash
are removed by the next full reconcile.

Two passes:
- `reconcile_full()` (start-up, the resync timer) lists the folder, reads every
  managed file and repairs whatever differs: hand-deleted, edited, stale, and
  stale temp files.
- `reconcile_changes()` (after every applied batch) compares the replica with
  the in-memory record of what this process wrote (a hash per file) and
  touches only the pods that changed, without reading the folder.

The folder is never created: a missing, unwritable or non-directory path gives
a failed `Outcome` (logged once per distinct error), the replica is untouched,
and the next reconcile retries.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path

from loguru import logger

from edgecommon.names import is_dns1123_label, is_dns1123_subdomain
from eventlog import PodEntry, PodKey

PREFIX = "k8s-edge_"
SUFFIX = ".json"
TEMP_SUFFIX = ".tmp"
FILE_MODE = 0o600
_PARALLEL_FROM = 16  # fewer changed files are written in the caller's thread
_WRITERS = 8
NAME_MAX = 255  # bytes in one file name on Linux file systems

_MANAGED_RE = re.compile(rf"{re.escape(PREFIX)}([^_/]+)_([^_/]+){re.escape(SUFFIX)}")
_TEMP_RE = re.compile(rf"\.{re.escape(PREFIX)}([^_/]+)_([^_/]+){re.escape(SUFFIX)}{re.escape(TEMP_SUFFIX)}")


def manifest_file_name(namespace: str, name: str) -> str:
    """The file that holds a pod's manifest; raises ValueError for a name that cannot be one."""
    if not is_dns1123_label(namespace):
        raise ValueError(f"namespace {namespace!r} is not a DNS-1123 label")
    if not is_dns1123_subdomain(name):
        raise ValueError(f"pod name {name!r} in namespace {namespace} is not a DNS-1123 subdomain")
    fname = f"{PREFIX}{namespace}_{name}{SUFFIX}"
    if len(_temp_name(fname).encode()) > NAME_MAX:
        raise ValueError(f"pod {namespace}/{name}: name too long for a manifest file name")
    return fname


def parse_manifest_file_name(fname: str) -> PodKey | None:
    """(namespace, name) of a managed file name; None for every file k8s-edge does not own."""
    m = _MANAGED_RE.fullmatch(fname)
    return (m.group(1), m.group(2)) if m else None


def _temp_name(fname: str) -> str:
    return f".{fname}{TEMP_SUFFIX}"


def _content_hash(data: bytes) -> bytes:
    return blake2b(data, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reconcile did and whether the folder now equals the replica."""

    ok: bool
    message: str = ""  # the first error, when not ok
    managed: int = 0  # managed manifest files after this reconcile
    written: int = 0
    removed: int = 0
    errors: int = 0
    full: bool = False
    seconds: float = 0.0


@dataclass(slots=True)
class ReconcileStats:
    """Counters since start, for metrics."""

    full: int = 0
    incremental: int = 0
    written: int = 0
    removed: int = 0
    write_errors: int = 0
    last: Outcome | None = None
    first_ok: bool = False  # a reconcile has succeeded at least once (readiness)


class ManifestReconciler:
    """Keeps the managed files of one static-pod folder equal to a set of desired pods.

    Thread-safe: one lock serialises the passes, since the timer and the sync
    client may ask at the same time and both run in worker threads.
    """

    def __init__(self, folder: str | os.PathLike[str], *, desired: Callable[[], Mapping[PodKey, PodEntry]]) -> None:
        self.folder = Path(folder)
        self._desired = desired
        self._lock = threading.Lock()
        self._record: dict[str, bytes] = {}  # file name -> hash of the bytes this process wrote or verified
        self._last_error = ""
        self.stats = ReconcileStats()

    @property
    def managed(self) -> int:
        """Managed files as of the last reconcile."""
        return len(self._record)

    def reconcile_full(self) -> Outcome:
        """Re-read the folder and repair every managed file; remove stale temp files."""
        with self._lock:
            return self._run(full=True)

    def reconcile_changes(self) -> Outcome:
        """Touch only the pods whose manifest changed since the last reconcile of this process."""
        with self._lock:
            return self._run(full=False)

    # -- internals -----------------------------------------------------------

    def _run(self, *, full: bool) -> Outcome:
        started = time.monotonic()
        errors: list[str] = []
        written = removed = 0
        try:
            want = self._want(errors)
            if full:
                self._check_folder()
                have = self._scan(errors)
                self._record = {}  # rebuilt from what the folder holds now
            else:
                have = self._record
            changed: list[tuple[str, bytes, bytes]] = []
            for fname, data in want.items():
                h = _content_hash(data)
                if have.get(fname) == h:
                    self._record[fname] = h
                else:
                    changed.append((fname, data, h))
            for (fname, _, h), error in zip(changed, self._write_all(changed)):
                if error is not None:
                    errors.append(error)
                    self._record.pop(fname, None)  # content unknown now: the next pass retries
                    continue
                self._record[fname] = h
                written += 1
            for fname in [f for f in have if f not in want]:
                try:
                    os.unlink(self.folder / fname)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    errors.append(f"cannot remove {self.folder / fname}: {_why(exc)}")
                    self._record[fname] = have[fname]  # still there: the next pass retries
                    continue
                self._record.pop(fname, None)
                removed += 1
        except _FolderError as exc:
            errors.append(str(exc))
        if written or removed:
            self._fsync_folder()  # the renames and unlinks themselves become durable
        outcome = Outcome(
            ok=not errors, message=errors[0] if errors else "", managed=len(self._record), written=written,
            removed=removed, errors=len(errors), full=full, seconds=time.monotonic() - started,
        )
        self._account(outcome, errors)
        return outcome

    def _want(self, errors: list[str]) -> dict[str, bytes]:
        """Desired file name -> bytes; pods whose names cannot be file names are reported, not written."""
        want: dict[str, bytes] = {}
        for (ns, name), entry in self._desired().items():
            try:
                want[manifest_file_name(ns, name)] = entry.manifest
            except ValueError as exc:
                errors.append(f"pod not written: {exc}")
        return want

    def _check_folder(self) -> None:
        try:
            st = os.stat(self.folder)
        except FileNotFoundError:
            raise _FolderError(f"pod manifest folder {self.folder} does not exist") from None
        except OSError as exc:
            raise _FolderError(f"pod manifest folder {self.folder}: {_why(exc)}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise _FolderError(f"pod manifest folder {self.folder} is not a directory")

    def _scan(self, errors: list[str]) -> dict[str, bytes]:
        """Managed files now in the folder with the hash of their content; removes stale temp files."""
        have: dict[str, bytes] = {}
        try:
            names = os.listdir(self.folder)
        except OSError as exc:
            raise _FolderError(f"cannot list pod manifest folder {self.folder}: {_why(exc)}") from None
        for fname in names:
            if _TEMP_RE.fullmatch(fname):
                try:
                    os.unlink(self.folder / fname)
                    logger.info("removed stale temporary manifest {}", self.folder / fname)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    errors.append(f"cannot remove stale {self.folder / fname}: {_why(exc)}")
                continue
            if parse_manifest_file_name(fname) is None:
                continue  # not ours: never touched
            have[fname] = _hash_regular_file(self.folder / fname)
        return have

    def _write_all(self, changed: list[tuple[str, bytes, bytes]]) -> list[str | None]:
        """Write the changed manifests, returning an error line or None for each.

        Many files (a snapshot, the end of a catch-up) are written by a few threads at
        once: each write waits on its fsync, not on the CPU, and the disk takes several
        in flight (1,000 replaces: 0.53 s in one thread, 0.33 s in eight, here).
        """
        if len(changed) < _PARALLEL_FROM:
            return [self._try_write(fname, data) for fname, data, _ in changed]
        with ThreadPoolExecutor(_WRITERS, thread_name_prefix="manifest-writer") as pool:
            return list(pool.map(lambda c: self._try_write(c[0], c[1]), changed))

    def _try_write(self, fname: str, data: bytes) -> str | None:
        """One write; a problem of the folder itself (_FolderError) ends the pass."""
        try:
            self._write(fname, data)
        except OSError as exc:
            return f"cannot write {self.folder / fname}: {_why(exc)}"
        return None

    def _write(self, fname: str, data: bytes) -> None:
        """Dot-file, write, fsync, rename over the target (the folder is fsynced by the caller)."""
        tmp = self.folder / _temp_name(fname)
        _unlink_quietly(tmp)  # a stale temp file, or a hard link or symlink planted at its name: never written through
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
        except (FileNotFoundError, NotADirectoryError):
            self._check_folder()  # name the folder, not the file, when the folder is the problem
            raise
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        try:
            os.replace(tmp, self.folder / fname)
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def _fsync_folder(self) -> None:
        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass  # some file systems refuse fsync on directories; the renames are still ordered
        finally:
            os.close(fd)

    def _account(self, outcome: Outcome, errors: list[str]) -> None:
        s = self.stats
        if outcome.full:
            s.full += 1
        else:
            s.incremental += 1
        s.written += outcome.written
        s.removed += outcome.removed
        s.write_errors += outcome.errors
        s.last = outcome
        s.first_ok = s.first_ok or outcome.ok
        if errors:
            if outcome.message != self._last_error:  # one line per distinct problem, not one per retry
                more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
                logger.error("manifests not in sync: {}{}; will retry", outcome.message, more)
            self._last_error = outcome.message
        else:
            if self._last_error:
                logger.info("pod manifest folder {} is in sync again ({} managed manifests)",
                            self.folder, outcome.managed)
            self._last_error = ""
        if outcome.written or outcome.removed:
            # a full pass (start, snapshot) is a state change; a pass over changed pods is per change: DEBUG
            logger.log(
                "INFO" if outcome.full else "DEBUG",
                "reconciled {} ({}): {} written, {} removed, {} managed",
                self.folder, "full" if outcome.full else "changes", outcome.written, outcome.removed, outcome.managed,
            )


class _FolderError(Exception):
    """The folder itself is unusable: nothing in it can be reconciled."""


def _why(exc: OSError) -> str:
    if exc.errno is not None:
        return f"{os.strerror(exc.errno)} ({errno.errorcode.get(exc.errno, exc.errno)})"
    return str(exc)


def _hash_regular_file(path: Path) -> bytes:
    """Hash of a managed file's content; b"" (rewrite it) for anything that is not a regular file we can read.

    Opened O_NOFOLLOW|O_NONBLOCK and checked with fstat: a symlink in our name is not followed
    (what it points to is never read), and a FIFO neither blocks the scan, which holds the
    reconciler's lock, nor is read. Either is then replaced by the rename of a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # ELOOP (a symlink), EACCES, ...: rewrite it
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""  # a FIFO, device, socket or directory: writing over it is tried and reported
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return _content_hash(b"".join(chunks))
    except OSError:
        return b""
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
