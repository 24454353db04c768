"""Helpers of the sync tests: a real gRPC server on port 0, raw streams, certificates (fixtures: conftest.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from eventlog import RECORD_FORMAT, Change, LogStore, SnapshotCause, decode_entry, decode_event
from manager.sync_service import LogNotifier, ServerTls, SyncSettings, create_server
from proto import sync_pb2 as pb
from proto import sync_pb2_grpc as pb_grpc

T = TypeVar("T")
FAST = SyncSettings(heartbeat_seconds=1.0)


def run(coro: Coroutine[Any, Any, T], *, timeout: float = 90.0) -> T:
    """Run one async scenario with a hard deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_until(predicate: Callable[[], object], *, timeout: float = 20.0, what: str = "condition") -> None:
    """Wait for a condition with a deadline (checks every 20 ms)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def manifest(name: str, rev: int = 0) -> bytes:
    """A small canonical pod manifest."""
    return json.dumps({"kind": "Pod", "metadata": {"name": name}, "rev": rev}, sort_keys=True, separators=(",", ":")).encode()


def put(node: str, name: str, rev: int = 0, namespace: str = "default") -> Change:
    return Change(node, "put", namespace, name, manifest(name, rev))


def delete(node: str, name: str, namespace: str = "default") -> Change:
    return Change(node, "delete", namespace, name)


@dataclass
class RecordingObserver:
    """Remembers every observer call, in order."""

    calls: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)

    def connected(self, node: str, *, peer: str) -> None:
        self.calls.append(("connected", node, {"peer": peer}))

    def acknowledged(self, node: str, *, applied_offset: int, digest: int) -> None:
        self.calls.append(("acknowledged", node, {"applied_offset": applied_offset, "digest": digest}))

    def reported(self, node: str, *, manifests_ok: bool, message: str, managed_manifests: int) -> None:
        self.calls.append(
            ("reported", node, {"manifests_ok": manifests_ok, "message": message, "managed_manifests": managed_manifests})
        )

    def disconnected(self, node: str) -> None:
        self.calls.append(("disconnected", node, {}))

    def snapshot_sent(self, node: str, *, cause: SnapshotCause) -> None:
        self.calls.append(("snapshot_sent", node, {"reason": cause.text, "label": cause.reason.value}))

    def of(self, kind: str, node: str | None = None) -> list[dict[str, object]]:
        return [kw for k, n, kw in self.calls if k == kind and (node is None or n == node)]


@dataclass
class Served:
    """A running sync server."""

    server: grpc.aio.Server
    port: int
    notifier: LogNotifier
    observer: RecordingObserver

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@asynccontextmanager
async def serving(
    store: LogStore,
    *,
    settings: SyncSettings = FAST,
    tls: ServerTls | None = None,
    port: int = 0,
    notifier: LogNotifier | None = None,
    observer: RecordingObserver | None = None,
) -> AsyncIterator[Served]:
    """Start a real sync server on 127.0.0.1 and stop it afterwards."""
    notifier = notifier or LogNotifier()
    observer = observer or RecordingObserver()
    server, bound = create_server(
        store=store, notifier=notifier, observer=observer, address=f"127.0.0.1:{port}", tls=tls, settings=settings
    )
    await server.start()
    try:
        yield Served(server, bound, notifier, observer)
    finally:
        await server.stop(0)


class RawStream:
    """A bare gRPC stream to the sync service, for driving the protocol by hand (not SyncClient)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.call = pb_grpc.SyncStub(channel).Stream()

    async def send(self, **kind: object) -> None:
        await self.call.write(pb.AgentMessage(**kind))

    async def hello(self, node: str, *, log_id: str = "", applied_offset: int = 0, digest: int = 0,
                    record_format: int = RECORD_FORMAT) -> pb.Welcome:
        await self.send(hello=pb.Hello(node=node, log_id=log_id, applied_offset=applied_offset, digest=digest,
                                       record_format=record_format, agent_version="test"))
        message = await self.read()
        assert message.WhichOneof("kind") == "welcome", message
        return message.welcome

    async def ack(self, applied_offset: int, digest: int = 0) -> None:
        await self.send(ack=pb.Ack(applied_offset=applied_offset, digest=digest))

    async def read(self, timeout: float = 20.0) -> pb.ManagerMessage:
        message = await asyncio.wait_for(self.call.read(), timeout)
        assert message is not grpc.aio.EOF, "stream ended"
        return message

    async def read_snapshot(self) -> tuple[pb.SnapshotChunk, list]:
        """All chunks of one snapshot: (last chunk, decoded entries)."""
        entries = []
        while True:
            message = await self.read()
            if message.WhichOneof("kind") == "heartbeat" and not entries:
                continue  # an idle stream may have a heartbeat due before the snapshot
            assert message.WhichOneof("kind") == "snapshot", message
            entries.extend(decode_entry(e) for e in message.snapshot.entries)
            if message.snapshot.last:
                return message.snapshot, entries

    async def read_events(self, count: int, *, timeout: float = 20.0) -> list:
        """Decoded events of the next batches until `count` arrived (heartbeats skipped)."""
        events = []
        deadline = time.monotonic() + timeout
        while len(events) < count:
            message = await self.read(max(0.1, deadline - time.monotonic()))
            kind = message.WhichOneof("kind")
            if kind == "batch":
                events.extend(decode_event(e) for e in message.batch.events)
            else:
                assert kind == "heartbeat", message
        return events

    async def status(self, timeout: float = 20.0) -> grpc.StatusCode:
        """Read until the stream ends; the final status code."""
        try:
            while True:
                message = await asyncio.wait_for(self.call.read(), timeout)
                if message is grpc.aio.EOF:
                    break
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return await self.call.code()


@asynccontextmanager
async def raw_stream(address: str, credentials: grpc.ChannelCredentials | None = None) -> AsyncIterator[RawStream]:
    channel = (
        grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
    )
    async with channel:
        stream = RawStream(channel)
        try:
            yield stream
        finally:
            stream.call.cancel()


# -- certificates (openssl CLI) ------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1, and client certificates by name."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path

    def client(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue(d: Path, name: str, subject: str, ext: str) -> None:
    """<name>.crt and <name>.key for `subject`, signed by ca.crt/ca.key in `d`, with extensions `ext`."""
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
    (d / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)


CLIENTS = {
    # kubelet's convention (the default --node-identity=kubelet): CN=system:node:<node>, O=system:nodes
    "edge01": ("/CN=system:node:edge01/O=system:nodes", ""),
    "stranger": ("/CN=system:node:stranger/O=system:nodes", ""),
    # what --node-identity=cn accepts (a CA dedicated to agents): CN=<node>
    "plain-edge02": ("/CN=edge02", ""),
    # certificates that name no single node
    "no-org-edge01": ("/CN=system:node:edge01", ""),
    "alice-masters": ("/CN=alice/O=system:masters", ""),
    "san-edges": ("/CN=some-agent", "subjectAltName=DNS:edge10,DNS:edge11,DNS:edge12\n"),
    "kubelet-san-edges": ("/CN=system:node:edge10/O=system:nodes", "subjectAltName=DNS:edge10,DNS:edge11,DNS:edge12\n"),
    "two-cns": ("/CN=system:node:edge01/CN=system:node:edge02/O=system:nodes", ""),
}


def make_pki(d: Path, *, ca_name: str = "k8s-edge test CA") -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and the CLIENTS certificates, in `d`."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "2", "-subj", f"/CN={ca_name}", cwd=d)
    issue(d, "server", "/CN=edge-manager",
           "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    for name, (subject, san) in CLIENTS.items():
        issue(d, name, subject, san + "extendedKeyUsage=clientAuth\n")
    return Pki(d, d / "ca.crt", d / "server.crt", d / "server.key")
