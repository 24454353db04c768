"""The `edge-manager` daemon: flags, wiring, start-up and clean shutdown.

Owns the command line and the order things start and stop in: the store, the API
client, the sync server, metrics, the EdgeNode and mirror-pod watches (threads), the
status writer and compaction (asyncio tasks). The only module that builds kubernetes
API clients. Must not import the agent package.

Threads: each watch runs in its own thread (the kubernetes client is synchronous); the
EdgeNode watch thread appends to the store itself and hands everything else to the event
loop with call_soon_threadsafe. The loop runs the gRPC server, status writes (through
asyncio.to_thread) and compaction.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

GROUP, VERSION, PLURAL = "edge.k8s.io", "v1alpha1", "edgenodes"
USER_AGENT = "edge-manager/0.1.0"
DEFAULT_DATA_DIR = "/var/lib/k8s-edge/manager"
DEFAULT_METRICS_ADDR = ":8080"
DEFAULT_KUBECONFIG = "~/.kube/config"
DEFAULT_MAX_STREAMS = 10_000  # = manager.streams.DEFAULT_MAX_STREAMS (not imported: --help must not load grpc)
# Bounded by default (README "Running for months"): 7 days like Kafka's log.retention.hours=168, and a cap on
# the records (~1.5 GiB on disk) that holds those 7 days up to ~6 changes/s of small pods (~300-byte records).
DEFAULT_RETAIN_AGE = "7d"
DEFAULT_RETAIN_BYTES = "1Gi"
_OFF = ("none", "off", "0", "")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SIZE = re.compile(r"^(\d+)\s*(|k|ki|m|mi|g|gi|t|ti|b|kb|mb|gb|tb)$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "ki": 2**10, "m": 10**6, "mb": 10**6, "mi": 2**20,
               "g": 10**9, "gb": 10**9, "gi": 2**30, "t": 10**12, "tb": 10**12, "ti": 2**40}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UsageError(Exception):
    """A flag the user must fix: one line, exit code 2."""


class StartupError(Exception):
    """The manager cannot start (store, API, port): one line, exit code 1."""


def parse_duration(text: str) -> float:
    """Seconds in '90s', '5m', '1h30m', '7d' or a plain number of seconds."""
    t = text.strip().lower()
    try:
        return float(t)
    except ValueError:
        pass
    parts = _DURATION.findall(t)
    if not t or "".join(n + u for n, u in parts) != t:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 12h, 7d)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_size(text: str) -> int:
    """Bytes in '500Mi', '2G', '1048576'."""
    m = _SIZE.match(text.strip())
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 512Mi, 2Gi, 1000000)")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def _off(text: str | None) -> bool:
    """Whether a retention bound is turned off ('none', 'off', '0')."""
    return text is None or text.strip().lower() in _OFF


def split_address(address: str, *, flag: str) -> tuple[str, int]:
    """(host, port) of ':8080', '127.0.0.1:0' or '[::1]:8080'."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{flag}: not an address: {address!r} (use host:port or :port)")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    """The edge-manager command line."""
    p = argparse.ArgumentParser(
        prog="edge-manager",
        description="Record EdgeNode changes into an event log and stream them to edge agents.",
    )
    p.add_argument("--kubeconfig", default=None,
                   help=f"kubeconfig file (default {DEFAULT_KUBECONFIG}; in-cluster config when none is found)")
    p.add_argument("--master", default=None, help="Kubernetes API server address; overrides the kubeconfig's")
    p.add_argument("--namespace", default=None, help="watch EdgeNodes of this namespace only (default: all)")
    p.add_argument("--sync-server", default=":50051", help="listen address of the gRPC sync service (default :50051)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, type=Path,
                   help=f"where the event log lives (<data-dir>/eventlog; default {DEFAULT_DATA_DIR})")
    p.add_argument("--tls-cert-file", type=Path, default=None, help="server certificate (PEM)")
    p.add_argument("--tls-private-key-file", type=Path, default=None, help="server private key (PEM)")
    p.add_argument("--client-ca-file", type=Path, default=None,
                   help="CA for agent client certificates; agents may then stream only the node their certificate "
                        "names (required with TLS unless --allow-unauthenticated-agents)")
    p.add_argument("--node-identity", choices=["kubelet", "cn"], default=None,
                   help="how a client certificate names its node: kubelet (default): CN=system:node:<node> with "
                        "O=system:nodes, as kubelet's; cn: CN=<node>, only with a client CA dedicated to agents")
    p.add_argument("--allow-unauthenticated-agents", action="store_true",
                   help="serve TLS without --client-ca-file: any client can read and report for any node")
    p.add_argument("--max-streams", type=int, default=DEFAULT_MAX_STREAMS, metavar="N",
                   help=f"open sync streams at most; beyond, new streams get RESOURCE_EXHAUSTED "
                        f"(default {DEFAULT_MAX_STREAMS})")
    p.add_argument("--insecure", action="store_true", help="serve plaintext gRPC without authentication")
    p.add_argument("--retain-events", type=int, default=None, metavar="N",
                   help="compaction: keep at most the newest N events (default: no count bound)")
    p.add_argument("--retain-age", default=DEFAULT_RETAIN_AGE, metavar="DURATION",
                   help=f"compaction: drop events older than this (default {DEFAULT_RETAIN_AGE}: an agent offline "
                        "for less resumes without a snapshot; 'none' turns the age bound off)")
    p.add_argument("--retain-bytes", default=DEFAULT_RETAIN_BYTES, metavar="SIZE",
                   help=f"compaction: keep the log's event records below this size (default {DEFAULT_RETAIN_BYTES}; "
                        "'none' turns the size bound off)")
    p.add_argument("--export-before-compaction", type=Path, default=None, metavar="DIR",
                   help="before each compaction, write what it drops to a JSON Lines file in DIR that "
                        "`edge-eventlog verify-export` checks (the operator rotates DIR; default: no export)")
    p.add_argument("--compaction-interval", default="5m", metavar="DURATION",
                   help="how often retention is applied (default 5m)")
    p.add_argument("--status-refresh-interval", default="90s", metavar="DURATION",
                   help="lastSeen of a connected agent is written at most this often (default 90s: with the "
                        "watch renewals, under one API request per EdgeNode per minute at steady state)")
    p.add_argument("--watch-timeout", default="60s", metavar="DURATION",
                   help="server-side timeout of each watch request, after which it is renewed from the last "
                        "resourceVersion; the client read timeout is 30s longer, so a silently dead stream is "
                        "noticed within it (default 60s)")
    p.add_argument("--heartbeat-interval", default="10s", metavar="DURATION",
                   help="heartbeat to idle agents (default 10s)")
    p.add_argument("--metrics-addr", default=DEFAULT_METRICS_ADDR,
                   help=f"listen address of /metrics, /healthz, /readyz (default {DEFAULT_METRICS_ADDR}; '' disables)")
    p.add_argument("--default-pod-security-level", default="baseline", metavar="LEVEL",
                   help="Pod Security level of pods of EdgeNodes in a namespace without the "
                        "pod-security.kubernetes.io/enforce label (default baseline; stricter than the API "
                        "server's privileged because static pods run on the edge host with no other check; "
                        "label a namespace enforce=privileged to opt it out)")
    p.add_argument("--default-pod-security-version", default="latest", metavar="VERSION",
                   help="Pod Security version for namespaces without the enforce-version label: latest or v1.N "
                        "(default latest)")
    # joining (docs/joining.md): agents get their certificates with a bootstrap token
    p.add_argument("--agent-ca-secret", default=None, metavar="NAMESPACE/NAME",
                   help="a kubernetes.io/tls Secret holding the CA that signs agents' client certificates; enables "
                        "joining with bootstrap tokens, and the sync service trusts this CA too")
    p.add_argument("--join-server", default=":50052", metavar="ADDR",
                   help="listen address of the HTTPS join service (default :50052; with --agent-ca-secret)")
    p.add_argument("--join-approval", choices=["auto", "manual"], default="auto",
                   help="auto (default): a valid bootstrap token approves the CSR; manual: it waits for "
                        "kubectl certificate approve|deny")
    p.add_argument("--agent-certificate-duration", default="8760h", metavar="DURATION",
                   help="lifetime of the agent certificates it signs (default 8760h, as kube-controller-manager's "
                        "--cluster-signing-duration); a CSR's expirationSeconds may shorten it")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"])
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    return p


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """Compaction bounds; None means unbounded."""

    keep_last: int | None = None
    max_age_seconds: float | None = None
    max_bytes: int | None = None

    @property
    def enabled(self) -> bool:
        """Whether any bound is set."""
        return any(v is not None for v in (self.keep_last, self.max_age_seconds, self.max_bytes))


def describe_retention(r: Retention, interval: float) -> str:
    """One line for the start-up log: the bounds in force."""
    if not r.enabled:
        return "off: the event log is never compacted"
    parts = []
    if r.max_age_seconds is not None:
        age = r.max_age_seconds
        parts.append(f"older than {age / 86400:g}d" if age >= 86400 else f"older than {age:g}s")
    if r.max_bytes is not None:
        parts.append(f"beyond {r.max_bytes / 2**20:g} MiB of records")
    if r.keep_last is not None:
        parts.append(f"beyond the newest {r.keep_last}")
    return f"events {' or '.join(parts)} are compacted every {interval:g}s"


def setup_logging(*, level: str, fmt: str) -> None:
    """Loguru to stderr; json is one object per line for log shippers."""
    logger.remove()
    if fmt == "json":
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stderr, level=level, backtrace=False, diagnose=False,
                   format="{time:YYYY-MM-DDTHH:mm:ss.SSSZZ} {level: <7} {message}")


def check_flags(a: argparse.Namespace) -> tuple[Any, Retention, dict[str, float]]:
    """Validate flags; return (ServerTls or None, Retention, intervals). Raises UsageError."""
    from edgecommon.files import PrivacyError, check_private_key_mode
    from manager.identity import NodeIdentity
    from manager.sync_service import ServerTls

    tls_given = [f for f, v in (("--tls-cert-file", a.tls_cert_file), ("--tls-private-key-file",
                 a.tls_private_key_file), ("--client-ca-file", a.client_ca_file)) if v is not None]
    tls = None
    if tls_given:
        if a.insecure:
            raise UsageError("--insecure cannot be combined with TLS flags (" + ", ".join(tls_given) + ")")
        if a.tls_cert_file is None or a.tls_private_key_file is None:
            raise UsageError("TLS needs both --tls-cert-file and --tls-private-key-file")
        for flag, path in (("--tls-cert-file", a.tls_cert_file), ("--tls-private-key-file", a.tls_private_key_file),
                           ("--client-ca-file", a.client_ca_file)):
            if path is not None and not path.is_file():
                raise UsageError(f"{flag}: no such file: {path}")
        try:
            check_private_key_mode(a.tls_private_key_file)  # issue 12: a group/world-readable key is refused
        except PrivacyError as exc:
            raise UsageError(f"--tls-private-key-file {exc}") from None
        if a.client_ca_file is None and not a.allow_unauthenticated_agents and a.agent_ca_secret is None:
            raise UsageError("TLS without --client-ca-file would let any client sync any node: pass --client-ca-file "
                             "(or --allow-unauthenticated-agents to accept that)")
        if a.client_ca_file is not None and a.allow_unauthenticated_agents:
            raise UsageError("--allow-unauthenticated-agents cannot be combined with --client-ca-file")
        tls = ServerTls(cert_file=a.tls_cert_file, key_file=a.tls_private_key_file, client_ca_file=a.client_ca_file,
                        node_identity=NodeIdentity(a.node_identity or "kubelet"))
    elif not a.insecure:
        raise UsageError("refusing to serve agents without TLS: pass --tls-cert-file and --tls-private-key-file "
                         "(and --client-ca-file), or --insecure for plaintext")
    if a.node_identity is not None and a.client_ca_file is None and a.agent_ca_secret is None:
        raise UsageError("--node-identity needs --client-ca-file (without it no certificate is checked)")
    if a.allow_unauthenticated_agents and a.insecure:
        raise UsageError("--allow-unauthenticated-agents is for TLS without --client-ca-file; --insecure already "
                         "serves everyone")
    if a.max_streams < 1:
        raise UsageError(f"--max-streams must be at least 1, got {a.max_streams}")
    def flag_value(flag: str, parse: Callable[[str], Any], text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from None

    retention = Retention(
        keep_last=a.retain_events,
        max_age_seconds=None if _off(a.retain_age) else flag_value("--retain-age", parse_duration, a.retain_age),
        max_bytes=None if _off(a.retain_bytes) else flag_value("--retain-bytes", parse_size, a.retain_bytes),
    )
    intervals = {name: flag_value("--" + name.replace("_", "-"), parse_duration, getattr(a, name)) for name in
                 ("compaction_interval", "status_refresh_interval", "heartbeat_interval", "watch_timeout")}
    if retention.keep_last is not None and retention.keep_last < 0:
        raise UsageError("--retain-events must be >= 0")
    if a.export_before_compaction is not None and a.export_before_compaction.exists() \
            and not a.export_before_compaction.is_dir():
        raise UsageError(f"--export-before-compaction: not a directory: {a.export_before_compaction}")
    for name, value in intervals.items():
        if value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    split_address(a.sync_server, flag="--sync-server")
    if a.metrics_addr:
        split_address(a.metrics_addr, flag="--metrics-addr")
    if a.default_pod_security_level == "privileged":
        raise UsageError("--default-pod-security-level: privileged is refused (static pods bypass every API check); "
                         "label the namespaces that need it pod-security.kubernetes.io/enforce=privileged")
    if a.default_pod_security_level not in ("baseline", "restricted"):
        raise UsageError(f"--default-pod-security-level: not baseline or restricted: {a.default_pod_security_level!r}")
    if a.default_pod_security_version != "latest" and not re.fullmatch(r"v1\.(0|[1-9][0-9]*)",
                                                                       a.default_pod_security_version):
        raise UsageError(f"--default-pod-security-version: not 'latest' or v1.N: {a.default_pod_security_version!r}")
    if a.namespace is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", a.namespace):
        raise UsageError(f"--namespace: not a namespace name: {a.namespace!r}")
    return tls, retention, intervals


def check_join_flags(a: argparse.Namespace, tls: Any) -> Any:
    """JoinSettings from the joining flags, None without --agent-ca-secret; UsageError naming the flag."""
    if a.agent_ca_secret is None:
        return None
    address = split_address(a.join_server, flag="--join-server")
    try:
        seconds = parse_duration(a.agent_certificate_duration)
    except ValueError as exc:
        raise UsageError(f"--agent-certificate-duration: {exc}") from None
    from manager.joining import join_settings

    try:
        return join_settings(ca_secret=a.agent_ca_secret, address=address, approval=a.join_approval,
                             certificate_seconds=seconds, tls=tls, node_identity=a.node_identity,
                             allow_unauthenticated=a.allow_unauthenticated_agents)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def load_agent_ca(api: Any, join: Any) -> tuple[Any, Any]:
    """(CsrApi, AgentCa) of --agent-ca-secret; StartupError when the Secret cannot be read or cannot sign."""
    from datetime import UTC, datetime

    from kubernetes import client

    from manager.certificates import CsrApi, SecretUnreadable
    from manager.signing import CaError, load_ca

    csrs = CsrApi(certificates=client.CertificatesV1Api(api), core=client.CoreV1Api(api))
    try:
        return csrs, load_ca(*csrs.tls_secret(join.ca_namespace, join.ca_name), now=datetime.now(UTC))
    except (SecretUnreadable, CaError) as exc:
        raise StartupError(f"--agent-ca-secret {join.ca_namespace}/{join.ca_name}: {exc}") from None


def api_client(a: argparse.Namespace) -> Any:
    """A kubernetes ApiClient from --kubeconfig/--master, else the in-cluster config."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    path = Path(os.path.expanduser(a.kubeconfig or DEFAULT_KUBECONFIG))
    env_path = os.environ.get("KUBECONFIG") if a.kubeconfig is None else None
    try:
        if a.kubeconfig is not None and not path.is_file():
            raise StartupError(f"--kubeconfig: no such file: {path}")
        if env_path or path.is_file():
            # with $KUBECONFIG (possibly several files) the client merges it itself
            config.load_kube_config(config_file=None if env_path else str(path), client_configuration=cfg)
            source = env_path or str(path)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
            source = "in-cluster config"
        elif a.master:
            source = "--master"
        else:
            raise StartupError(f"no kubeconfig at {path} and not running in a cluster; "
                               "pass --kubeconfig or --master")
    except (ConfigException, OSError, ValueError) as exc:
        raise StartupError(f"cannot load the Kubernetes client configuration: {' '.join(str(exc).split())}") from None
    if a.master:
        cfg.host = a.master
    cfg.retries = 0  # the watch loop has its own backoff; a start-up probe should fail fast
    api = client.ApiClient(cfg)
    api.user_agent = USER_AGENT
    logger.info("using the Kubernetes API at {} ({})", cfg.host, source)
    return api


def probe_api(api: Any, *, namespace: str | None) -> None:
    """One list of EdgeNodes and of namespaces: fail start-up with one clear line when the API cannot serve us."""
    from kubernetes import client

    objs = client.CustomObjectsApi(api)
    if namespace:
        _probe(api, f"{PLURAL}.{GROUP}", lambda: objs.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, limit=1, _request_timeout=(5, 15)))
    else:
        _probe(api, f"{PLURAL}.{GROUP}", lambda: objs.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, limit=1, _request_timeout=(5, 15)))
    # the namespace watch reads Pod Security labels and tenancy annotations
    selector = {"field_selector": f"metadata.name={namespace}"} if namespace else {}
    _probe(api, "namespaces", lambda: client.CoreV1Api(api).list_namespace(
        limit=1, _request_timeout=(5, 15), **selector))


def _probe(api: Any, what: str, call: Callable[[], Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    host = api.configuration.host
    try:
        call()
    except ApiException as exc:
        if exc.status == 404 and what != "namespaces":
            raise StartupError(f"the EdgeNode resource ({PLURAL}.{GROUP}/{VERSION}) is not served by {host}; "
                               "install it with: kubectl apply -f crd/edgenode.yaml") from None
        if exc.status in (401, 403):
            raise StartupError(f"not allowed to list {what} at {host} (HTTP {exc.status}); "
                               "apply crd/rbac.yaml or check the credentials") from None
        raise StartupError(f"the Kubernetes API at {host} answered HTTP {exc.status} "
                           f"{' '.join(str(exc.reason).split())}") from None
    except Exception as exc:  # urllib3/SSL/socket errors: unreachable or misconfigured
        why = " ".join(str(getattr(exc, "reason", None) or exc).split())
        m = re.search(r"(\[Errno [^\]]+\][^\"')]*)", why) or re.search(r"(\[SSL[^\]]*\][^\"')]*)", why)
        why = m.group(1).strip() if m else why
        raise StartupError(f"cannot reach the Kubernetes API at {host}: {why[:300]}") from None


def lock_data_dir(data_dir: Path) -> Any:
    """Take <data-dir>/manager.lock exclusively; a second manager on the same directory must not start."""
    import fcntl

    from edgecommon.files import PrivacyError, ensure_private_dir

    try:
        ensure_private_dir(data_dir)  # 0700, created so or tightened with a warning: the log holds every manifest
        f = open(data_dir / "manager.lock", "a+")  # noqa: SIM115 (held for the life of the process)
    except PrivacyError as exc:
        raise StartupError(f"--data-dir {exc}") from None
    except OSError as exc:
        raise StartupError(f"--data-dir {data_dir}: {' '.join(str(exc).split())}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise StartupError(f"another edge-manager is using --data-dir {data_dir}") from None
    return f


def main(argv: list[str] | None = None) -> int:
    """Entry point of edge-manager; returns the exit code."""
    parser = build_parser()
    a = parser.parse_args(argv)
    setup_logging(level=a.log_level, fmt=a.log_format)
    try:
        tls, retention, intervals = check_flags(a)
        join = check_join_flags(a, tls)
    except UsageError as exc:
        logger.error("{}", exc)
        return 2
    try:
        return asyncio.run(run(a, tls=tls, retention=retention, intervals=intervals, join=join))
    except StartupError as exc:
        logger.error("{}", exc)
        return 1
    except KeyboardInterrupt:
        return 0


async def run(a: argparse.Namespace, *, tls: Any, retention: Retention, intervals: dict[str, float],
              join: Any = None) -> int:
    """Start everything, wait for SIGTERM/SIGINT, stop everything in order."""
    from kubernetes import client

    from eventlog import LogStore, StoreError
    from eventlog.opening import MANAGER_SUBDIR
    from manager.admitting import NamespaceAdmission
    from manager.daemon import BindError, Daemon
    from manager.podsecurity import Level, Policy, policy_of
    from manager.sync_service import SyncSettings
    from manager.watching import WatchSettings

    logger.info("Starting edge manager ({})", USER_AGENT)
    if tls is None:
        logger.warning("--insecure: the sync service serves plaintext gRPC without authentication; "
                       "any client can read every node's pods")
    elif tls.client_ca_file is None and join is None:
        logger.warning("--allow-unauthenticated-agents: the sync service checks no client certificate; "
                       "any client can read every node's pods and change its EdgeNode status")
    elif tls.node_identity.value == "cn":
        logger.warning("--node-identity=cn: a client certificate CN=<node> is trusted as that node; "
                       "--client-ca-file must be a CA dedicated to agents")
    api = await asyncio.to_thread(api_client, a)
    await asyncio.to_thread(probe_api, api, namespace=a.namespace)
    join_service = None
    if join is not None:
        csrs, agent_ca = await asyncio.to_thread(load_agent_ca, api, join)
        tls = dataclasses.replace(tls, agent_ca_pem=agent_ca.certificate_pem)  # the sync service trusts it too
    store_dir = a.data_dir / MANAGER_SUBDIR
    lock = lock_data_dir(a.data_dir)  # held until exit: one writer per log, or offsets would interleave
    try:
        store = LogStore(store_dir)
    except (StoreError, OSError) as exc:
        raise StartupError(f"cannot open the event log in {store_dir}: {' '.join(str(exc).split())}") from None
    try:
        info = store.info()
        logger.info("event log in {}: log_id {}, head offset {}, {} event(s) retained", store_dir, info.log_id,
                    info.head_offset, info.event_count)
        default_policy = policy_of({"pod-security.kubernetes.io/enforce-version": a.default_pod_security_version},
                                   default=Policy(Level(a.default_pod_security_level)))
        logger.info("Pod Security of namespaces without the enforce label: {}", default_policy)
        logger.info("retention: {}", describe_retention(retention, intervals["compaction_interval"]))
        daemon = Daemon(
            admission=NamespaceAdmission(default_policy=default_policy),
            store=store, api=api, custom=client.CustomObjectsApi(api), core=client.CoreV1Api(api),
            namespace=a.namespace, retention=retention,
            events=client.EventsV1Api(api), reporting_instance=f"edge-manager-{socket.gethostname()}",
            compaction_interval=intervals["compaction_interval"],
            status_refresh_seconds=intervals["status_refresh_interval"],
            sync_settings=SyncSettings(heartbeat_seconds=intervals["heartbeat_interval"], max_streams=a.max_streams),
            watch_settings=WatchSettings(server_timeout_seconds=max(1, round(intervals["watch_timeout"])),
                                         read_timeout_seconds=intervals["watch_timeout"] + 30),
            export_dir=a.export_before_compaction,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal(stop, sig))
        metrics_addr = split_address(a.metrics_addr, flag="--metrics-addr") if a.metrics_addr else None
        try:
            await daemon.start(sync_address=a.sync_server, tls=tls, metrics_address=metrics_addr)
        except BindError as exc:
            await daemon.stop()
            flag = {"sync": "--sync-server", "metrics": "--metrics-addr"}[exc.role]
            address = a.sync_server if exc.role == "sync" else a.metrics_addr
            raise StartupError(f"{flag} {address}: {exc.reason}") from None
        except OSError as exc:
            await daemon.stop()
            raise StartupError(" ".join(str(exc).split())) from None
        if join is not None:
            from manager.joining import JoinService

            join_service = JoinService(api=csrs, ca=agent_ca, settings=join, refusals=daemon.refusals)
            try:
                join_service.start()
            except OSError as exc:
                await daemon.stop()
                raise StartupError(f"--join-server {a.join_server}: {exc.strerror or exc}") from None
        await stop.wait()
        logger.info("Stopping edge manager")
        if join_service is not None:
            await asyncio.to_thread(join_service.stop)
        await daemon.stop()
    finally:
        t0 = time.monotonic()
        store.close()
        logger.info("event log closed ({:.0f} ms)", (time.monotonic() - t0) * 1000)
    logger.info("edge manager stopped")
    lock.close()
    return 0


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def handler() -> None:
        if not stop.is_set():
            logger.info("received {}; shutting down", sig.name)
        stop.set()
    return handler

