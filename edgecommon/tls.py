"""TLS files of both daemons: checked at start, read again when they change (a rotated Secret).

Checks PEM content and private-key modes before gRPC sees them (gRPC would only say so
in C-core log spam on every handshake). Holds bytes, not credentials: edgecommon does not
import grpc; each daemon turns the bytes into its own credentials. Imports nothing of the
project but edgecommon.files.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from loguru import logger

from edgecommon.files import PrivacyError, check_private_key_mode

T = TypeVar("T")
Signature = tuple[tuple[int, int, int], ...]


class TlsFileError(Exception):
    """A TLS file that cannot be used; the message is one line naming it (without the flag)."""


class Pem(enum.Enum):
    """What a PEM file must hold, by its header's tail."""

    CERTIFICATE = b"CERTIFICATE-----"
    PRIVATE_KEY = b"PRIVATE KEY-----"


def check_pem_file(path: Path, *, holds: Pem) -> None:
    """Refuse a file that cannot be read, holds no PEM of the kind, or is a private key others may read."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise TlsFileError(f"{path}: {exc.strerror or 'not a readable file'}") from None
    if holds.value not in pem:
        raise TlsFileError(f"{path}: no PEM {holds.value.decode().strip('-').lower()} in it")
    if holds is Pem.PRIVATE_KEY:
        try:
            check_private_key_mode(path)
        except PrivacyError as exc:
            raise TlsFileError(str(exc)) from None


def signature(paths: Sequence[Path]) -> Signature:
    """(mtime, size, inode) of each file, following symlinks (a Secret volume swaps its ..data link); raises OSError."""
    out = []
    for p in paths:
        st = p.stat()
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class ReloadingFiles(Generic[T]):
    """Files loaded into a T (credentials), loaded again when one changed; a bad rotation keeps the last good T."""

    def __init__(self, paths: Sequence[Path], *, key_file: Path | None, load: Callable[[], T]) -> None:
        """Load now; raises OSError (or what `load` raises) when the files cannot be used."""
        self.paths = tuple(paths)
        self._key_file = key_file
        self._load = load
        self.reloads = 0
        self._seen = signature(self.paths)
        self.current: T = load()

    def reload_if_changed(self) -> T | None:
        """The newly loaded T when a file changed since the last load; None when nothing changed or it failed (logged)."""
        try:
            seen = signature(self.paths)
            if seen == self._seen:
                return None
            if self._key_file is not None:
                check_private_key_mode(self._key_file)  # a rotated key others may read is refused as at start
            loaded = self._load()
        except PrivacyError as exc:  # keep what was loaded until the files change again; said once
            self._seen = seen
            logger.warning("TLS files not reloaded: {}", exc)
            return None
        except OSError as exc:  # mid-rotation or removed: keep what was loaded, try again at the next connection
            logger.warning("TLS files not reloaded: {}", " ".join(str(exc).split()))
            return None
        self._seen = seen
        self.current = loaded
        self.reloads += 1
        logger.info("TLS files changed: reloaded {}", ", ".join(str(p) for p in self.paths))
        return loaded
