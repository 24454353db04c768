"""Helpers for tests that install the EdgeNode CRD themselves."""

from __future__ import annotations

import time


def wait_established(cp, name: str = "edgenodes.edge.k8s.io", timeout: float = 60) -> None:
    """kubectl wait for a CRD, also in the moment before its status has any condition.

    (kubectl wait fails at once with "accessor error: <nil>" then; a large schema makes that
    moment longer.)
    """
    deadline = time.monotonic() + timeout
    while True:
        res = cp.kubectl("wait", "--for=condition=established", f"--timeout={int(timeout)}s", f"crd/{name}",
                         check=time.monotonic() > deadline)
        if res.returncode == 0:
            return
        time.sleep(0.2)
