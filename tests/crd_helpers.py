"""Helpers for tests that install the EdgeNode CRD themselves."""

from __future__ import annotations

from tools.controlplane import wait_established as _wait


def wait_established(cp, name: str = "edgenodes.edge.k8s.io", timeout: float = 60) -> None:
    """Wait until the CRD `name` is Established on control plane `cp` (see tools.controlplane.wait_established)."""
    _wait(cp.kubectl, name, timeout)
