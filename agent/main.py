"""The `edge-agent` command: flags, settings, start-up.

Owns the command line (flags -> agent.settings.AgentSettings, one usage line and exit 2 on
a mistake, a private key others may read included), logging, the data-dir lock, opening
the replica and, with --join-server, the node's identity (joined or reused, then kept renewed:
agent.renewing) (one line and exit 1 when any fails); agent.daemon runs the agent. Must not
import grpc (loaded by the daemon) or manager.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from loguru import logger

from agent.daemon import EXIT_FAILURE, Agent, open_replica
from agent.faults import FaultInjector
from agent.join_settings import add_join_flags, join_settings
from agent.settings import AgentSettings
from edgecommon.addresses import check_dial_target, parse_listen_address
from edgecommon.files import PrivacyError
from edgecommon.locks import LockHeld, lock_data_dir
from edgecommon.logs import add_logging_flags, log_settings, setup
from edgecommon.names import is_dns1123_subdomain
from edgecommon.quantities import parse_duration
from edgecommon.tls import Pem, TlsFileError, check_pem_file
from edgecommon.usage import Parser, UsageError, flag_value, report_usage_error
from eventlog import StoreError

PROG = "edge-agent"
DEFAULT_SYNC_SERVER = "localhost:50051"  # the original agent's default
DEFAULT_POD_MANIFEST_PATH = "/etc/kubernetes/manifests"
DEFAULT_DATA_DIR = "/var/lib/k8s-edge/agent"
DEFAULT_RESYNC_INTERVAL = "10s"  # the original's --sync-interval
DEFAULT_CONNECT_TIMEOUT = "5s"  # the original's --sync-timeout


def build_parser() -> argparse.ArgumentParser:
    """The edge-agent flags."""
    p = Parser(
        prog=PROG,
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
                   metavar="DURATION", help="how often the manifest folder is fully re-checked and repaired "
                                            f"(default {DEFAULT_RESYNC_INTERVAL}; --sync-interval is the original's name)")
    p.add_argument("--sync-timeout", "--connect-timeout", dest="connect_timeout", default=DEFAULT_CONNECT_TIMEOUT,
                   metavar="DURATION", help=f"timeout for connecting to a sync server (default {DEFAULT_CONNECT_TIMEOUT})")
    p.add_argument("--ca-file", type=Path, help="CA bundle that signed the manager's serving certificate (TLS)")
    p.add_argument("--cert-file", type=Path,
                   help="this agent's client certificate (mTLS), naming this node as kubelet's does: "
                        "CN=system:node:<node>, O=system:nodes (CN=<node> if the manager runs --node-identity=cn)")
    p.add_argument("--key-file", type=Path,
                   help="the client certificate's private key; refused if its group or others may read it")
    p.add_argument("--insecure", action="store_true", help="allow plaintext gRPC (no TLS); refused without it")
    p.add_argument("--metrics-addr", default="",
                   help="serve Prometheus /metrics, /healthz and /readyz on host:port or :port (default: off)")
    p.add_argument("--retain-journal", type=int, default=100_000, metavar="N",
                   help="keep the newest N journal lines (the replica's history of applied events and snapshots); "
                        "0 keeps all (default 100000)")
    add_logging_flags(p)
    add_join_flags(p)
    return p


def _check_tls_files(a: argparse.Namespace) -> None:
    """TLS flags that go together, and files that hold PEM (gRPC would only say so in C-core log spam)."""
    if a.insecure and (a.ca_file or a.cert_file or a.key_file):
        raise UsageError("--insecure cannot be combined with --ca-file, --cert-file or --key-file")
    if (a.cert_file is None) != (a.key_file is None):
        raise UsageError("--cert-file and --key-file go together")
    if a.cert_file is not None and a.ca_file is None:
        raise UsageError("--cert-file needs --ca-file to verify the manager")
    if a.ca_file is None and not a.insecure and a.join_server is None:
        raise UsageError("refusing plaintext gRPC to the manager: give --join-server (with a token), or --ca-file "
                         "(and --cert-file/--key-file), or --insecure")
    for flag, path, holds in (("--ca-file", a.ca_file, Pem.CERTIFICATE), ("--cert-file", a.cert_file, Pem.CERTIFICATE),
                              ("--key-file", a.key_file, Pem.PRIVATE_KEY)):
        if path is not None:
            try:
                check_pem_file(path, holds=holds)
            except TlsFileError as exc:
                raise UsageError(f"{flag} {exc}") from None


def settings_from(a: argparse.Namespace) -> AgentSettings:
    """Check the parsed flags and build the settings. Raises UsageError."""
    node = (a.node_name if a.node_name is not None else socket.gethostname()).strip().lower()
    if not is_dns1123_subdomain(node):
        raise UsageError(f"--node-name: not a node name: {node!r} (a DNS-1123 subdomain like a Kubernetes node name)")
    join = join_settings(a)
    raw_servers = a.sync_server or [join.default_sync_server() if join else DEFAULT_SYNC_SERVER]
    servers = tuple(flag_value("--sync-server", check_dial_target, s.strip())
                    for raw in raw_servers for s in raw.split(",") if s.strip())
    if not servers:
        raise UsageError("--sync-server is empty")
    resync = flag_value("--resync-interval", parse_duration, a.resync_interval)
    if resync <= 0:
        raise UsageError("--resync-interval must be positive")
    connect = flag_value("--sync-timeout", parse_duration, a.connect_timeout)
    if connect <= 0:
        raise UsageError("--sync-timeout must be positive")
    _check_tls_files(a)
    if a.retain_journal < 0:
        raise UsageError("--retain-journal must be 0 (keep all) or positive")
    metrics_addr = flag_value("--metrics-addr", parse_listen_address, a.metrics_addr) \
        if a.metrics_addr else None
    if join is not None:  # the files joining makes (or made on an earlier start)
        from agent.pki import AGENT_FILE, CA_FILE, pki_dir  # lazily: `cryptography` costs ~10 MiB of RSS

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
        metrics_addr=metrics_addr,
        retain_journal=a.retain_journal,
        logging=log_settings(a),
        join=join,
    )


def parse_args(argv: Sequence[str] | None = None) -> AgentSettings:
    """Flags to settings; raises UsageError with a one-line message."""
    return settings_from(build_parser().parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `edge-agent`; returns the exit status."""
    try:
        settings = parse_args(argv)
        faults = FaultInjector()
    except UsageError as exc:
        return report_usage_error(PROG, exc)
    except ValueError as exc:  # K8S_EDGE_FAULT: a test's environment, said like a flag
        return report_usage_error(PROG, UsageError(str(exc)))
    setup(settings.logging)
    logger.info("Starting edge agent")
    if settings.insecure:
        logger.warning("--insecure: talking to the manager in plaintext, without TLS")
    try:
        lock_data_dir(settings.data_dir, program=PROG)  # released by the kernel however the process ends
        replica = open_replica(settings)
    except PrivacyError as exc:
        logger.error("--data-dir {}", exc)
        return EXIT_FAILURE
    except LockHeld as exc:
        logger.error("{}", exc)
        return EXIT_FAILURE
    except StoreError as exc:
        logger.error("cannot open the replica: {}", exc)
        return EXIT_FAILURE
    except OSError as exc:
        logger.error("cannot open the replica in {}: {}", settings.data_dir, exc.strerror or exc)
        return EXIT_FAILURE
    renewer = None
    try:
        if settings.join is not None:  # the pki the sync client's TLS files point at: joined now, or reused
            from agent.joining import JoinError  # lazily, as above: agents with hand-made files never load them
            from agent.renewing import start_renewing

            try:
                renewer = start_renewing(settings.join, node=settings.node_name, data_dir=settings.data_dir,
                                         submitted=lambda: faults.reached("crash-after-join-request"))
            except JoinError as exc:
                print(f"edge-agent: error: {exc}", file=sys.stderr)
                return EXIT_FAILURE
        return asyncio.run(Agent(settings, replica, faults, certificate=renewer).run())
    except KeyboardInterrupt:
        return 0
    finally:
        if renewer is not None:
            renewer.stop()
        replica.close()  # after asyncio.run: every worker thread touching the store has finished
        logger.info("edge agent stopped")


if __name__ == "__main__":
    sys.exit(main())
