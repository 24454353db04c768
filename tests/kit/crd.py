"""The EdgeNode CRD for tests that install it themselves: its file, and waiting until it is Established."""

from __future__ import annotations

from pathlib import Path

from tools.controlplane import wait_established as _wait

CRD_FILE = Path(__file__).resolve().parents[2] / "crd" / "edgenode.yaml"


def wait_established(cp, name: str = "edgenodes.edge.k8s.io", timeout: float = 60) -> None:
    """Wait until the CRD `name` is Established on control plane `cp` (see tools.controlplane.wait_established)."""
    _wait(cp.kubectl, name, timeout)
