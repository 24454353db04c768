"""Fixtures of the manager's tests alone (shared helpers and fixtures: tests/kit).

- ``clientgo_correlator`` (session): client-go's EventCorrelator as a small Go program
  (clientgo_correlator/main.go), built against tools/kube's pinned modules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.kit.processes import REPO


@pytest.fixture(scope="session")
def clientgo_correlator(tmp_path_factory) -> Path:
    go = shutil.which("go")
    assert go, "the differential Event test needs Go (the control plane is built with it)"
    mod = tmp_path_factory.mktemp("clientgo")
    for f in ("go.mod", "go.sum"):  # the control plane's module: the same client-go, already downloaded
        shutil.copy(REPO / "tools" / "kube" / f, mod / f)
    (mod / "correlator").mkdir()
    shutil.copy(Path(__file__).parent / "clientgo_correlator" / "main.go", mod / "correlator" / "main.go")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOWORK": "off", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    out = subprocess.run([go, "build", "-trimpath", "-o", str(mod / "correlator.bin"), "./correlator"],
                         cwd=mod, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return mod / "correlator.bin"
