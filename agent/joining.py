"""Joining a manager with a bootstrap token, kubeadm's way: discovery pinned by the CA hash, a CSR, polling, the pki.

Owns the agent's half of the join API (docs/joining.md): HTTPS+JSON with the standard
library, discovery WITHOUT verification whose CA bundle is trusted only when it hashes to a
pinned value, then every request verified with that bundle (hostname or IP checked as usual).
Nothing is written before a certificate is issued (agent.pki writes it whole). Raises
JoinError with one line the daemon prints as `edge-agent: error: ...`. Must not import manager or grpc.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from loguru import logger

from agent.join_settings import TOKEN_RE, TOKEN_SHAPE, JoinSettings
from agent.pki import (
    AGENT_FILE,
    CA_FILE,
    Identity,
    PkiError,
    agent_pem,
    ca_cert_hash,
    certificate_request,
    check_certificate,
    new_key,
    parse_certificates,
    pki_dir,
    read_identity,
    remove_staging,
    write_identity,
)

T = TypeVar("T")
POLL_SECONDS = 1.0  # how often a pending request is asked about
REQUEST_TIMEOUT = 10.0  # one HTTPS request, connecting included
MAX_RESPONSE_BYTES = 1 << 20  # a certificate chain or an error line: far less
RETRY_MAX_SECONDS = 10.0  # between attempts at an unreachable manager


class JoinError(Exception):
    """Joining or renewing failed; the message is one line for the user."""


class Unreachable(JoinError):
    """The manager could not be reached (connect failed or the answer was lost): worth another try."""


class Refused(JoinError):
    """The manager answered with a refusal (4xx) and its one-line reason."""

    def __init__(self, status: int, reason: str, *, where: str) -> None:
        super().__init__(f"the manager at {where} refused (HTTP {status}): {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class CsrStatus:
    """What GET /v1/csr/<name> said."""

    status: str  # Pending | Denied | Issued
    message: str = ""
    certificate: bytes = b""


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit] + "..."


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class JoinApi:
    """The manager's join endpoints over HTTPS; trusted only after discovery matched a pinned hash."""

    def __init__(self, settings: JoinSettings, *, bundle_pem: bytes | None = None,
                 client_pem: Path | None = None) -> None:
        self.settings = settings
        self.bundle_pem = bundle_pem
        self._context = None if bundle_pem is None else self._verified(bundle_pem, client_pem)

    @staticmethod
    def _verified(bundle_pem: bytes, client_pem: Path | None) -> ssl.SSLContext:
        ctx = _client_context()  # check_hostname and CERT_REQUIRED: the name or IP given must be in the certificate
        ctx.load_verify_locations(cadata=bundle_pem.decode("ascii", errors="replace"))
        if client_pem is not None:
            ctx.load_cert_chain(client_pem)  # certificate and key in one file
        return ctx

    def discover(self) -> bytes:
        """GET /v1/discovery unverified; the CA bundle, only if one of its CAs hashes to a pinned value."""
        unverified = _client_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE  # nothing to verify with yet: the pinned hash is the trust
        body = self._call("GET", "/v1/discovery", context=unverified)
        bundle = body.get("caBundle")
        if not isinstance(bundle, str) or not bundle.strip():
            raise JoinError(f"the manager at {self.settings.address} sent no caBundle in its discovery answer")
        pem = bundle.encode()
        try:
            cas = parse_certificates(pem, what="the discovered caBundle")
        except PkiError as exc:
            raise JoinError(f"the manager at {self.settings.address}: {exc}") from None
        hashes = [ca_cert_hash(ca) for ca in cas]
        if not set(hashes) & set(self.settings.ca_cert_hashes):
            raise JoinError(f"the manager at {self.settings.address} is not the one expected: its CA hashes to "
                            f"{', '.join(hashes)}, not {', '.join(self.settings.ca_cert_hashes)}")
        self.bundle_pem = pem
        self._context = self._verified(pem, None)
        return pem

    def submit(self, *, token: str | None, body: dict[str, str]) -> str:
        """POST /v1/join (with a token) or /v1/renew (with the client certificate); the CSR object's name."""
        path = "/v1/join" if token is not None else "/v1/renew"
        answer = self._call("POST", path, token=token, body=body, retry_after_send=False)
        name = answer.get("name")
        if not isinstance(name, str) or not name:
            raise JoinError(f"the manager at {self.settings.address} accepted the request but named no CSR")
        return name

    def status(self, name: str, *, token: str | None) -> CsrStatus:
        """GET /v1/csr/<name>."""
        answer = self._call("GET", f"/v1/csr/{urllib.parse.quote(name, safe='')}", token=token)
        status = answer.get("status")
        if status not in ("Pending", "Denied", "Issued"):
            raise JoinError(f"the manager at {self.settings.address} answered status {status!r} for {name}")
        cert = answer.get("certificate") if status == "Issued" else ""
        if status == "Issued" and (not isinstance(cert, str) or not cert.strip()):
            raise JoinError(f"the manager at {self.settings.address} issued {name} without a certificate")
        return CsrStatus(status=status, message=_one_line(answer.get("message") or ""),
                         certificate=(cert or "").encode())

    def _call(self, method: str, path: str, *, context: ssl.SSLContext | None = None, token: str | None = None,
              body: dict[str, str] | None = None, retry_after_send: bool = True) -> dict[str, object]:
        """One request; Unreachable when it may be tried again, Refused for an error answer."""
        ctx = context or self._context
        assert ctx is not None, "discover() first"
        conn = http.client.HTTPSConnection(self.settings.host, self.settings.port, context=ctx, timeout=REQUEST_TIMEOUT)
        where = self.settings.address
        try:
            try:
                conn.connect()
            except ssl.SSLCertVerificationError as exc:
                raise JoinError(f"the manager at {where} failed TLS verification with the discovered CA: "
                                f"{_one_line(exc.verify_message or exc)}") from None
            except (OSError, ssl.SSLError) as exc:
                raise Unreachable(f"cannot reach the manager at {where}: {_one_line(exc.strerror or exc)}") from None
            headers = {"Accept": "application/json"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read(MAX_RESPONSE_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                why = f"the connection to the manager at {where} broke: {_one_line(str(exc) or type(exc).__name__)}"
                raise (Unreachable(why) if retry_after_send else JoinError(why)) from None
        finally:
            conn.close()
        if len(raw) > MAX_RESPONSE_BYTES:
            raise JoinError(f"the manager at {where} sent more than {MAX_RESPONSE_BYTES} bytes for {path}")
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = None
        if resp.status >= 400:
            reason = answer.get("error") if isinstance(answer, dict) else None
            why = _one_line(reason if isinstance(reason, str) and reason else resp.reason)
            if resp.status >= 500:  # the manager cannot serve now (its API is away): answered, so safe to try again
                raise Unreachable(f"the manager at {where} cannot serve {path} now (HTTP {resp.status}): {why}")
            raise Refused(resp.status, why, where=where)
        if not isinstance(answer, dict):
            raise JoinError(f"the manager at {where} answered {path} with something other than a JSON object")
        return answer


def read_token(settings: JoinSettings) -> str:
    """The bootstrap token from --token or --token-file; JoinError naming the file, never showing its content."""
    if settings.token is not None:
        logger.warning("--token is visible to other users of this host (ps); --token-file is safer")
        return settings.token
    if settings.token_file is None:
        raise JoinError("no usable certificate yet and no --token-file to join with: give the bootstrap token "
                        "(kubeadm token create, or docs/joining.md)")
    try:
        text = settings.token_file.read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise JoinError(f"--token-file {settings.token_file}: {exc.strerror or exc}") from None
    if not TOKEN_RE.fullmatch(text):
        raise JoinError(f"--token-file {settings.token_file}: not a bootstrap token: expected {TOKEN_SHAPE}")
    return text


def retrying(attempt: Callable[[], T], *, deadline: float, what: str, quiet: bool = False) -> T:
    """attempt() again while the manager is unreachable, until the monotonic deadline; then its last error.

    Each distinct error is a warning, or a debug line when `quiet` (a renewal: its caller logs the outcome).
    """
    delay = 1.0
    said = ""
    while True:
        try:
            return attempt()
        except Unreachable as exc:
            if time.monotonic() + delay > deadline:
                raise Unreachable(f"{exc} (gave up {what} after --join-timeout)") from None
            if str(exc) != said:  # one line per distinct error
                logger.log("DEBUG" if quiet else "WARNING", "{}; retrying until --join-timeout", exc)
                said = str(exc)
        time.sleep(delay)
        delay = min(RETRY_MAX_SECONDS, delay * 2)


def wait_issued(api: JoinApi, name: str, *, token: str | None, deadline: float, quiet: bool = False) -> bytes:
    """Poll the request every second until issued; JoinError when denied or past the deadline."""
    said_pending = False
    while True:
        st = retrying(lambda: api.status(name, token=token), deadline=deadline, what=f"waiting for {name}",
                      quiet=quiet)
        if st.status == "Issued":
            return st.certificate
        if st.status == "Denied":
            raise JoinError(f"certificate request {name} was denied" + (f": {st.message}" if st.message else ""))
        if not said_pending:
            logger.log("DEBUG" if quiet else "INFO", "certificate request {} is pending approval "
                       "(kubectl certificate approve {})", name, name)
            said_pending = True
        if time.monotonic() + POLL_SECONDS > deadline:
            raise JoinError(f"certificate request {name} was not approved within --join-timeout")
        time.sleep(POLL_SECONDS)


def request_certificate(api: JoinApi, *, node: str, token: str | None, deadline: float,
                        now: Callable[[], datetime], submitted: Callable[[], None] = lambda: None,
                        ) -> tuple[bytes, Identity]:
    """A fresh key and CSR, submitted and waited for; (agent.pem content, identity). Nothing is written."""
    key = new_key()
    body = {"csr": certificate_request(key, node).decode()}
    if token is not None:
        body["node"] = node
    quiet = token is None  # a renewal: the renewer logs each distinct failure once
    name = retrying(lambda: api.submit(token=token, body=body), deadline=deadline, what="submitting the request",
                    quiet=quiet)
    submitted()  # a test's fault point: the manager holds the request, the edge holds nothing yet
    issued = wait_issued(api, name, token=token, deadline=deadline, quiet=quiet)
    assert api.bundle_pem is not None
    bundle = parse_certificates(api.bundle_pem, what=CA_FILE)
    try:
        certs = parse_certificates(issued, what=f"the certificate issued for {name}")
        identity = check_certificate(certs[0], public_key=key.public_key(), node=node, bundle=bundle, now=now(),
                                     what=f"the certificate issued for {name}")
        pem = agent_pem(issued, key)
    except PkiError as exc:
        raise JoinError(str(exc)) from None
    return pem, identity


def _now() -> datetime:
    return datetime.now(UTC)


def join(settings: JoinSettings, *, node: str, data_dir: Path, now: Callable[[], datetime] = _now,
         submitted: Callable[[], None] = lambda: None) -> Identity:
    """Discovery, join, wait for the certificate, then write <data-dir>/pki whole; the identity stored."""
    deadline = time.monotonic() + settings.timeout
    token = read_token(settings)
    logger.info("joining the manager at {} as node {} with bootstrap token {}", settings.address, node,
                token.split(".")[0])  # the token id only: the secret is never logged
    api = JoinApi(settings)
    bundle_pem = retrying(api.discover, deadline=deadline, what="discovery")
    logger.info("the manager at {} has the expected CA ({})", settings.address, ", ".join(settings.ca_cert_hashes))
    pem, identity = request_certificate(api, node=node, token=token, deadline=deadline, now=now, submitted=submitted)
    try:
        write_identity(data_dir, bundle_pem=bundle_pem, pem=pem)
    except OSError as exc:
        raise JoinError(f"cannot store the certificate in {pki_dir(data_dir)}: {exc.strerror or exc}") from None
    logger.info("joined: certificate for node {} valid until {}, stored in {}", node,
                identity.not_after.isoformat(), pki_dir(data_dir))
    return identity


def stored_identity(settings: JoinSettings, *, node: str, data_dir: Path,
                    now: Callable[[], datetime] = _now) -> Identity | None:
    """The usable identity in <data-dir>/pki (restarts need no token), or None: joining is needed."""
    remove_staging(data_dir)
    try:
        identity = read_identity(data_dir, node=node, now=now(), pins=settings.ca_cert_hashes)
    except PkiError as exc:
        logger.warning("{}: joining again", exc)
        return None
    if identity is not None:
        logger.info("using the certificate in {} (node {}, valid until {}); no token needed",
                    pki_dir(data_dir), node, identity.not_after.isoformat())
    return identity


def renew(settings: JoinSettings, *, node: str, data_dir: Path, deadline: float,
          now: Callable[[], datetime] = _now) -> tuple[bytes, Identity]:
    """A new key and certificate over the current identity (POST /v1/renew); (agent.pem content, identity)."""
    d = pki_dir(data_dir)
    try:
        bundle_pem = (d / CA_FILE).read_bytes()
        api = JoinApi(settings, bundle_pem=bundle_pem, client_pem=d / AGENT_FILE)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError; an empty CA file is a ValueError
        why = _one_line(getattr(exc, "strerror", None) or exc)
        raise JoinError(f"cannot load the current identity in {d}: {why}") from None
    return request_certificate(api, node=node, token=None, deadline=deadline, now=now)
