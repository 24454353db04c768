"""The `edge-manager` command: flags, settings, start-up and clean shutdown.

Owns the command line (flags -> manager.settings.ManagerSettings, one usage line and exit 2
on a mistake), the API clients (the only module that builds kubernetes clients), the data-dir
lock and the order things start and stop in; manager.daemon wires the parts. Must not import
the agent package.

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
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from edgecommon.addresses import check_dial_target, parse_listen_address
from edgecommon.files import PrivacyError
from edgecommon.locks import LockHeld, lock_data_dir, unlock
from edgecommon.logs import add_logging_flags, log_settings, setup
from edgecommon.names import is_dns1123_label, is_dns1123_subdomain
from edgecommon.quantities import parse_duration, parse_size
from edgecommon.tls import Pem, TlsFileError, check_pem_file
from edgecommon.usage import Parser, UsageError, flag_value, report_usage_error
from manager.identity import MANAGER_USER_PREFIX, NodeIdentity
from manager.podsecurity import ENFORCE_VERSION_LABEL, Level, Policy, policy_of
from manager.settings import (
    Approval,
    HighAvailability,
    JoinSettings,
    KubeSettings,
    LeaseSettings,
    ManagerSettings,
    PeerTls,
    PodRef,
    Retention,
    ServerTls,
    StoreSettings,
    SyncFlags,
    describe_retention,
)

PROG = "edge-manager"
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


class StartupError(Exception):
    """The manager cannot start (store, API, port): one line, exit code 1."""


def _off(text: str | None) -> bool:
    """Whether a retention bound is turned off ('none', 'off', '0')."""
    return text is None or text.strip().lower() in _OFF


def build_parser() -> argparse.ArgumentParser:
    """The edge-manager command line."""
    p = Parser(
        prog=PROG,
        description="Record EdgeNode changes into an event log and stream them to edge agents.",
    )
    p.add_argument("--kubeconfig", default=None,
                   help=f"kubeconfig file (default $KUBECONFIG, else {DEFAULT_KUBECONFIG}; in-cluster config when none is found)")
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
    p.add_argument("--join-approval", choices=[a.value for a in Approval], default="auto",
                   help="auto (default): a valid bootstrap token approves the CSR; manual: it waits for "
                        "kubectl certificate approve|deny")
    p.add_argument("--agent-certificate-duration", default="8760h", metavar="DURATION",
                   help="lifetime of the agent certificates it signs (default 8760h, as kube-controller-manager's "
                        "--cluster-signing-duration); a CSR's expirationSeconds may shorten it")
    ha = p.add_argument_group("high availability (docs/ha.md)")
    ha.add_argument("--leader-elect", action="store_true",
                    help="run as one of several managers: elect a leader on a Lease; the others follow its log")
    ha.add_argument("--leader-elect-lease-duration", default="15s", metavar="DURATION",
                    help="how long standbys wait after the Lease last changed before taking it (default 15s)")
    ha.add_argument("--leader-elect-renew-deadline", default="10s", metavar="DURATION",
                    help="the leader stops leading when it could not renew for this long (default 10s)")
    ha.add_argument("--leader-elect-retry-period", default="2s", metavar="DURATION",
                    help="how often to try to acquire or renew the Lease (default 2s)")
    ha.add_argument("--leader-elect-resource-name", default="edge-manager", metavar="NAME",
                    help="the Lease's name (default edge-manager)")
    ha.add_argument("--leader-elect-resource-namespace", default=None, metavar="NAMESPACE",
                    help="the Lease's namespace (default $POD_NAMESPACE, else 'default')")
    ha.add_argument("--leader-elect-identity", default=None, metavar="ID",
                    help="this manager's name in the Lease (default <$POD_NAME or hostname>_<hash of --data-dir>)")
    ha.add_argument("--advertise-address", default=None, metavar="HOST:PORT",
                    help="where agents and standbys reach this manager's sync service when it leads "
                         "(default $POD_IP:<sync port>)")
    ha.add_argument("--standby-timeout", default="10s", metavar="DURATION",
                    help="an in-sync standby that acknowledges nothing for this long stops holding agents back "
                         "(default 10s)")
    ha.add_argument("--peer-cert-file", type=Path, default=None,
                    help="client certificate a standby presents to the leader (O=edge.k8s.io:managers); default: "
                         "minted from the agent CA of --agent-ca-secret")
    ha.add_argument("--peer-key-file", type=Path, default=None, help="its private key")
    ha.add_argument("--peer-ca-file", type=Path, default=None,
                    help="CA bundle that verifies the leader's serving certificate (TLS with --leader-elect)")
    ha.add_argument("--pod-name", default=os.environ.get("POD_NAME"), metavar="NAME",
                    help="this manager's Pod, labelled edge.k8s.io/manager-role=leader|standby (default $POD_NAME)")
    ha.add_argument("--pod-namespace", default=os.environ.get("POD_NAMESPACE"), metavar="NAMESPACE",
                    help="its namespace (default $POD_NAMESPACE, else the Lease's)")
    add_logging_flags(p)
    return p


def identity_default(data_dir: Path) -> str:
    """<pod or host name>_<8 hex of the data dir>: stable across restarts, distinct per data dir on one host."""
    import hashlib

    base = os.environ.get("POD_NAME") or socket.gethostname()
    digest = hashlib.sha256(str(data_dir.expanduser().resolve()).encode()).hexdigest()[:8]
    return f"{base}_{digest}"


def _high_availability(a: argparse.Namespace, tls: ServerTls | None, join: JoinSettings | None) -> HighAvailability | None:
    """--leader-elect and its flags checked (client-go's rules for the timings); None without it. Raises UsageError."""
    ha_flags = [f for f, v in (("--advertise-address", a.advertise_address), ("--peer-cert-file", a.peer_cert_file),
                               ("--peer-key-file", a.peer_key_file), ("--peer-ca-file", a.peer_ca_file))
                if v is not None]
    if not a.leader_elect:
        if ha_flags:
            raise UsageError(f"{ha_flags[0]} needs --leader-elect")
        return None
    timings = {name: flag_value(flag, parse_duration, getattr(a, name.replace("-", "_")[2:]))
               for name, flag in (("--leader-elect-lease-duration",) * 2, ("--leader-elect-renew-deadline",) * 2,
                                  ("--leader-elect-retry-period",) * 2)}
    lease, renew, retry = timings.values()
    namespace = a.leader_elect_resource_namespace or os.environ.get("POD_NAMESPACE") or "default"
    if not is_dns1123_label(namespace):
        raise UsageError(f"--leader-elect-resource-namespace: not a namespace name: {namespace!r}")
    if not is_dns1123_subdomain(a.leader_elect_resource_name):
        raise UsageError(f"--leader-elect-resource-name: not a Lease name: {a.leader_elect_resource_name!r}")
    identity = a.leader_elect_identity or identity_default(a.data_dir)
    if not identity or len(identity) > 253 or any(c.isspace() for c in identity):
        raise UsageError(f"--leader-elect-identity: not a usable identity: {identity!r}")
    sync_port = parse_listen_address(a.sync_server).port
    advertise = a.advertise_address
    if advertise is None:
        pod_ip = os.environ.get("POD_IP")
        if not pod_ip:
            raise UsageError("--leader-elect needs --advertise-address HOST:PORT (where agents and standbys reach "
                             "this manager), or $POD_IP")
        advertise = f"[{pod_ip}]:{sync_port}" if ":" in pod_ip else f"{pod_ip}:{sync_port}"
    flag_value("--advertise-address", check_dial_target, advertise)
    standby_timeout = flag_value("--standby-timeout", parse_duration, a.standby_timeout)
    if standby_timeout <= 0:
        raise UsageError("--standby-timeout must be positive")
    peer_tls = None
    if tls is not None:
        if (a.peer_cert_file is None) != (a.peer_key_file is None):
            raise UsageError("--peer-cert-file and --peer-key-file go together")
        room = 64 - len(MANAGER_USER_PREFIX)  # a minted peer certificate's CN is the prefix and the identity
        if a.peer_cert_file is None and join is not None and len(identity) > room:
            raise UsageError(f"--leader-elect-identity: {identity!r} is longer than the {room} characters a peer "
                             "certificate's CN has room for; pass a shorter one")
        if a.peer_cert_file is None and join is None:
            raise UsageError("--leader-elect with TLS needs --peer-cert-file and --peer-key-file (or --agent-ca-secret, "
                             "from which the managers mint their peer certificates)")
        if a.peer_ca_file is None and join is None:
            raise UsageError("--leader-elect with TLS needs --peer-ca-file (the CA that signed the managers' "
                             "serving certificates)")
        _check_pem_flags((("--peer-cert-file", a.peer_cert_file, Pem.CERTIFICATE),
                          ("--peer-ca-file", a.peer_ca_file, Pem.CERTIFICATE),
                          ("--peer-key-file", a.peer_key_file, Pem.PRIVATE_KEY)))
        peer_tls = PeerTls(cert_file=a.peer_cert_file, key_file=a.peer_key_file, ca_file=a.peer_ca_file)
    elif [f for f in ha_flags if f.startswith("--peer")]:
        raise UsageError("--peer-* flags need TLS: with --insecure, standbys follow in plaintext")
    if a.pod_name is not None and not is_dns1123_subdomain(a.pod_name):
        raise UsageError(f"--pod-name: not a Pod name: {a.pod_name!r}")
    pod_namespace = a.pod_namespace or namespace
    if not is_dns1123_label(pod_namespace):
        raise UsageError(f"--pod-namespace: not a namespace name: {pod_namespace!r}")
    try:  # client-go's rules for the timings, checked where the settings are made
        lease_settings = LeaseSettings(namespace=namespace, name=a.leader_elect_resource_name, identity=identity,
                                       lease_duration=lease, renew_deadline=renew, retry_period=retry,
                                       sync_address=advertise)
    except ValueError as exc:
        raise UsageError(f"--leader-elect-*: {exc}") from None
    return HighAvailability(
        lease=lease_settings,
        standby_timeout=standby_timeout, peer_tls=peer_tls,
        pod=PodRef(namespace=pod_namespace, name=a.pod_name) if a.pod_name else None,
    )


def _check_pem_flags(flags: Sequence[tuple[str, Path | None, Pem]]) -> None:
    """Each given file exists and holds what its flag says; a key others may read is refused (issue 12)."""
    for flag, path, holds in flags:
        if path is None:
            continue
        if not path.is_file():
            raise UsageError(f"{flag}: no such file: {path}")
        try:
            check_pem_file(path, holds=holds)
        except TlsFileError as exc:
            raise UsageError(f"{flag} {exc}") from None


def _server_tls(a: argparse.Namespace) -> ServerTls | None:
    """TLS from the flags, every file checked; None for --insecure. Raises UsageError."""
    tls_given = [f for f, v in (("--tls-cert-file", a.tls_cert_file), ("--tls-private-key-file",
                 a.tls_private_key_file), ("--client-ca-file", a.client_ca_file)) if v is not None]
    if not tls_given:
        if not a.insecure:
            raise UsageError("refusing to serve agents without TLS: pass --tls-cert-file and --tls-private-key-file "
                             "(and --client-ca-file), or --insecure for plaintext")
        return None
    if a.insecure:
        raise UsageError("--insecure cannot be combined with TLS flags (" + ", ".join(tls_given) + ")")
    if a.tls_cert_file is None or a.tls_private_key_file is None:
        raise UsageError("TLS needs both --tls-cert-file and --tls-private-key-file")
    _check_pem_flags((("--tls-cert-file", a.tls_cert_file, Pem.CERTIFICATE),
                      ("--client-ca-file", a.client_ca_file, Pem.CERTIFICATE),
                      ("--tls-private-key-file", a.tls_private_key_file, Pem.PRIVATE_KEY)))
    if a.client_ca_file is None and not a.allow_unauthenticated_agents and a.agent_ca_secret is None:
        raise UsageError("TLS without --client-ca-file would let any client sync any node: pass --client-ca-file "
                         "(or --allow-unauthenticated-agents to accept that)")
    if a.client_ca_file is not None and a.allow_unauthenticated_agents:
        raise UsageError("--allow-unauthenticated-agents cannot be combined with --client-ca-file")
    return ServerTls(cert_file=a.tls_cert_file, key_file=a.tls_private_key_file, client_ca_file=a.client_ca_file,
                     node_identity=NodeIdentity(a.node_identity or "kubelet"))


def _join_settings(a: argparse.Namespace, tls: ServerTls | None) -> JoinSettings | None:
    """Joining from the flags (docs/joining.md); None without --agent-ca-secret. Raises UsageError."""
    if a.agent_ca_secret is None:
        return None
    namespace, sep, name = a.agent_ca_secret.partition("/")
    if not sep or not is_dns1123_label(namespace) or not name or "/" in name:
        raise UsageError(f"--agent-ca-secret: not NAMESPACE/NAME: {a.agent_ca_secret!r}")
    if tls is None:
        raise UsageError("--agent-ca-secret needs TLS (--tls-cert-file, --tls-private-key-file): agents join over "
                         "HTTPS and sync with the certificates it signs")
    if a.allow_unauthenticated_agents:
        raise UsageError("--agent-ca-secret cannot be combined with --allow-unauthenticated-agents: the sync "
                         "service then checks every client certificate against the agent CA")
    if tls.node_identity is NodeIdentity.CN:
        raise UsageError("--agent-ca-secret cannot be combined with --node-identity=cn: the agent CA issues "
                         "kubelet-style certificates (CN=system:node:<node>, O=system:nodes)")
    seconds = flag_value("--agent-certificate-duration", parse_duration, a.agent_certificate_duration)
    if seconds < 60:
        raise UsageError(f"--agent-certificate-duration must be at least 60s, got {seconds:g}s")
    return JoinSettings(ca_namespace=namespace, ca_name=name,
                        address=flag_value("--join-server", parse_listen_address, a.join_server),
                        approval=Approval(a.join_approval), certificate_seconds=seconds,
                        cert_file=tls.cert_file, key_file=tls.key_file)


def settings_from(a: argparse.Namespace) -> ManagerSettings:
    """Check the parsed flags and build the settings tree. Raises UsageError."""
    tls = _server_tls(a)
    join = _join_settings(a, tls)
    if a.node_identity is not None and a.client_ca_file is None and join is None:
        raise UsageError("--node-identity needs --client-ca-file (without it no certificate is checked)")
    if a.allow_unauthenticated_agents and a.insecure:
        raise UsageError("--allow-unauthenticated-agents is for TLS without --client-ca-file; --insecure already "
                         "serves everyone")
    if a.max_streams < 1:
        raise UsageError(f"--max-streams must be at least 1, got {a.max_streams}")
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
    flag_value("--sync-server", parse_listen_address, a.sync_server)
    metrics_addr = flag_value("--metrics-addr", parse_listen_address, a.metrics_addr) \
        if a.metrics_addr else None
    if a.default_pod_security_level == "privileged":
        raise UsageError("--default-pod-security-level: privileged is refused (static pods bypass every API check); "
                         "label the namespaces that need it pod-security.kubernetes.io/enforce=privileged")
    if a.default_pod_security_level not in ("baseline", "restricted"):
        raise UsageError(f"--default-pod-security-level: not baseline or restricted: {a.default_pod_security_level!r}")
    if a.default_pod_security_version != "latest" and not re.fullmatch(r"v1\.(0|[1-9][0-9]*)",
                                                                       a.default_pod_security_version):
        raise UsageError(f"--default-pod-security-version: not 'latest' or v1.N: {a.default_pod_security_version!r}")
    if a.namespace is not None and not is_dns1123_label(a.namespace):
        raise UsageError(f"--namespace: not a namespace name: {a.namespace!r}")
    return ManagerSettings(
        kube=KubeSettings(kubeconfig=None if a.kubeconfig is None else Path(a.kubeconfig), master=a.master,
                          namespace=a.namespace),
        sync=SyncFlags(address=a.sync_server, tls=tls, max_streams=a.max_streams,
                       heartbeat_seconds=intervals["heartbeat_interval"]),
        store=StoreSettings(data_dir=a.data_dir, retention=retention,
                            compaction_interval=intervals["compaction_interval"],
                            export_dir=a.export_before_compaction),
        default_pod_security=policy_of({ENFORCE_VERSION_LABEL: a.default_pod_security_version},
                                       default=Policy(Level(a.default_pod_security_level))),
        status_refresh_seconds=intervals["status_refresh_interval"],
        watch_timeout_seconds=intervals["watch_timeout"],
        metrics_addr=metrics_addr,
        logging=log_settings(a),
        join=join,
        ha=_high_availability(a, tls, join),
    )


def parse_args(argv: Sequence[str] | None = None) -> ManagerSettings:
    """Flags to settings; raises UsageError with a one-line message."""
    return settings_from(build_parser().parse_args(argv))


def api_client(kube: KubeSettings, *, retries: int | bool = 0) -> Any:
    """A kubernetes ApiClient from --kubeconfig/--master, else the in-cluster config; `retries`: urllib3's."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    path = Path(os.path.expanduser(kube.kubeconfig or DEFAULT_KUBECONFIG))
    env_path = os.environ.get("KUBECONFIG") if kube.kubeconfig is None else None
    try:
        if kube.kubeconfig is not None and not path.is_file():
            raise StartupError(f"--kubeconfig: no such file: {path}")
        if env_path or path.is_file():
            # with $KUBECONFIG (possibly several files) the client merges it itself
            config.load_kube_config(config_file=None if env_path else str(path), client_configuration=cfg)
            source = env_path or str(path)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
            source = "in-cluster config"
        elif kube.master:
            source = "--master"
        else:
            raise StartupError(f"no kubeconfig at {path} and not running in a cluster; "
                               "pass --kubeconfig or --master")
    except (ConfigException, OSError, ValueError) as exc:
        raise StartupError(f"cannot load the Kubernetes client configuration: {' '.join(str(exc).split())}") from None
    if kube.master:
        cfg.host = kube.master
    cfg.retries = retries  # the watch loop has its own backoff; a start-up probe should fail fast
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


def load_agent_ca(api: Any, join: JoinSettings) -> tuple[Any, Any]:
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


def _lock(data_dir: Path) -> int:
    """Hold <data-dir>/manager.lock: one writer per log, or offsets would interleave. Raises StartupError."""
    try:
        return lock_data_dir(data_dir, program=PROG)  # the dir is made 0700 first: the log holds every manifest
    except (PrivacyError, LockHeld) as exc:
        raise StartupError(f"--data-dir {exc}" if isinstance(exc, PrivacyError) else str(exc)) from None
    except OSError as exc:
        raise StartupError(f"--data-dir {data_dir}: {' '.join(str(exc).split())}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of edge-manager; returns the exit code."""
    try:
        settings = parse_args(argv)
    except UsageError as exc:
        return report_usage_error(PROG, exc)
    setup(settings.logging)
    try:
        return asyncio.run(run(settings))
    except StartupError as exc:
        logger.error("{}", exc)
        return 1
    except KeyboardInterrupt:
        return 0


async def run(s: ManagerSettings) -> int:
    """Start everything, wait for SIGTERM/SIGINT, stop everything in order."""
    from eventlog import LogStore, StoreError
    from eventlog.installing import recover_store_dir
    from eventlog.opening import MANAGER_SUBDIR

    logger.info("Starting edge manager ({})", USER_AGENT)
    tls = s.sync.tls
    if tls is None:
        logger.warning("--insecure: the sync service serves plaintext gRPC without authentication; "
                       "any client can read every node's pods")
    elif tls.client_ca_file is None and s.join is None:
        logger.warning("--allow-unauthenticated-agents: the sync service checks no client certificate; "
                       "any client can read every node's pods and change its EdgeNode status")
    elif tls.node_identity is NodeIdentity.CN:
        logger.warning("--node-identity=cn: a client certificate CN=<node> is trusted as that node; "
                       "--client-ca-file must be a CA dedicated to agents")
    api = await asyncio.to_thread(api_client, s.kube)
    await asyncio.to_thread(probe_api, api, namespace=s.kube.namespace)
    joining = None
    if s.join is not None:
        joining = await asyncio.to_thread(load_agent_ca, api, s.join)
        tls = dataclasses.replace(tls, agent_ca_pem=joining[1].certificate_pem)  # the sync service trusts it too
    store_dir = s.store.data_dir / MANAGER_SUBDIR
    lock = _lock(s.store.data_dir)  # held until exit
    try:
        recover_store_dir(store_dir)  # a copy from the leader whose install a crash interrupted (docs/ha.md)
        store = LogStore(store_dir)
    except (StoreError, OSError) as exc:
        raise StartupError(f"cannot open the event log in {store_dir}: {' '.join(str(exc).split())}") from None
    try:
        info = store.info()
        logger.info("event log in {}: log_id {}, head offset {}, {} event(s) retained", store_dir, info.log_id,
                    info.head_offset, info.event_count)
        logger.info("Pod Security of namespaces without the enforce label: {}", s.default_pod_security)
        logger.info("retention: {}", describe_retention(s.store.retention, s.store.compaction_interval))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal(stop, sig))
        term = LeaderTerm(s, api=api, tls=tls, joining=joining)
        if s.ha is None:
            await term.lead(store, stop, lambda: False, health=None)
        else:
            store = await _stand(s, s.ha, store, store_dir=store_dir, api=api, tls=tls, term=term, stop=stop)
        logger.info("Stopping edge manager")
    finally:
        t0 = time.monotonic()
        store.close()
        logger.info("event log closed ({:.0f} ms)", (time.monotonic() - t0) * 1000)
    logger.info("edge manager stopped")
    unlock(lock)
    return 0


class LeaderTerm:
    """One leader term: the daemon and the join service, from start until `until` (a single manager: until exit)."""

    def __init__(self, s: ManagerSettings, *, api: Any, tls: ServerTls | None, joining: tuple[Any, Any] | None) -> None:
        self._s = s
        self._api = api
        self._tls = tls
        self._joining = joining
        self.daemon: Any = None  # the running term's manager.daemon.Daemon, for metrics and readiness

    @property
    def agent_ca(self) -> Any:
        """The agent CA of --agent-ca-secret (standbys mint their peer certificates from it), or None."""
        return self._joining[1] if self._joining is not None else None

    async def lead(self, store: Any, until: asyncio.Event, fenced: Callable[[], bool], *,
                   health: Any, leadership: Any = None, collectors: Sequence[Any] = ()) -> None:
        """Run the manager's leader parts until `until`; stop them at once (no grace) when `fenced()`."""
        from kubernetes import client

        from manager.admitting import NamespaceAdmission
        from manager.daemon import BindError, Daemon
        from manager.sync_service import SyncSettings
        from manager.watching import WatchSettings

        s, api = self._s, self._api
        daemon = Daemon(
            admission=NamespaceAdmission(default_policy=s.default_pod_security),
            store=store, custom=client.CustomObjectsApi(api), core=client.CoreV1Api(api),
            namespace=s.kube.namespace, retention=s.store.retention,
            events=client.EventsV1Api(api), reporting_instance=f"edge-manager-{socket.gethostname()}",
            compaction_interval=s.store.compaction_interval,
            status_refresh_seconds=s.status_refresh_seconds,
            sync_settings=SyncSettings(heartbeat_seconds=s.sync.heartbeat_seconds, max_streams=s.sync.max_streams),
            watch_settings=WatchSettings(server_timeout_seconds=max(1, round(s.watch_timeout_seconds)),
                                         read_timeout_seconds=s.watch_timeout_seconds + 30),
            export_dir=s.store.export_dir,
            fenced=fenced, leadership=leadership,
            standby_timeout=s.ha.standby_timeout if s.ha is not None else None,
        )
        self.daemon = daemon
        if self._joining is not None:
            daemon.starting = "the join listener is not started yet"
        try:
            await daemon.start(sync_address=s.sync.address, tls=self._tls,
                               metrics_address=s.metrics_addr if health is None else None)
        except BindError as exc:
            await daemon.stop()
            flag = {"sync": "--sync-server", "metrics": "--metrics-addr"}[exc.role]
            address = s.sync.address if exc.role == "sync" else str(s.metrics_addr)
            raise StartupError(f"{flag} {address}: {exc.reason}") from None
        except OSError as exc:
            await daemon.stop()
            raise StartupError(" ".join(str(exc).split())) from None
        for c in collectors:
            daemon.metrics.registry.register(c)
        if health is not None:
            health.registry, health.not_ready = daemon.metrics.registry, daemon.not_ready
        join_service = None
        if self._joining is not None:
            from manager.joining import JoinService

            assert s.join is not None
            csrs, agent_ca = self._joining
            join_service = JoinService(api=csrs, ca=agent_ca, settings=s.join, refusals=daemon.refusals,
                                       on_refused=daemon.join_refused)
            try:
                join_service.start()
            except OSError as exc:
                await daemon.stop()
                raise StartupError(f"--join-server {s.join.address}: {exc.strerror or exc}") from None
            daemon.starting = None
        try:
            await until.wait()
        finally:
            if join_service is not None:
                await asyncio.to_thread(join_service.stop)
            await (daemon.stop(grace=0) if fenced() else daemon.stop())
            self.daemon = None


async def _stand(s: ManagerSettings, ha: HighAvailability, store: Any, *, store_dir: Path, api: Any,
                 tls: ServerTls | None, term: LeaderTerm, stop: asyncio.Event) -> Any:
    """--leader-elect: stand by and lead in turn (manager/standing.py) until `stop`; return the store."""
    from kubernetes import client

    from edgecommon.serving import HealthServer
    from manager.following import Follower
    from manager.leader_election import LeaderElector
    from manager.leadership import Elected
    from manager.peer_tls import PeerTlsError, peer_channel, peer_credentials
    from manager.pod_role import PodRoleLabel
    from manager.pod_role import Role as PodRole
    from manager.standing import Parts, Role, Standing
    from manager.metrics import RoleCollector
    from manager.standby import StandbyServer
    from manager.sync_service import BindProblem

    elector_box: list[Any] = []

    def leader_address() -> str:
        record = elector_box[0].observed() if elector_box else None
        if record is None or record.holder_identity in ("", ha.lease.identity):
            return ""
        return record.sync_address or ""

    # its own client: a renew never queues behind the watches' connections; no urllib3 retry stretches its deadline
    lease_client = await asyncio.to_thread(lambda: api_client(s.kube, retries=False))

    def make_elector(started: Callable[[], None], stopped: Callable[[], None]) -> Any:
        elector = LeaderElector(client.CoordinationV1Api(lease_client), ha.lease, on_started_leading=started,
                                on_stopped_leading=stopped)
        elector_box.append(elector)
        return elector

    leadership = Elected(is_leader=lambda: bool(elector_box) and elector_box[0].is_leader(),
                         leader_address=leader_address)
    peer = ha.peer_tls
    try:
        channel = peer_channel(None if peer is None else peer_credentials(
            ca_file=peer.ca_file, cert_file=peer.cert_file, key_file=peer.key_file, identity=ha.lease.identity,
            agent_ca=term.agent_ca))
    except PeerTlsError as exc:  # an identity too long for a certificate's CN, unreadable --peer-* files
        raise StartupError(f"peer TLS: {exc}") from None
    followers: list[Any] = []  # one per standby phase; their copies are summed for the metric

    def make_follower(current: Any) -> Any:
        follower = Follower(store_dir, current, identity=ha.lease.identity,
                            leader_address=lambda: leader_address() or None, channel=channel)
        followers.append(follower)
        return follower

    standing: Any = None
    role = RoleCollector(leading=leadership.leading, terms=lambda: standing.transitions if standing else 0,
                         head_offset=lambda: _own_head(standing, followers),
                         copies=lambda: sum(f.copies for f in followers))
    standby = StandbyServer(address=s.sync.address, tls=tls, leadership=leadership, collectors=(role,),
                            not_ready=lambda: _standby_not_ready(followers[-1] if followers else None))
    pod_role = (PodRoleLabel(client.CoreV1Api(api), namespace=ha.pod.namespace, name=ha.pod.name)
                if ha.pod is not None else None)
    labeller_stop = threading.Event()
    if pod_role is not None:
        pod_role.set(PodRole.STANDBY)  # a restarted container may still carry "leader"
        threading.Thread(target=pod_role.run, args=(labeller_stop,), name="pod-role", daemon=True).start()
    health = None
    if s.metrics_addr is not None:
        try:
            health = HealthServer(s.metrics_addr, registry=standby.registry, not_ready=standby.not_ready)
        except OSError as exc:
            raise StartupError(f"--metrics-addr {s.metrics_addr}: {exc.strerror or exc}") from None
        health.start()

    def on_role(now: Role) -> None:
        if health is not None and now is Role.STANDBY:
            health.registry, health.not_ready = standby.registry, standby.not_ready
        if pod_role is not None and now in (Role.STANDBY, Role.LEADER):
            pod_role.set(PodRole(now.value))  # returns at once; the labeller's thread patches

    standing = Standing(store, settings=ha, parts=Parts(
        elector=make_elector, follower=make_follower, standby_server=standby.serving,
        lead=lambda st, until, fenced: term.lead(st, until, fenced, health=health, leadership=leadership,
                                                  collectors=(role,)),
        on_role=on_role,
    ))
    try:
        return await standing.run(stop)
    except BindProblem as exc:
        raise StartupError(f"--sync-server {s.sync.address}: {exc.reason}") from None
    finally:
        labeller_stop.set()
        if health is not None:
            health.stop()


def _own_head(standing: Any, followers: list[Any]) -> int:
    """This manager's head: the follower's while standing by (a copy may have replaced the store it was given)."""
    from manager.standing import Role

    if standing is None:
        return 0
    if standing.role is not Role.LEADER and followers:
        return followers[-1].head_offset
    return standing.store.head_offset


def _standby_not_ready(follower: Any) -> str | None:
    """A standby is ready once it follows a leader and holds what the leader announced (a rolling update waits)."""
    if follower is None:
        return "standby: starting"
    if not follower.connected:
        return f"standby: not following a leader ({follower.last_error or 'connecting'})"
    if follower.lag:
        return f"standby: {follower.lag} event(s) behind the leader"
    return None


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def handler() -> None:
        if not stop.is_set():
            logger.info("received {}; shutting down", sig.name)
        stop.set()
    return handler



def cli() -> None:
    """The console entry point: main(), then exit without waiting on the watch threads.

    A watch thread blocked in an HTTP read outlives the daemon's stop (it is a daemon thread); if
    it logs while the interpreter finalizes, CPython aborts ("could not acquire lock for <stderr>
    at interpreter shutdown", exit -6: seen once in CI on a refused start). Everything that must
    be written (store closed, log lines) is done when main() returns, so exit at once.
    """
    code = main()
    logger.remove()  # flushes the sinks; nothing logs after this
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    cli()
