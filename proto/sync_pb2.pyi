from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("hello", "ack", "report", "pong")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ack: Ack
    report: AgentReport
    pong: Pong
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., report: _Optional[_Union[AgentReport, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ...) -> None: ...

class ManagerMessage(_message.Message):
    __slots__ = ("welcome", "batch", "snapshot", "heartbeat")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    batch: EventBatch
    snapshot: SnapshotChunk
    heartbeat: Heartbeat
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., batch: _Optional[_Union[EventBatch, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotChunk, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node", "log_id", "applied_offset", "digest", "record_format", "agent_version", "answers_heartbeats")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    APPLIED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    RECORD_FORMAT_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    node: str
    log_id: str
    applied_offset: int
    digest: int
    record_format: int
    agent_version: str
    answers_heartbeats: bool
    def __init__(self, node: _Optional[str] = ..., log_id: _Optional[str] = ..., applied_offset: _Optional[int] = ..., digest: _Optional[int] = ..., record_format: _Optional[int] = ..., agent_version: _Optional[str] = ..., answers_heartbeats: _Optional[bool] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("log_id", "mode", "head_offset", "snapshot_offset", "reason", "record_format", "window", "heartbeat_seconds")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[Welcome.Mode]
        RESUME: _ClassVar[Welcome.Mode]
        SNAPSHOT: _ClassVar[Welcome.Mode]
    MODE_UNSPECIFIED: Welcome.Mode
    RESUME: Welcome.Mode
    SNAPSHOT: Welcome.Mode
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    HEAD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECORD_FORMAT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    log_id: str
    mode: Welcome.Mode
    head_offset: int
    snapshot_offset: int
    reason: str
    record_format: int
    window: int
    heartbeat_seconds: int
    def __init__(self, log_id: _Optional[str] = ..., mode: _Optional[_Union[Welcome.Mode, str]] = ..., head_offset: _Optional[int] = ..., snapshot_offset: _Optional[int] = ..., reason: _Optional[str] = ..., record_format: _Optional[int] = ..., window: _Optional[int] = ..., heartbeat_seconds: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("offset", "entries", "last", "digest", "pod_count")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    POD_COUNT_FIELD_NUMBER: _ClassVar[int]
    offset: int
    entries: _containers.RepeatedScalarFieldContainer[bytes]
    last: bool
    digest: int
    pod_count: int
    def __init__(self, offset: _Optional[int] = ..., entries: _Optional[_Iterable[bytes]] = ..., last: _Optional[bool] = ..., digest: _Optional[int] = ..., pod_count: _Optional[int] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events", "head_offset")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    HEAD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedScalarFieldContainer[bytes]
    head_offset: int
    def __init__(self, events: _Optional[_Iterable[bytes]] = ..., head_offset: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("head_offset", "time_unix_ms")
    HEAD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    head_offset: int
    time_unix_ms: int
    def __init__(self, head_offset: _Optional[int] = ..., time_unix_ms: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("applied_offset", "digest")
    APPLIED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    applied_offset: int
    digest: int
    def __init__(self, applied_offset: _Optional[int] = ..., digest: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("head_offset",)
    HEAD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    head_offset: int
    def __init__(self, head_offset: _Optional[int] = ...) -> None: ...

class AgentReport(_message.Message):
    __slots__ = ("manifests_ok", "message", "managed_manifests")
    MANIFESTS_OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MANAGED_MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    manifests_ok: bool
    message: str
    managed_manifests: int
    def __init__(self, manifests_ok: _Optional[bool] = ..., message: _Optional[str] = ..., managed_manifests: _Optional[int] = ...) -> None: ...

class StandbyMessage(_message.Message):
    __slots__ = ("hello", "ack")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    hello: FollowHello
    ack: FollowAck
    def __init__(self, hello: _Optional[_Union[FollowHello, _Mapping]] = ..., ack: _Optional[_Union[FollowAck, _Mapping]] = ...) -> None: ...

class LeaderMessage(_message.Message):
    __slots__ = ("welcome", "records", "store", "heartbeat")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    welcome: FollowWelcome
    records: LogRecords
    store: StoreChunk
    heartbeat: Heartbeat
    def __init__(self, welcome: _Optional[_Union[FollowWelcome, _Mapping]] = ..., records: _Optional[_Union[LogRecords, _Mapping]] = ..., store: _Optional[_Union[StoreChunk, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class FollowHello(_message.Message):
    __slots__ = ("identity", "log_id", "head_offset", "head_hash", "record_format")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    RECORD_FORMAT_FIELD_NUMBER: _ClassVar[int]
    identity: str
    log_id: str
    head_offset: int
    head_hash: int
    record_format: int
    def __init__(self, identity: _Optional[str] = ..., log_id: _Optional[str] = ..., head_offset: _Optional[int] = ..., head_hash: _Optional[int] = ..., record_format: _Optional[int] = ...) -> None: ...

class FollowWelcome(_message.Message):
    __slots__ = ("log_id", "mode", "head_offset", "reason", "record_format", "heartbeat_seconds")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[FollowWelcome.Mode]
        RESUME: _ClassVar[FollowWelcome.Mode]
        COPY: _ClassVar[FollowWelcome.Mode]
    MODE_UNSPECIFIED: FollowWelcome.Mode
    RESUME: FollowWelcome.Mode
    COPY: FollowWelcome.Mode
    LOG_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    HEAD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECORD_FORMAT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    log_id: str
    mode: FollowWelcome.Mode
    head_offset: int
    reason: str
    record_format: int
    heartbeat_seconds: int
    def __init__(self, log_id: _Optional[str] = ..., mode: _Optional[_Union[FollowWelcome.Mode, str]] = ..., head_offset: _Optional[int] = ..., reason: _Optional[str] = ..., record_format: _Optional[int] = ..., heartbeat_seconds: _Optional[int] = ...) -> None: ...

class LogRecords(_message.Message):
    __slots__ = ("records", "head_offset")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    HEAD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedScalarFieldContainer[bytes]
    head_offset: int
    def __init__(self, records: _Optional[_Iterable[bytes]] = ..., head_offset: _Optional[int] = ...) -> None: ...

class StoreChunk(_message.Message):
    __slots__ = ("data", "last", "head_offset", "size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    HEAD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    last: bool
    head_offset: int
    size: int
    def __init__(self, data: _Optional[bytes] = ..., last: _Optional[bool] = ..., head_offset: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class FollowAck(_message.Message):
    __slots__ = ("head_offset",)
    HEAD_OFFSET_FIELD_NUMBER: _ClassVar[int]
    head_offset: int
    def __init__(self, head_offset: _Optional[int] = ...) -> None: ...
