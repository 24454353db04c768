"""The edge-agent command line: flags, their defaults and checks, turned into one frozen settings record.

Owns argument parsing only; opens nothing, connects nothing. Must not import grpc or manager.
Every mistake a user can make here ends in one clear line (SettingsError), never a traceback.
"""

from __future__ import annotations

import argparse
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.join_settings import JoinSettings, add_join_flags, join_settings
from agent.pki import AGENT_FILE, CA_FILE, pki_dir
from edgecommon.files import PrivacyError, check_private_key_mode

DEFAULT_SYNC_SERVER = "localhost:50051"  # the original agent's default
DEFAULT_POD_MANIFEST_PATH = "/etc/kubernetes/manifests"
DEFAULT_DATA_DIR = "/var/lib/k8s-edge/agent"
DEFAULT_RESYNC_INTERVAL = "10s"  # the original's --sync-interval
DEFAULT_CONNECT_TIMEOUT = "5s"  # the original's --sync-timeout

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NODE_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_HOST_PORT = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):(\d{1,5})")
_SCHEMES = ("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")


class SettingsError(Exception):
    """A flag value the agent cannot run with; the message is one line for the user."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """Everything the agent was told on its command line."""

    node_name: str
    sync_servers: tuple[str, ...]  # tried in turn
    pod_manifest_path: Path
    data_dir: Path  # the replica lives in <data_dir>/replica
    resync_interval: float  # seconds between full reconciles of the manifest folder
    connect_timeout: float
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False
    metrics_addr: tuple[str, int] | None = None  # (host, port); None: no metrics or health endpoint
    retain_journal: int = 100_000  # journal lines kept (0: all); bounds the data dir on a long-lived node
    log_level: str = "INFO"
    log_format: str = "text"
    join: JoinSettings | None = None  # joining: ca_file/cert_file/key_file are then <data_dir>/pki's, made by joining


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration ("10s", "1m30s", "250ms") or a plain number of seconds."""
    s = text.strip()
    try:
        value = float(s)
    except ValueError:
        pos, value = 0, 0.0
        for m in _DURATION_PART.finditer(s):
            if m.start() != pos:
                break
            value += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise SettingsError(f"invalid duration {text!r} (use e.g. 10s, 1m30s, 500ms)") from None
    if value < 0 or value != value:
        raise SettingsError(f"invalid duration {text!r}: must not be negative")
    return value


def _check_address(addr: str) -> str:
    if addr.startswith(_SCHEMES):
        return addr
    m = _HOST_PORT.fullmatch(addr)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise SettingsError(f"invalid --sync-server {addr!r}: expected host:port, e.g. {DEFAULT_SYNC_SERVER}")
    return addr


def _listen_address(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]*):(\d{1,5})", text.strip())
    if not m or int(m.group(2)) > 65535:
        raise SettingsError(f"invalid --metrics-addr {text!r}: expected host:port or :port (port 0 picks one)")
    host = m.group(1).strip("[]") or "0.0.0.0"
    return host, int(m.group(2))


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SettingsError(message)


def build_parser() -> argparse.ArgumentParser:
    """The edge-agent flags."""
    p = _Parser(
        prog="edge-agent",
        description="Keeps this edge node's kubelet static pods equal to its EdgeNodes, with or without the manager.",
    )
    p.add_argument("--node-name", default=None, help="this node's name (default: the hostname, lower-cased)")
    p.add_argument(
        "--sync-server", action="append", default=None, metavar="HOST:PORT",
        help="edge-manager sync address; repeat or comma-separate several, tried in turn "
             f"(default {DEFAULT_SYNC_SERVER})",
    )
    p.add_argument("--pod-manifest-path", default=DEFAULT_POD_MANIFEST_PATH,
                   help="kubelet's static-pod folder (staticPodPath); never created by the agent "
                        f"(default {DEFAULT_POD_MANIFEST_PATH})")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help=f"the agent's state, made 0700; the replica is <data-dir>/replica (default {DEFAULT_DATA_DIR})")
    p.add_argument("--resync-interval", "--sync-interval", dest="resync_interval", default=DEFAULT_RESYNC_INTERVAL,
                   help="how often the manifest folder is fully re-checked and repaired "
                        f"(default {DEFAULT_RESYNC_INTERVAL}; --sync-interval is the original's name)")
    p.add_argument("--sync-timeout", "--connect-timeout", dest="connect_timeout", default=DEFAULT_CONNECT_TIMEOUT,
                   help=f"timeout for connecting to a sync server (default {DEFAULT_CONNECT_TIMEOUT})")
    p.add_argument("--ca-file", type=Path, help="CA bundle that signed the manager's serving certificate (TLS)")
    p.add_argument("--cert-file", type=Path,
                   help="this agent's client certificate (mTLS): its CN, a DNS SAN, or CN system:node:<node> "
                        "names this node")
    p.add_argument("--key-file", type=Path,
                   help="the client certificate's private key; refused if its group or others may read it")
    p.add_argument("--insecure", action="store_true", help="allow plaintext gRPC (no TLS); refused without it")
    p.add_argument("--metrics-addr", default="",
                   help="serve Prometheus /metrics, /healthz and /readyz on host:port (default: off)")
    p.add_argument("--retain-journal", type=int, default=100_000, metavar="N",
                   help="keep the newest N journal lines (the replica's history of applied events and snapshots); "
                        "0 keeps all (default 100000)")
    p.add_argument("--log-level", default="info", choices=["trace", "debug", "info", "warning", "error"],
                   type=str.lower)
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    add_join_flags(p)
    return p


def parse_args(argv: Sequence[str] | None = None) -> AgentSettings:
    """Flags to settings; raises SettingsError with a one-line message."""
    a = build_parser().parse_args(argv)
    node = (a.node_name if a.node_name is not None else socket.gethostname()).strip().lower()
    if not node or len(node) > 253 or not _NODE_RE.fullmatch(node):
        raise SettingsError(f"invalid --node-name {node!r}: must be a DNS-1123 subdomain like a Kubernetes node name")
    try:
        timeout = parse_duration(a.join_timeout)
    except SettingsError as exc:
        raise SettingsError(f"--join-timeout: {exc}") from None
    try:
        join = join_settings(a, timeout=timeout)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    raw_servers = a.sync_server or [join.default_sync_server() if join else DEFAULT_SYNC_SERVER]
    servers = tuple(_check_address(s.strip()) for raw in raw_servers for s in raw.split(",") if s.strip())
    if not servers:
        raise SettingsError("--sync-server is empty")
    resync = parse_duration(a.resync_interval)
    if resync <= 0:
        raise SettingsError("--resync-interval must be positive")
    connect = parse_duration(a.connect_timeout)
    if connect <= 0:
        raise SettingsError("--sync-timeout must be positive")
    if a.insecure and (a.ca_file or a.cert_file or a.key_file):
        raise SettingsError("--insecure cannot be combined with --ca-file, --cert-file or --key-file")
    if (a.cert_file is None) != (a.key_file is None):
        raise SettingsError("--cert-file and --key-file go together")
    if a.cert_file is not None and a.ca_file is None:
        raise SettingsError("--cert-file needs --ca-file to verify the manager")
    if a.ca_file is None and not a.insecure and join is None:
        raise SettingsError(
            "refusing plaintext gRPC to the manager: give --join-server (with a token), or --ca-file "
            "(and --cert-file/--key-file), or --insecure"
        )
    for flag, path, marker in (("--ca-file", a.ca_file, b"CERTIFICATE-----"),
                               ("--cert-file", a.cert_file, b"CERTIFICATE-----"),
                               ("--key-file", a.key_file, b"PRIVATE KEY-----")):
        if path is None:
            continue
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise SettingsError(f"{flag} {path}: {exc.strerror or 'not a readable file'}") from None
        if marker not in pem:  # gRPC would only say so in C-core log spam on every reconnect
            raise SettingsError(f"{flag} {path}: no PEM {marker.decode().strip('-').lower()} in it")
        if flag == "--key-file":
            try:
                check_private_key_mode(path)
            except PrivacyError as exc:
                raise SettingsError(f"{flag} {exc}") from None
    if a.retain_journal < 0:
        raise SettingsError("--retain-journal must be 0 (keep all) or positive")
    if join is not None:  # the files joining makes (or made on an earlier start)
        pki = pki_dir(Path(a.data_dir))
        a.ca_file, a.cert_file, a.key_file = pki / CA_FILE, pki / AGENT_FILE, pki / AGENT_FILE
    return AgentSettings(
        node_name=node,
        sync_servers=servers,
        pod_manifest_path=Path(a.pod_manifest_path),
        data_dir=Path(a.data_dir),
        resync_interval=resync,
        connect_timeout=connect,
        ca_file=a.ca_file,
        cert_file=a.cert_file,
        key_file=a.key_file,
        insecure=a.insecure,
        metrics_addr=_listen_address(a.metrics_addr) if a.metrics_addr else None,
        retain_journal=a.retain_journal,
        log_level=a.log_level.upper(),
        log_format=a.log_format,
        join=join,
    )
