"""The join listener: agents get their client certificate over HTTPS+JSON (docs/joining.md).

Owns the four endpoints (discovery, join with a bootstrap token, CSR status, renewal over
the current certificate), their checks and refusals (one WARNING line each, naming the token
id, never its secret), and the HTTPS server: stdlib http.server and ssl, the TLS handshake in
the request's thread, bounded bodies, per-request socket timeouts, a bounded number of
requests at once. Tokens are checked by bootstrap_tokens.py, requests and signing by
signing.py, the API calls and the signer live in certificates.py. Must not import grpc.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from loguru import logger

from edgecommon.addresses import Address
from edgecommon.tls import ReloadingFiles
from edgecommon.pins import ca_cert_hash
from manager.bootstrap_tokens import Token, check_token, parse_token
from manager.certificates import AlreadyExists, AutoApprover, CsrApi, CsrPhase, Signer, SignerSettings, state_of
from manager.identity import NodeIdentity, certificate_node, node_name_problem
from manager.refusals import REFUSED_LABEL, NodeRefusals
from manager.settings import Approval, JoinSettings
from manager.signing import (
    SIGNER_NAME, AgentCa, CsrProblem, certificate_subject, check_request, csr_object_name,
    lifetime_text, usages,
)
from manager.watching import WatchSettings

MAX_BODY_BYTES = 64 * 1024  # a CSR is ~1 KiB; bigger bodies are refused unread
REQUEST_TIMEOUT_SECONDS = 10.0  # each socket operation (handshake, headers, body): a slow client loses its slot
MAX_CONCURRENT_REQUESTS = 32  # beyond, new connections are closed at once
_MAX_CSR_NAME = 253


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP status and its JSON body."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: a bootstrap token (Authorization header) and/or a verified client certificate (DER)."""

    peer: str
    token: Token | None = None
    token_malformed: bool = False
    certificate: bytes | None = None


class Joining:
    """The endpoints' logic: each returns a Reply, and logs each refusal once."""

    def __init__(self, *, api: CsrApi, ca: AgentCa, settings: JoinSettings, refusals: NodeRefusals,
                 approver: AutoApprover, on_refused: Callable[[str, str], None] | None = None) -> None:
        self._api = api
        self._approver = approver
        self._on_refused = on_refused  # (node, message): a Warning Event JoinRefused on its EdgeNodes
        self._ca = ca
        self._settings = settings
        self._refusals = refusals
        self._discovery = Reply(200, {"caBundle": ca.bundle_pem.decode()})

    def discovery(self) -> Reply:
        """The CA bundle agents pin by its hash."""
        return self._discovery

    def join(self, caller: Caller, body: dict[str, Any]) -> Reply:
        """A new node's CSR, authenticated by a bootstrap token."""
        node, pem = body.get("node"), body.get("csr")
        if not isinstance(node, str) or not isinstance(pem, str):
            return self._refuse(caller, 400, 'the body must be {"node": "<name>", "csr": "<PEM>"}')
        refused = self._token_refusal(caller, node=node)
        if refused is not None:
            return refused
        assert caller.token is not None
        return self._submit(caller, node=node, pem=pem, token_id=caller.token.token_id,
                            reason="AutoApproved" if self._settings.approval is Approval.AUTO else None)

    def renew(self, caller: Caller, body: dict[str, Any]) -> Reply:
        """A joined node's CSR for a fresh key, authenticated by its current certificate."""
        node = self._certificate_node(caller)
        if isinstance(node, Reply):
            return node
        pem = body.get("csr")
        if not isinstance(pem, str):
            return self._refuse(caller, 400, 'the body must be {"csr": "<PEM>"}', node=node)
        return self._submit(caller, node=node, pem=pem, token_id=None, reason="AutoApprovedRenewal")

    def csr_status(self, caller: Caller, name: str) -> Reply:
        """Pending, Denied (with why) or Issued (with the certificate), for the requester only."""
        if caller.certificate is not None:  # who asks comes first: no CSR name is confirmed to strangers
            node = self._certificate_node(caller)
            if isinstance(node, Reply):
                return node
        else:
            refused = self._token_refusal(caller, node=None)
            if refused is not None:
                return refused
        if not name or len(name) > _MAX_CSR_NAME or not all(c.isalnum() or c in "-." for c in name):
            return Reply(404, {"error": f"no CSR {name[:80]!r}"})
        obj = self._api.get(name)
        if obj is None or (obj.get("spec") or {}).get("signerName") != SIGNER_NAME:
            return Reply(404, {"error": f"no CSR {name} of signer {SIGNER_NAME}"})
        state = state_of(obj)
        if caller.certificate is not None:
            if node != state.node:
                return self._refuse(caller, 403, f"CSR {name} is node {state.node}'s, not {node}'s", node=node)
        else:
            assert caller.token is not None  # _token_refusal let it through
            if state.token_id != caller.token.token_id:
                return self._refuse(caller, 403, f"CSR {name} was not requested with bootstrap token "
                                                 f"{caller.token.token_id}", node=state.node)
        if self._refusals.is_refused(state.node):
            return self._refuse(caller, 403, self._refused_text(state.node), node=state.node)
        if state.phase is CsrPhase.ISSUED:
            return Reply(200, {"status": "Issued", "certificate": state.certificate})
        if state.phase is CsrPhase.DENIED:
            return Reply(200, {"status": "Denied", "message": state.message})
        if state.phase is CsrPhase.FAILED:  # the contract's three states: the signer's refusal is final too
            return Reply(200, {"status": "Denied", "message": f"the signer refused it: {state.message}"})
        return Reply(200, {"status": "Pending"})

    # -- checks -------------------------------------------------------------------

    def _submit(self, caller: Caller, *, node: str, pem: str, token_id: str | None, reason: str | None) -> Reply:
        if not self._refusals.known.is_set():  # right after a start: a refused node must not slip in
            return Reply(503, {"error": "the manager has not listed EdgeNodes yet; try again"})
        if self._refusals.is_refused(node):
            return self._refuse(caller, 403, self._refused_text(node), node=node, event=True)
        try:
            csr = check_request(pem.encode(), node=node)
        except CsrProblem as exc:
            return self._refuse(caller, 400, str(exc), node=node, event=True)
        name = csr_object_name(node, csr)
        try:
            self._api.create(name, request_pem=pem.encode(), usages=usages(csr), node=node, token_id=token_id,
                             expiration_seconds=int(self._settings.certificate_seconds))
        except AlreadyExists:
            return self._refuse(caller, 409, f"replayed request: this key was already submitted as CSR {name}",
                                node=node, event=True)
        outcome = "waiting for kubectl certificate approve"
        if reason is not None:
            how = f"bootstrap token {token_id}" if token_id else "its current certificate"
            approved = self._approver.approve(name, reason=reason, message=f"node {node} asked with {how}")
            outcome = "approved" if approved else "approval retried"
        logger.info("CSR {} created for node {} ({}; {})", name, node,
                    f"bootstrap token {token_id}" if token_id else "renewal", outcome)
        return Reply(202, {"name": name})

    def _token_refusal(self, caller: Caller, *, node: str | None) -> Reply | None:
        """None when the caller's bootstrap token is valid (for `node` when given); else the refusal."""
        if caller.token is None:
            what = "malformed bootstrap token (want <6 [a-z0-9]>.<16 [a-z0-9]>)" if caller.token_malformed \
                else "no bootstrap token (Authorization: Bearer <token-id>.<token-secret>)"
            return self._refuse(caller, 401, what, node=node)
        verdict = check_token(caller.token, self._api.token_secret(caller.token.secret_name),
                              now=datetime.now(UTC), node=node)
        if verdict.refusal is not None:  # a 403 is a token whose secret matched: worth an Event on the node
            return self._refuse(caller, verdict.refusal.status, verdict.message, node=node,
                                event=verdict.refusal.status == 403)
        return None

    def _certificate_node(self, caller: Caller) -> str | Reply:
        """The node the caller's verified client certificate names (kubelet's rule), or the refusal."""
        if caller.certificate is None:
            return self._refuse(caller, 401, "renewal needs the node's current client certificate")
        subject, dns = certificate_subject(caller.certificate)
        verdict = certificate_node({"x509_subject": [subject], "peer_dns": dns}, mode=NodeIdentity.KUBELET)
        if verdict.node is None:
            return self._refuse(caller, 403, verdict.problem or "the client certificate names no node")
        return verdict.node

    @staticmethod
    def _refused_text(node: str) -> str:
        return f"node {node} is refused (its EdgeNode has the label {REFUSED_LABEL}=true)"

    def _refuse(self, caller: Caller, status: int, message: str, *, node: str | None = None,
                event: bool = False) -> Reply:
        """One WARNING line; with event (authenticated callers only, so strangers cannot write Events), a
        JoinRefused Event on the node's EdgeNodes too."""
        host = caller.peer.rpartition(":")[0] or caller.peer
        logger.warning("join request from {} refused ({}){}: {}", host, status,
                       f" for node {node[:80]}" if node else "", message)
        if event and node and self._on_refused is not None and node_name_problem(node) is None:
            self._on_refused(node, f"join refused ({status}): {message}")
        return Reply(status, {"error": message})


# -- the HTTPS server ---------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _JoinHttpServer
    server_version = "edge-manager-join"
    sys_version = ""

    def setup(self) -> None:
        self.request.settimeout(REQUEST_TIMEOUT_SECONDS)
        self.request.do_handshake()  # here, in this request's thread: a slow handshake holds only its own slot
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = urlsplit(self.path).path
        if path == "/v1/discovery":
            self._answer(self.server.joining.discovery)
        elif path.startswith("/v1/csr/"):
            name = path.removeprefix("/v1/csr/")
            self._answer(lambda: self.server.joining.csr_status(self._caller(), name))
        else:
            self._send(Reply(404, {"error": f"no such endpoint: GET {path[:80]}"}))

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        endpoint = {"/v1/join": self.server.joining.join, "/v1/renew": self.server.joining.renew}.get(path)
        if endpoint is None:
            self._send(Reply(404, {"error": f"no such endpoint: POST {path[:80]}"}))
            return
        body = self._body()
        if isinstance(body, Reply):
            self._send(body)
            return
        self._answer(lambda: endpoint(self._caller(), body))

    def _body(self) -> dict[str, Any] | Reply:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return Reply(411, {"error": "a Content-Length is required"})
        if int(length) > MAX_BODY_BYTES:
            return Reply(413, {"error": f"the body is {length} bytes; at most {MAX_BODY_BYTES} are read"})
        try:
            body = json.loads(self.rfile.read(int(length)))
        except (ValueError, UnicodeDecodeError):
            return Reply(400, {"error": "the body is not JSON"})
        return body if isinstance(body, dict) else Reply(400, {"error": "the body is not a JSON object"})

    def _caller(self) -> Caller:
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        cert = self.request.getpeercert(binary_form=True)  # verified against the agent CA when present
        auth = self.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        token = parse_token(value) if scheme.lower() == "bearer" else None
        return Caller(peer, token=token, token_malformed=bool(auth) and token is None, certificate=cert or None)

    def _answer(self, call: Any) -> None:
        try:
            reply = call()
        except Exception as exc:  # the API failed us: the agent retries; say why once here
            why = " ".join(str(getattr(exc, "reason", None) or exc).split())[:300]
            logger.warning("join request {} {} failed: {}", self.command, urlsplit(self.path).path[:80], why)
            reply = Reply(503, {"error": f"the manager cannot serve this now: {why}"})
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        logger.debug("join server: {} {}", self.address_string(), format % args)


class _JoinHttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer over TLS with at most MAX_CONCURRENT_REQUESTS requests at once."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: Address, *, tls: ReloadingFiles[ssl.SSLContext], joining: Joining) -> None:
        self.address_family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        self.tls = tls  # the serving certificate, read again when its files change (as the sync service does)
        self.joining = joining
        self.busy = 0  # connections closed at once because every slot was taken, since start
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_REQUESTS)
        super().__init__((address.bind_host(), address.port), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        self.tls.reload_if_changed()
        return self.tls.current.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.busy += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]  # a failed handshake or a client gone: its own problem, not a traceback
        logger.debug("join server: connection from {} ended: {}", client_address[0], exc)


def server_context(settings: JoinSettings, ca: AgentCa) -> ssl.SSLContext:
    """TLS of the join listener: the sync server's certificate; client certificates optional, of the agent CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.cert_file, settings.key_file)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # renewals present the current certificate; joins have none yet
    ctx.load_verify_locations(cadata=ca.certificate_pem.decode())
    return ctx


class JoinService:
    """The join listener and the signer, each in its own thread."""

    def __init__(self, *, api: CsrApi, ca: AgentCa, settings: JoinSettings, refusals: NodeRefusals,
                 on_refused: Callable[[str, str], None] | None = None,
                 watch_settings: WatchSettings = WatchSettings()) -> None:
        self.settings = settings
        self.signer = Signer(api=api, ca=ca, settings=SignerSettings(certificate_seconds=settings.certificate_seconds),
                             watch_settings=watch_settings)
        self._ca = ca
        self.approver = AutoApprover(api)
        self._joining = Joining(api=api, ca=ca, settings=settings, refusals=refusals, approver=self.approver,
                                on_refused=on_refused)
        self._http: _JoinHttpServer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = 0

    def start(self) -> None:
        """Bind (OSError when the address cannot be), then serve and sign in threads."""
        files = [self.settings.cert_file, self.settings.key_file]
        tls = ReloadingFiles(files, key_file=self.settings.key_file,
                             load=lambda: server_context(self.settings, self._ca))
        self._http = _JoinHttpServer(self.settings.address, tls=tls, joining=self._joining)
        self.port = self._http.server_address[1]
        for name, target in (("join-server", self._http.serve_forever),
                             ("csr-signer", lambda: self.signer.run(self._stop)),
                             ("csr-retry", self._retry_forever)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        host = self.settings.address.bind_host()
        logger.info("join server at {}:{} (HTTPS; approval {}; certificates for {})",
                    host, self.port, self.settings.approval.value, lifetime_text(self.settings.certificate_seconds))
        logger.info("agents join with --discovery-token-ca-cert-hash {}", ca_cert_hash(self._ca.certificate))

    def _retry_forever(self) -> None:
        """Approvals and signings the API refused, each retried when its backoff has passed."""
        while not self._stop.wait(min(d for d in (1.0, self.signer.retries.next_due(),
                                                  self.approver.retries.next_due()) if d is not None)):
            self.approver.retry_due()
            self.signer.retry_due()

    def stop(self) -> None:
        """Stop serving and signing."""
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

