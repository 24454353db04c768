"""Kubernetes object names: DNS-1123 labels (namespaces) and subdomains (nodes, most objects).

The one copy of apimachinery's validation.IsDNS1123Label/IsDNS1123Subdomain both daemons
use. Imports nothing of the project.
"""

from __future__ import annotations

import re

NODE_USER_PREFIX = "system:node:"
"""A node's user name is this and its name (kubelet's client certificates: CN=system:node:<node>)."""
NODES_GROUP = "system:nodes"
"""... and its group (the certificate's O): the node-identity convention of the sync channel."""
LABEL_MAX = 63
SUBDOMAIN_MAX = 253
LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(LABEL)
_SUBDOMAIN_RE = re.compile(rf"{LABEL}(\.{LABEL})*")


def is_dns1123_label(text: str) -> bool:
    """Whether `text` is a DNS-1123 label (a namespace name): at most 63 of [a-z0-9-], alphanumeric at both ends."""
    return len(text) <= LABEL_MAX and _LABEL_RE.fullmatch(text) is not None


def is_dns1123_subdomain(text: str) -> bool:
    """Whether `text` is a DNS-1123 subdomain (a node or pod name): dot-separated labels, at most 253 characters."""
    return len(text) <= SUBDOMAIN_MAX and _SUBDOMAIN_RE.fullmatch(text) is not None
