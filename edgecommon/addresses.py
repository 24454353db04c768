"""HOST:PORT, :PORT and [v6]:PORT: the one address syntax of both daemons' flags.

A listen address may leave the host out (every interface) and take port 0 (any free
port); an address to dial needs both. gRPC target schemes (`unix:`, `dns:`...) are
passed through for dialing. Imports nothing of the project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GRPC_SCHEMES = ("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")
_HOST_PORT = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]*):(\d{1,5})")


class AddressError(ValueError):
    """Text that is not an address; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed host and port; host '' means every interface (listen addresses only)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def bind_host(self) -> str:
        """The host to bind: every IPv4 interface for '' (as the HTTP servers did)."""
        return self.host or "0.0.0.0"


def parse_address(text: str, *, listen: bool) -> Address:
    """(host, port) of 'host:port', '[::1]:port' or, to listen, ':port' and port 0."""
    m = _HOST_PORT.fullmatch(text.strip())
    hint = "host:port or :port (port 0 picks one)" if listen else "host:port"
    if not m:
        raise AddressError(f"not an address: {text!r} (use {hint}; an IPv6 host in brackets, [::1]:port)")
    host, port = m.group(1).strip("[]"), int(m.group(2))
    if port > 65535 or (not listen and (port == 0 or not host)):
        raise AddressError(f"not an address: {text!r} (use {hint}, port {0 if listen else 1}-65535)")
    return Address(host, port)


def parse_listen_address(text: str) -> Address:
    """parse_address for a listen flag (--metrics-addr, --sync-server of the manager)."""
    return parse_address(text, listen=True)


def check_dial_target(text: str) -> str:
    """A gRPC target to dial as given: host:port, or one of gRPC's schemes (unix:/path...)."""
    if text.startswith(GRPC_SCHEMES):
        return text
    parse_address(text, listen=False)
    return text


def grpc_listen_target(text: str) -> str:
    """gRPC form of a listen address: ':50051' means every interface ([::])."""
    address = parse_address(text, listen=True)
    if not address.host:
        return f"[::]:{address.port}"
    return str(address)
