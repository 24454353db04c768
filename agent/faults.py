"""Test-only fault injection: kill the agent with SIGKILL at a named step of applying a batch.

TEST ONLY. Set K8S_EDGE_FAULT=<point>[:<n>] to make the agent SIGKILL itself the
n-th time (default 1st) it reaches <point>; unset (the default) it does nothing.
Points, in the order one applied batch or snapshot passes them:
- `crash-after-commit`: the replica transaction committed, no manifest written yet;
- `crash-after-files`: manifests written and fsynced, the Ack not yet sent.
The tests use it to prove that a crash at either step loses and repeats nothing.
Joining passes `crash-after-join-request`: the manager accepted the request, no certificate
is stored yet (nothing may be half-written on the edge).
Imports nothing of the agent.
"""

from __future__ import annotations

import os
import signal
import sys

from loguru import logger

ENV = "K8S_EDGE_FAULT"
POINTS = ("crash-after-commit", "crash-after-files", "crash-after-join-request")


class FaultInjector:
    """Counts arrivals at fault points and kills the process at the configured one."""

    def __init__(self, spec: str | None = None) -> None:
        spec = (os.environ.get(ENV, "") if spec is None else spec).strip()
        self.point, self.after, self._seen = "", 0, 0
        if not spec:
            return
        point, _, n = spec.partition(":")
        if point not in POINTS or (n and not n.isdigit()) or (n and int(n) < 1):
            raise ValueError(f"{ENV}={spec!r}: expected one of {', '.join(POINTS)}, optionally :<n> (n >= 1)")
        self.point, self.after = point, int(n or 1)
        logger.warning("TEST FAULT armed: SIGKILL at {} #{} ({} is for tests only)", point, self.after, ENV)

    def reached(self, point: str) -> None:
        """Called at each fault point; kills the process when it is the armed one."""
        if point != self.point:
            return
        self._seen += 1
        if self._seen == self.after:
            logger.warning("TEST FAULT: SIGKILL at {} #{}", point, self._seen)
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
