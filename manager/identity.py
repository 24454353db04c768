"""Who a sync peer is: node-name validation, the mTLS identity check, and a standby manager's peer certificate.

Pure functions over gRPC's auth context mapping; imports neither grpc nor kubernetes.
The default rule is kubelet's (k8s.io/kubernetes pkg/auth/nodeidentifier): the user is
the certificate's CN `system:node:<name>` and its groups (O) include `system:nodes`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgecommon.names import NODE_USER_PREFIX, NODES_GROUP, SUBDOMAIN_MAX, is_dns1123_subdomain

SYSTEM_PREFIX = "system:"  # Kubernetes' reserved user and group names
MANAGERS_GROUP = "edge.k8s.io:managers"  # O of a manager's peer certificate (a standby following the leader)
MANAGER_USER_PREFIX = "edge.k8s.io:manager:"  # CN of a manager's peer certificate: this and its identity
MAX_NODE_NAME = SUBDOMAIN_MAX  # an EdgeNode's name is a Kubernetes object name: a DNS-1123 subdomain


class NodeIdentity(enum.Enum):
    """How a client certificate names its node (--node-identity)."""

    KUBELET = "kubelet"
    """CN=system:node:<name>, O=system:nodes, as kubelet's client certificate (any CA)."""
    CN = "cn"
    """CN=<name>; only safe with a CA dedicated to agents (it would accept any user's certificate)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The node a certificate names, or why it names none."""

    node: str | None
    problem: str | None = None


def node_name_problem(node: str) -> str | None:
    """Why `node` is not a valid node name; None when it is."""
    if not node:
        return "empty node name"
    if not is_dns1123_subdomain(node):
        return f"invalid node name {node[:80]!r}: must be a DNS-1123 subdomain of at most {MAX_NODE_NAME} characters"
    return None


def _texts(values: Iterable[bytes | str] | None) -> list[str]:
    return [v.decode(errors="replace") if isinstance(v, bytes) else v for v in values or ()]


_HEX = re.compile(r"[0-9a-fA-F]{2}")


def subject_attributes(subject: str) -> list[tuple[str, str]]:
    """(type, value) pairs of an RFC 2253 subject string (gRPC's x509_subject), escapes undone.

    A value in hex form (#...) is kept as it is: it never equals a node name or group.
    """
    attrs: list[tuple[str, str]] = []
    buf: list[bytes] = []
    key: str | None = None
    i = 0
    raw = subject.encode()
    n = len(raw)

    def flush() -> None:
        nonlocal key
        text = b"".join(buf).decode(errors="replace")
        if key is None:
            if text.strip():
                attrs.append(("", text.strip()))  # a malformed part: kept so counts stay honest
        else:
            attrs.append((key.strip().upper(), text))
        buf.clear()
        key = None

    while i < n:
        c = raw[i:i + 1]
        if c == b"\\" and i + 1 < n:
            nxt = raw[i + 1:i + 3].decode(errors="replace")
            if _HEX.fullmatch(nxt):
                buf.append(bytes([int(nxt, 16)]))
                i += 3
            else:
                buf.append(raw[i + 1:i + 2])
                i += 2
            continue
        if c == b"=" and key is None:
            key = b"".join(buf).decode(errors="replace")
            buf.clear()
        elif c in (b",", b"+"):
            flush()
        else:
            buf.append(c)
        i += 1
    flush()
    return attrs


def certificate_names(auth_context: Mapping[str, Iterable[bytes | str]]) -> tuple[list[str], list[str], list[str]]:
    """(common names, organisations, DNS SANs) of the peer certificate in a gRPC auth context."""
    subjects = _texts(auth_context.get("x509_subject"))
    if subjects:
        attrs = subject_attributes(subjects[0])
        common = [v for k, v in attrs if k == "CN"]
        orgs = [v for k, v in attrs if k == "O"]
    else:  # an older gRPC without the subject property: the CN only (no organisation: kubelet mode refuses)
        common, orgs = _texts(auth_context.get("x509_common_name")), []
    # peer_dns holds only the DNS SANs (x509_subject_alternative_name mixes in IP, URI and email SANs)
    dns = _texts(auth_context.get("peer_dns"))
    return common, orgs, dns


def describe(auth_context: Mapping[str, Iterable[bytes | str]]) -> str:
    """The peer certificate's subject for log lines, bounded; '(no certificate)' without one."""
    subjects = _texts(auth_context.get("x509_subject")) or _texts(auth_context.get("x509_common_name"))
    return repr(subjects[0][:200]) if subjects else "(no certificate)"


def certificate_node(auth_context: Mapping[str, Iterable[bytes | str]], *, mode: NodeIdentity) -> Verdict:
    """The one node a client certificate names under `mode`, or why it names none."""
    common, orgs, dns = certificate_names(auth_context)
    if not common:
        return Verdict(None, "the client certificate has no common name")
    if len(common) > 1:
        return Verdict(None, f"the client certificate has {len(common)} common names; it must name exactly one node")
    cn = common[0]
    if MANAGERS_GROUP in orgs or cn.startswith(MANAGER_USER_PREFIX):
        return Verdict(None, f"the client certificate {cn[:120]!r} is a manager's peer certificate, not an agent's")
    if mode is NodeIdentity.KUBELET:
        if not cn.startswith(NODE_USER_PREFIX):
            return Verdict(None, f"the client certificate's CN {cn[:120]!r} is not system:node:<node name> "
                                 "(--node-identity=kubelet)")
        if NODES_GROUP not in orgs:
            return Verdict(None, f"the client certificate of {cn[:120]!r} lacks O={NODES_GROUP} "
                                 "(--node-identity=kubelet)")
        node = cn.removeprefix(NODE_USER_PREFIX)
    else:
        if cn.startswith(SYSTEM_PREFIX) or any(o.startswith(SYSTEM_PREFIX) for o in orgs):
            return Verdict(None, f"the client certificate {cn[:120]!r} carries a Kubernetes system: name; "
                                 "--node-identity=cn accepts only plain CN=<node> certificates of a CA dedicated "
                                 "to agents")
        node = cn
    problem = node_name_problem(node)
    if problem is not None:
        return Verdict(None, f"the client certificate names no valid node: {problem}")
    others = sorted({d for d in dns if d != node})
    if others:
        shown = ", ".join(o[:80] for o in others[:5])
        return Verdict(None, f"the client certificate names other nodes too (DNS SANs {shown}); "
                             "it must name exactly one node")
    return Verdict(node)


@dataclass(frozen=True, slots=True)
class PeerVerdict:
    """The manager identity a peer certificate names, or why it names none."""

    identity: str | None
    problem: str | None = None


def certificate_peer(auth_context: Mapping[str, Iterable[bytes | str]]) -> PeerVerdict:
    """The standby manager a client certificate names (CN=edge.k8s.io:manager:<id>, O=edge.k8s.io:managers).

    An agent's certificate (system:node:, O=system:nodes) is never a peer's, whatever else it says.
    """
    common, orgs, _ = certificate_names(auth_context)
    if len(common) != 1:
        return PeerVerdict(None, f"the client certificate has {len(common)} common names; a manager's names one")
    cn = common[0]
    if cn.startswith(SYSTEM_PREFIX) or any(o.startswith(SYSTEM_PREFIX) for o in orgs):
        return PeerVerdict(None, f"the client certificate {cn[:120]!r} is an agent's or a Kubernetes user's, "
                                 "not a manager's")
    if not cn.startswith(MANAGER_USER_PREFIX) or MANAGERS_GROUP not in orgs:
        return PeerVerdict(None, f"the client certificate {cn[:120]!r} is not a manager's "
                                 f"(CN={MANAGER_USER_PREFIX}<identity>, O={MANAGERS_GROUP})")
    identity = cn.removeprefix(MANAGER_USER_PREFIX)
    if not identity:
        return PeerVerdict(None, "the client certificate names no manager identity")
    return PeerVerdict(identity)
