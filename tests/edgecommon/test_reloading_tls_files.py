"""TLS files: PEM and key modes checked at start; reloaded when they change, a bad rotation keeps the last good load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgecommon.tls import Pem, ReloadingFiles, TlsFileError, check_pem_file

CERT = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def test_pem_content_and_key_mode_are_checked(tmp_path):
    check_pem_file(write(tmp_path / "c.pem", CERT), holds=Pem.CERTIFICATE)
    check_pem_file(write(tmp_path / "k.pem", KEY), holds=Pem.PRIVATE_KEY)
    with pytest.raises(TlsFileError, match="no PEM certificate"):
        check_pem_file(write(tmp_path / "x.pem", b"hello"), holds=Pem.CERTIFICATE)
    with pytest.raises(TlsFileError, match="mode 0644"):
        check_pem_file(write(tmp_path / "loose.pem", KEY, 0o644), holds=Pem.PRIVATE_KEY)
    with pytest.raises(TlsFileError, match="No such file"):
        check_pem_file(tmp_path / "missing.pem", holds=Pem.CERTIFICATE)


def test_changed_files_are_loaded_again_and_unchanged_ones_not(tmp_path):
    cert, key = write(tmp_path / "c.pem", CERT), write(tmp_path / "k.pem", KEY)
    loads: list[bytes] = []

    def load() -> bytes:
        loads.append(cert.read_bytes())
        return loads[-1]

    files = ReloadingFiles([cert, key], key_file=key, load=load)
    assert files.current == CERT and files.reload_if_changed() is None and files.reloads == 0
    write(cert, CERT + b"\n")
    assert files.reload_if_changed() == CERT + b"\n" and files.reloads == 1 and files.current == CERT + b"\n"
    assert files.reload_if_changed() is None and len(loads) == 2


def test_a_rotated_key_others_may_read_is_not_loaded(tmp_path):
    cert, key = write(tmp_path / "c.pem", CERT), write(tmp_path / "k.pem", KEY)
    files = ReloadingFiles([cert, key], key_file=key, load=cert.read_bytes)
    write(key, KEY + b"\n", 0o644)
    write(cert, b"new")
    assert files.reload_if_changed() is None and files.current == CERT and files.reloads == 0
    key.unlink()  # mid-rotation: said, and the last good load kept
    assert files.reload_if_changed() is None and files.current == CERT
