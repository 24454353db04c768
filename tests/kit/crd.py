"""The EdgeNode CRD for tests that install it themselves: its file, waiting until it is Established, and a
private control plane with an audit log and the CRD (what tests of API calls read)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.controlplane import wait_established as _wait

CRD_FILE = Path(__file__).resolve().parents[2] / "crd" / "edgenode.yaml"


def wait_established(cp, name: str = "edgenodes.edge.k8s.io", timeout: float = 60) -> None:
    """Wait until the CRD `name` is Established on control plane `cp` (see tools.controlplane.wait_established)."""
    _wait(cp.kubectl, name, timeout)


def install_crd(cp) -> None:
    """Apply crd/edgenode.yaml (server-side, taking over any field manager) and wait until it is Established."""
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", CRD_FILE)
    wait_established(cp)


AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
"""


def audited_control_plane(control_plane_factory: Callable[..., Any], tmp_path: Path) -> tuple[Any, Path]:
    """(control plane, audit log): a private control plane logging every request's metadata, the CRD Established."""
    audit_log, policy = tmp_path / "audit.log", tmp_path / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    cp = control_plane_factory(extra_apiserver_args=[f"--audit-log-path={audit_log}",
                                                     f"--audit-policy-file={policy}"])
    cp.kubectl("apply", "-f", CRD_FILE)
    wait_established(cp)
    return cp, audit_log
