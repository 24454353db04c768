"""Who a sync peer is: node-name validation and the mTLS identity check.

Pure functions over gRPC's auth context mapping; imports neither grpc nor kubernetes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# An EdgeNode's name is a Kubernetes object name: a DNS-1123 subdomain.
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
KUBELET_CN_PREFIX = "system:node:"  # kubelet client certificates name the node this way


def node_name_problem(node: str) -> str | None:
    """Why `node` is not a valid node name; None when it is."""
    if not node:
        return "empty node name"
    if len(node) > 253 or not _NODE_NAME.match(node):
        return f"invalid node name {node[:80]!r}: must be a DNS-1123 subdomain"
    return None


def _texts(values: Iterable[bytes | str] | None) -> list[str]:
    return [v.decode(errors="replace") if isinstance(v, bytes) else v for v in values or ()]


def certificate_names(auth_context: Mapping[str, Iterable[bytes | str]]) -> tuple[list[str], list[str]]:
    """(common names, DNS SANs) of the peer certificate in a gRPC auth context."""
    common = _texts(auth_context.get("x509_common_name"))
    # peer_dns holds only the DNS SANs (x509_subject_alternative_name mixes in IP, URI and email SANs)
    dns = _texts(auth_context.get("peer_dns"))
    return common, dns


def node_permitted(node: str, auth_context: Mapping[str, Iterable[bytes | str]]) -> bool:
    """True when the peer certificate names `node`: as its CN, a DNS SAN, or CN system:node:<node>."""
    common, dns = certificate_names(auth_context)
    return node in common or node in dns or f"{KUBELET_CN_PREFIX}{node}" in common
