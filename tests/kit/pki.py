"""Certificates for tests (openssl CLI): a CA, a server certificate for 127.0.0.1, client certificates by name."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1, and client certificates by name."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path

    def client(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of a client certificate by name (CLIENTS)."""
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"

    def credentials(self, client: str | None) -> grpc.ChannelCredentials:
        """gRPC channel credentials trusting this CA, with a client certificate unless client is None."""
        if client is None:
            return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes())
        cert, key = self.client(client)
        return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes(), private_key=key.read_bytes(),
                                            certificate_chain=cert.read_bytes())


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def issue(d: Path, name: str, subject: str, ext: str) -> None:
    """<name>.crt and <name>.key for `subject`, signed by ca.crt/ca.key in `d`, with extensions `ext`."""
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
    (d / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)


CLIENTS = {
    # kubelet's convention (the default --node-identity=kubelet): CN=system:node:<node>, O=system:nodes
    "edge01": ("/CN=system:node:edge01/O=system:nodes", ""),
    "stranger": ("/CN=system:node:stranger/O=system:nodes", ""),
    # what --node-identity=cn accepts (a CA dedicated to agents): CN=<node>
    "plain-edge02": ("/CN=edge02", ""),
    # certificates that name no single node
    "no-org-edge01": ("/CN=system:node:edge01", ""),
    "alice-masters": ("/CN=alice/O=system:masters", ""),
    "san-edges": ("/CN=some-agent", "subjectAltName=DNS:edge10,DNS:edge11,DNS:edge12\n"),
    "kubelet-san-edges": ("/CN=system:node:edge10/O=system:nodes", "subjectAltName=DNS:edge10,DNS:edge11,DNS:edge12\n"),
    "two-cns": ("/CN=system:node:edge01/CN=system:node:edge02/O=system:nodes", ""),
}


def make_pki(d: Path, *, ca_name: str = "k8s-edge test CA") -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and the CLIENTS certificates, in `d`."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "2", "-subj", f"/CN={ca_name}", cwd=d)
    issue(d, "server", "/CN=edge-manager",
           "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    for name, (subject, san) in CLIENTS.items():
        issue(d, name, subject, san + "extendedKeyUsage=clientAuth\n")
    return Pki(d, d / "ca.crt", d / "server.crt", d / "server.key")
