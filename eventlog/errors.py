"""Errors of the eventlog library, one class per thing a caller can act on.

Every message is a single line fit to show a user as it is.
"""


class StoreError(Exception):
    """Base of every error the eventlog library raises on purpose."""


class NotAStoreError(StoreError):
    """The path is missing, or holds something that is not a k8s-edge store."""


class FormatError(StoreError):
    """The store was written by a newer (or unknown) format than this code reads."""


class RoleError(StoreError):
    """A manager log was opened as an agent replica, or the reverse."""


class OffsetOutOfRangeError(StoreError):
    """An offset beyond the head of the log was asked for."""


class CompactedError(StoreError):
    """The events asked for were dropped by compaction; a snapshot is needed."""


class LogMismatchError(StoreError):
    """Events of one log_id were offered to a replica that follows another."""


class DivergedError(StoreError):
    """Records of this log_id would not change this store's view as they changed the sender's: the histories differ."""


class DigestMismatchError(StoreError):
    """A snapshot's pods do not hash to the digest it claims."""


class CorruptRecordError(StoreError):
    """A stored or received record cannot be decoded."""


class StoreFullError(StoreError):
    """A write could not be stored: the disk is full (or failing) or the map reached its limit.

    Nothing of the failed transaction is kept; the store stays as it was and takes
    writes again once there is room.
    """
