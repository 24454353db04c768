"""Joined agents for the agent tests: the real edge-manager with joining on, its CA Secret, bootstrap tokens.

Tests only. The CA, the Secrets and the manager's flags come from tests/kit/joining.py; this adds what an agent needs: the join address, the CA
hash an operator pins, token files, and the agent's flags.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography import x509

from agent.pki import ca_cert_hash
from tests.kit.joining import CA_NAME, CA_NAMESPACE, make_join_pki, put_ca_secret, put_token
from tests.kit.manager import ManagerProcess
from tests.kit.processes import free_port


class JoinSetup:
    """A manager that joins agents, restartable on the same ports, and the kit to join it."""

    def __init__(self, tmp: Path, cp: Any, *, namespace: str, extra: list[str] = ()) -> None:
        self.tmp, self.cp = tmp, cp
        self.pki = make_join_pki(tmp / "join-pki")
        put_ca_secret(cp, self.pki)
        self.ca_hash = ca_cert_hash(x509.load_pem_x509_certificate(self.pki.ca_cert))
        self.join_address = f"127.0.0.1:{free_port()}"
        self.manager = ManagerProcess(
            kubeconfig=cp.kubeconfig, data_dir=tmp / "manager-data", log_path=tmp / "manager.log",
            namespace=namespace, sync_address=f"127.0.0.1:{free_port()}", insecure=False, args=[
                "--heartbeat-interval", "1s", "--tls-cert-file", str(self.pki.server_cert),
                "--tls-private-key-file", str(self.pki.server_key),
                "--agent-ca-secret", f"{CA_NAMESPACE}/{CA_NAME}", "--join-server", self.join_address, *extra])
        self._tokens = 0

    def start(self) -> JoinSetup:
        self.manager.start().wait_ready()
        return self

    def token(self, **kw: Any) -> str:
        """A bootstrap-token Secret (tests/kit/joining.put_token's options); '<id>.<secret>'."""
        return put_token(self.cp, **kw)

    def token_file(self, token: str) -> Path:
        """The token in a 0600 file, as an operator hands it to the node."""
        self._tokens += 1
        path = self.tmp / f"token-{self._tokens}"
        path.write_text(token + "\n")
        os.chmod(path, 0o600)
        return path

    def agent_args(self, token_file: Path | None = None, *, ca_hash: str | None = None,
                   join_address: str | None = None) -> list[str]:
        """edge-agent flags to join this manager (and sync with it)."""
        return ["--join-server", join_address or self.join_address,
                "--discovery-token-ca-cert-hash", ca_hash or self.ca_hash,
                *(["--token-file", str(token_file)] if token_file is not None else [])]
