"""Fixtures of the sync tests: a real LogStore in tmp_path, a test PKI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sync_helpers import Pki, make_pki

from eventlog import LogStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    s = LogStore(tmp_path / "log")
    yield s
    s.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second, unrelated CA with the same certificates: what a rotation moves to."""
    return make_pki(tmp_path_factory.mktemp("pki2"), ca_name="k8s-edge rotated CA")
