"""Private files shared by both daemons: a data dir only its owner can enter, a private key only its owner can read.

Imports nothing of manager, agent or eventlog, so both daemons may use it. Raises
PrivacyError with one line naming the file and its mode; the caller turns it into
its own one-line refusal.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from loguru import logger

PRIVATE_DIR_MODE = 0o700


class PrivacyError(Exception):
    """A file or directory others may read; the message is one line naming it and its mode."""


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def check_private_key_mode(path: str | os.PathLike[str]) -> None:
    """Refuse a private key that anyone but its owner may read, as ssh and PostgreSQL do.

    One exception, PostgreSQL's: a key owned by root and handed to a non-root daemon through
    its group (a Kubernetes Secret volume with fsGroup is 0440 root:<fsGroup> whatever its
    defaultMode) may be group-readable. World access is never accepted.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise PrivacyError(f"{p}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PrivacyError(f"{p}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        raise PrivacyError(f"{p}: private key is accessible to all users (mode {_mode(st)}); chmod 600 it")
    root_handed_to_group = st.st_uid == 0 and os.geteuid() != 0 and not mode & 0o030
    if mode & 0o070 and not root_handed_to_group:
        raise PrivacyError(f"{p}: private key is accessible to its group (mode {_mode(st)}); chmod 600 it")


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create a directory 0700, or tighten an existing one to 0700 (one warning line), as kubelet does its root dir.

    A shared directory (sticky bit: /tmp, /var/tmp) is refused instead: taking it over would
    break its other users. One the daemon may not chmod (a volume's mount point owned by root,
    handed to the daemon through fsGroup) is kept as it is with a warning: the store inside it
    is the daemon's own directory, 0700 whatever its parent.
    """
    p = Path(path)
    try:
        p.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        st = os.stat(p)
    except OSError as exc:
        raise PrivacyError(f"{p}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PrivacyError(f"{p}: not a directory")
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_ISVTX:
        raise PrivacyError(f"{p}: a shared directory (mode {_mode(st)}, sticky bit) cannot be a private data dir; "
                           "give a directory of its own")
    if mode & 0o077:
        tight = mode & ~0o077 & ~stat.S_ISGID
        try:
            os.chmod(p, tight)
        except PermissionError:
            logger.warning("{}: mode {} lets others in and may not be changed by this user (owner uid {}); "
                           "the store inside it is private (0700)", p, _mode(st), st.st_uid)
            return p
        except OSError as exc:
            raise PrivacyError(f"{p}: mode {_mode(st)} lets others in and cannot be tightened: "
                               f"{exc.strerror or exc}") from None
        logger.warning("{}: tightened from mode {} to {:04o}: it holds every manifest of the node(s)",
                       p, _mode(st), tight)
    return p


PRIVATE_FILE_MODE = 0o600


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the renames in a directory durable; file systems that refuse fsync on directories still order them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data`, mode 0600, all or nothing: a dot temp file, fsync, rename, fsync of the directory.

    The temp name is unlinked first and opened O_EXCL|O_NOFOLLOW, so a link planted at it is never written through.
    """
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, p)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(p.parent)
