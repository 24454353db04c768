"""Bootstrap tokens as kubeadm makes them: the token string, and its check against its Secret.

A token `<token-id>.<token-secret>` is valid when the Secret `kube-system/bootstrap-token-<id>`
of type `bootstrap.kubernetes.io/token` holds the same secret, has not expired, and says
`usage-bootstrap-authentication: "true"` (k8s.io/cluster-bootstrap's rules). The annotation
`edge.k8s.io/node` binds a token to one node. Pure: fed the Secret as the API's dict; imports
neither kubernetes nor grpc.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

NAMESPACE = "kube-system"
SECRET_PREFIX = "bootstrap-token-"
SECRET_TYPE = "bootstrap.kubernetes.io/token"
NODE_ANNOTATION = "edge.k8s.io/node"
_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")


class Refusal(enum.Enum):
    """Why a token is refused; the HTTP status follows the kind (401: not authenticated, 403: not allowed)."""

    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    WRONG_SECRET = "wrong secret"
    EXPIRED = "expired"
    NOT_FOR_AUTHENTICATION = "not for authentication"
    OTHER_NODE = "bound to another node"

    @property
    def status(self) -> int:
        """401 when the caller is not authenticated, 403 when the token may not do this."""
        return 403 if self in (Refusal.NOT_FOR_AUTHENTICATION, Refusal.OTHER_NODE) else 401


@dataclass(frozen=True, slots=True)
class Token:
    """A bootstrap token; its secret never shows in a repr or a log line."""

    token_id: str
    secret: str = field(repr=False)

    @property
    def secret_name(self) -> str:
        """The name of the Secret that holds it in kube-system."""
        return SECRET_PREFIX + self.token_id


@dataclass(frozen=True, slots=True)
class TokenVerdict:
    """A token accepted (refusal None), or why not in one line naming the token id only."""

    token_id: str
    refusal: Refusal | None = None
    message: str = ""


def parse_token(text: str) -> Token | None:
    """The token in '<6 [a-z0-9]>.<16 [a-z0-9]>'; None when it is not one."""
    m = _TOKEN.match(text.strip())
    return Token(m.group(1), m.group(2)) if m else None


def _data(secret: Mapping[str, Any], key: str) -> str | None:
    raw = (secret.get("data") or {}).get(key)
    if not isinstance(raw, str):
        return None
    try:
        return base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _expiry(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def check_token(token: Token, secret: Mapping[str, Any] | None, *, now: datetime, node: str | None) -> TokenVerdict:
    """Whether `secret` (the API's dict, None when absent) makes `token` valid now, for `node` when given."""
    tid = token.token_id

    def refuse(kind: Refusal, message: str) -> TokenVerdict:
        return TokenVerdict(tid, kind, message)

    if secret is None or secret.get("type") != SECRET_TYPE or _data(secret, "token-id") != tid:
        return refuse(Refusal.UNKNOWN, f"unknown bootstrap token {tid}")
    stored = _data(secret, "token-secret")
    if stored is None or not hmac.compare_digest(stored.encode(), token.secret.encode()):
        return refuse(Refusal.WRONG_SECRET, f"wrong secret for bootstrap token {tid}")
    expiration = _data(secret, "expiration")
    if expiration is not None:
        when = _expiry(expiration)
        if when is None:
            return refuse(Refusal.EXPIRED, f"bootstrap token {tid} has an unreadable expiration {expiration[:40]!r}")
        if when <= now:
            return refuse(Refusal.EXPIRED, f"bootstrap token {tid} has expired at {expiration}")
    if _data(secret, "usage-bootstrap-authentication") != "true":
        return refuse(Refusal.NOT_FOR_AUTHENTICATION,
                      f"bootstrap token {tid} is not for authentication (usage-bootstrap-authentication is not true)")
    bound = ((secret.get("metadata") or {}).get("annotations") or {}).get(NODE_ANNOTATION)
    if node is not None and bound is not None and bound != node:
        return refuse(Refusal.OTHER_NODE, f"bootstrap token {tid} is bound to node {bound}, not {node}")
    return TokenVerdict(tid)
