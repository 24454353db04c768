"""The edge-agent's settings: one frozen, typed tree built from its flags by agent/main.py (which holds the defaults).

Owns the shape of what the agent was told, not the parsing (main.py) nor the wiring
(daemon.py). Opens nothing, connects nothing; must not import grpc or manager.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecommon.addresses import Address
from edgecommon.logs import LogSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """Everything the agent was told on its command line, checked."""

    node_name: str
    sync_servers: tuple[str, ...]
    """Manager addresses (host:port or a gRPC target), tried in turn."""
    pod_manifest_path: Path
    data_dir: Path
    """The replica lives in <data_dir>/replica."""
    resync_interval: float
    """Seconds between full reconciles of the manifest folder."""
    connect_timeout: float
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False
    metrics_addr: Address | None = None
    """None: no metrics or health endpoint."""
    retain_journal: int
    """Journal lines kept (0: all); bounds the data dir on a long-lived node."""
    logging: LogSettings
