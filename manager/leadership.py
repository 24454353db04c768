"""Whether this manager leads now, and where the leader is: what the sync service asks before serving a stream.

Owns the Leadership seam and its two forms: a single manager leads forever; with
--leader-elect the answer is the elector's (its fence: true only while the Lease was renewed
within the renew deadline). Imports neither grpc nor kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Leadership(Protocol):
    """Asked by the sync service at each stream's start and while it serves."""

    def leading(self) -> bool: ...

    def leader_address(self) -> str: ...


class AlwaysLeading:
    """One manager without --leader-elect."""

    def leading(self) -> bool:
        """Always."""
        return True

    def leader_address(self) -> str:
        """Nobody else."""
        return ""


class Elected:
    """--leader-elect: leading while the elector says so; otherwise the Lease holder's sync address."""

    def __init__(self, *, is_leader: Callable[[], bool], leader_address: Callable[[], str]) -> None:
        self._is_leader = is_leader
        self._leader_address = leader_address

    def leading(self) -> bool:
        """True only while the Lease is ours and renewed within the renew deadline."""
        return self._is_leader()

    def leader_address(self) -> str:
        """The sync address the current holder advertises in the Lease ("" when none is known)."""
        return self._leader_address()
