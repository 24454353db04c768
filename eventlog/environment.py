"""Opening an LMDB store safely: identity, format, role, growth, readers.

Owns everything about the LMDB environment that the log and the replica share.
A store is a directory holding LMDB's data.mdb and lock.mdb. Nothing here
knows what the records mean.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self, TypeVar

import lmdb

from eventlog.encoding import from_u64, u64
from eventlog.errors import FormatError, NotAStoreError, RoleError, StoreFullError

# 2: the manager's view keeps (offset, hash) and pod hashes are XXH3-64 (1 kept manifests, blake2b).
STORE_FORMAT = 2
STORE_DIR_MODE = 0o700  # the store holds every manifest, env values included: its owner's only
STORE_FILE_MODE = 0o600
DEFAULT_MAP_SIZE = 1 << 30  # virtual space only; grown by doubling on MapFullError
MAX_READERS = 1024  # one slot per concurrent read transaction (gRPC streams read in threads)

T = TypeVar("T")


def _is_store_dir(path: Path) -> bool:
    return (path / "data.mdb").is_file()


class Environment:
    """One open LMDB environment with k8s-edge metadata and named databases."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        role: str,
        databases: tuple[str, ...],
        readonly: bool = False,
        map_size: int = DEFAULT_MAP_SIZE,
        max_map_size: int | None = None,
        initial_meta: dict[bytes, bytes] | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_map_size = max_map_size  # None: the map grows as long as the OS gives address space
        self.readonly = readonly
        self._grow_lock = threading.Lock()
        if self.path.exists() and not self.path.is_dir():
            raise NotAStoreError(f"{self.path}: is a file, not a store directory")
        if readonly and not _is_store_dir(self.path):
            why = "does not exist" if not self.path.exists() else "holds no store (no data.mdb)"
            raise NotAStoreError(f"{self.path}: {why}")
        if not readonly:
            self.path.mkdir(mode=STORE_DIR_MODE, parents=True, exist_ok=True)
        try:
            self.env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=len(databases) + 1,
                max_readers=MAX_READERS,
                readonly=readonly,
                subdir=True,
                readahead=False,  # random reads of a large log; readahead only evicts
                mode=STORE_FILE_MODE,  # new files; existing ones are tightened below
            )
        except lmdb.Error as exc:
            raise NotAStoreError(f"{self.path}: not an LMDB store ({_one_line(exc)})") from None
        if not readonly:
            _make_private(self.path)
        try:
            self.env.reader_check()  # clear slots of readers that died without closing
            self._open_databases(role=role, databases=databases, initial_meta=initial_meta or {})
        except BaseException:
            self.env.close()
            raise

    def _open_databases(self, *, role: str, databases: tuple[str, ...], initial_meta: dict[bytes, bytes]) -> None:
        try:
            with self.env.begin() as txn:
                has_meta = txn.get(b"meta") is not None
                foreign = not has_meta and txn.cursor().first()
        except lmdb.Error as exc:
            raise NotAStoreError(f"{self.path}: not an LMDB store ({_one_line(exc)})") from None
        if foreign:
            raise NotAStoreError(f"{self.path}: an LMDB database, but not a k8s-edge store; refusing to touch it")
        if not has_meta and self.readonly:
            raise NotAStoreError(f"{self.path}: an empty LMDB environment, not a k8s-edge store")
        if not has_meta:
            self.meta = self.env.open_db(b"meta")
            self.dbs = {name: self.env.open_db(name.encode()) for name in databases}
            with self.env.begin(write=True) as txn:
                txn.put(b"format", u64(STORE_FORMAT), db=self.meta)
                txn.put(b"role", role.encode(), db=self.meta)
                txn.put(b"log_id", uuid.uuid4().hex.encode() if role == "manager" else b"", db=self.meta)
                for k, v in initial_meta.items():
                    txn.put(k, v, db=self.meta)
            return
        try:
            self.meta = self.env.open_db(b"meta", create=False)
        except lmdb.Error as exc:
            raise NotAStoreError(f"{self.path}: not a k8s-edge store ({_one_line(exc)})") from None
        with self.env.begin() as txn:
            fmt_raw = txn.get(b"format", db=self.meta)
            stored_role = (txn.get(b"role", db=self.meta) or b"").decode(errors="replace")
        if fmt_raw is None or len(fmt_raw) != 8:
            raise NotAStoreError(f"{self.path}: not a k8s-edge store (no format version)")
        fmt = from_u64(fmt_raw)
        if fmt > STORE_FORMAT:
            raise FormatError(
                f"{self.path}: store format {fmt} is newer than this version reads ({STORE_FORMAT}); upgrade k8s-edge"
            )
        if fmt < STORE_FORMAT:
            # only development builds wrote format 1; nothing converts it, and both daemons rebuild cheaply
            raise FormatError(
                f"{self.path}: store format {fmt} is older than this version reads ({STORE_FORMAT}); move the "
                "data dir aside: the manager rebuilds its log from the API, an agent takes a snapshot"
            )
        if stored_role != role:
            raise RoleError(f"{self.path}: this is an {stored_role or 'unknown'} store, not an {role} store")
        try:
            self.dbs = {name: self.env.open_db(name.encode(), create=not self.readonly) for name in databases}
        except lmdb.Error as exc:
            raise NotAStoreError(f"{self.path}: incomplete k8s-edge store ({_one_line(exc)})") from None

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        """A read transaction; never blocks the writer (MVCC)."""
        txn = self.begin_read()
        try:
            yield txn
        finally:
            txn.abort()

    def begin_read(self) -> lmdb.Transaction:
        """A read transaction the caller must abort (read() does); for readers that are context managers."""
        try:
            return self.env.begin()
        except lmdb.MapResizedError:
            self.env.set_mapsize(0)  # another process grew the map: adopt its size
            return self.env.begin()

    def write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run fn in one write transaction, growing the map and retrying when full.

        Raises StoreFullError when the disk has no room (the transaction is aborted
        whole, so the store is unchanged) or the map cannot grow further.
        """
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)
            except lmdb.DiskError as exc:  # ENOSPC, EDQUOT, EIO at commit: LMDB aborted the transaction
                raise StoreFullError(f"{self.path}: cannot write: {_one_line(exc)}") from None

    def _grow(self) -> None:
        """Double the map, up to max_map_size; StoreFullError when it is already there."""
        with self._grow_lock:
            size = self.env.info()["map_size"]
            new = size * 2 if self.max_map_size is None else min(size * 2, self.max_map_size)
            if new <= size:
                raise StoreFullError(f"{self.path}: the LMDB map is full at its limit of {size} bytes")
            try:
                self.env.set_mapsize(new)
            except lmdb.Error as exc:
                raise StoreFullError(f"{self.path}: the LMDB map is full and cannot grow to {new} bytes: "
                                     f"{_one_line(exc)}") from None

    def copy_into(self, dest: Path, txn: lmdb.Transaction) -> None:
        """Write a compacted copy of what `txn` sees into an empty directory (0700, data.mdb 0600)."""
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise NotAStoreError(f"{dest}: exists and is not an empty directory; a copy goes into an empty one")
        dest.mkdir(mode=STORE_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(dest, STORE_DIR_MODE)
        self.env.copy(str(dest), compact=True, txn=txn)
        os.chmod(dest / "data.mdb", STORE_FILE_MODE)

    def get_meta(self, txn: lmdb.Transaction, key: bytes, default: int = 0) -> int:
        """A numeric metadata value."""
        v = txn.get(key, db=self.meta)
        return from_u64(v) if v is not None else default

    def get_meta_str(self, txn: lmdb.Transaction, key: bytes) -> str:
        """A text metadata value."""
        return (txn.get(key, db=self.meta) or b"").decode()

    def size_bytes(self) -> int:
        """Bytes the store's pages take on disk."""
        info, stat = self.env.info(), self.env.stat()
        return (info["last_pgno"] + 1) * stat["psize"]

    def close(self) -> None:
        """Close the environment; safe to call twice."""
        self.env.close()


class Reader:
    """Reads within one read transaction, begun and ended by `with`: the base of LogReader and ReplicaReader.

    Valid only inside its `with` block; iterators it returns must be consumed there too.
    """

    def __init__(self, env: Environment) -> None:
        self._env = env
        self._txn: lmdb.Transaction = None  # type: ignore[assignment]  # set by __enter__

    def __enter__(self) -> Self:
        self._txn = self._env.begin_read()
        return self

    def __exit__(self, *exc: object) -> None:
        self._txn.abort()

    def format_version(self) -> int:
        """The store format the store was written in."""
        return self._env.get_meta(self._txn, b"format")

    def size_bytes(self) -> int:
        """Bytes the store's pages take on disk now (the file, not this transaction's view of it)."""
        return self._env.size_bytes()


def _make_private(path: Path) -> None:
    """Take group and world access from the store and its files (a store written by an older version was 0755/0644)."""
    for p, mode in ((path, STORE_DIR_MODE), (path / "data.mdb", STORE_FILE_MODE), (path / "lock.mdb", STORE_FILE_MODE)):
        try:
            current = os.stat(p).st_mode & 0o7777
            if current & 0o077:
                os.chmod(p, current & mode)
        except (FileNotFoundError, PermissionError):
            pass  # gone, or another user's store opened by a tool: the owning daemon tightens it


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
