"""Agents' CertificateSigningRequests in the Kubernetes API, and the signer of `edge.k8s.io/agent`.

Owns every call to `certificates.k8s.io/v1` and the read of the Secrets joining needs (the
agent CA, bootstrap tokens), through the client objects main.py builds (typed here by the
methods used, as kubeapi.py types the others). The signer
is the watch loop of watching.py over CSRs of our signerName: an Approved request not yet
issued is checked again and signed, or marked Failed with the reason. Must not import grpc.
"""

from __future__ import annotations

import base64
import enum
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException
from loguru import logger

from manager.bootstrap_tokens import NAMESPACE as TOKEN_NAMESPACE
from manager.retrying import Backoff, RetryQueue
from manager.signing import SIGNER_NAME, AgentCa, CsrProblem, check_request, lifetime_text, sign
from manager.watching import Changed, Listed, ListFn, WatchSettings, WatchStats, watch_forever

NODE_ANNOTATION = "edge.k8s.io/node"
TOKEN_ANNOTATION = "edge.k8s.io/token-id"
MIN_EXPIRATION_SECONDS = 600  # the API server's floor for spec.expirationSeconds
_TIMEOUT = (5, 15)


class CsrPhase(enum.Enum):
    """Where a request stands, as GET /v1/csr/<name> reports it."""

    PENDING = "Pending"
    DENIED = "Denied"
    FAILED = "Failed"
    ISSUED = "Issued"


@dataclass(frozen=True, slots=True)
class CsrState:
    """A request's phase, its message (Denied, Failed) or certificate (Issued), and who asked for it."""

    phase: CsrPhase
    node: str
    token_id: str | None
    message: str = ""
    certificate: str = ""


class AlreadyExists(Exception):
    """A CSR object of that name exists: the same key was submitted before."""


class SecretUnreadable(Exception):
    """A Secret the manager needs cannot be read: one line saying why."""


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status", "True") == "True":
            return c
    return None


def state_of(obj: Mapping[str, Any]) -> CsrState:
    """The phase of a CSR object (the API's dict)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    node, token_id = annotations.get(NODE_ANNOTATION, ""), annotations.get(TOKEN_ANNOTATION)
    for kind, phase in (("Denied", CsrPhase.DENIED), ("Failed", CsrPhase.FAILED)):
        c = _condition(obj, kind)
        if c is not None:
            return CsrState(phase, node, token_id, message=c.get("message") or c.get("reason") or kind)
    cert = (obj.get("status") or {}).get("certificate")
    if cert and _condition(obj, "Approved") is not None:
        return CsrState(CsrPhase.ISSUED, node, token_id, certificate=base64.b64decode(cert).decode())
    return CsrState(CsrPhase.PENDING, node, token_id)


class CertificatesApi(Protocol):
    """What joining calls of kubernetes.client.CertificatesV1Api (raw JSON: _preload_content=False)."""

    def create_certificate_signing_request(self, body: Any, **kwargs: Any) -> Any: ...

    def read_certificate_signing_request(self, name: str, **kwargs: Any) -> Any: ...

    def replace_certificate_signing_request_approval(self, name: str, body: Any, **kwargs: Any) -> Any: ...

    def replace_certificate_signing_request_status(self, name: str, body: Any, **kwargs: Any) -> Any: ...

    @property
    def list_certificate_signing_request(self) -> ListFn: ...


class SecretsApi(Protocol):
    """What joining calls of kubernetes.client.CoreV1Api: one Secret by name."""

    def read_namespaced_secret(self, name: str, namespace: str, **kwargs: Any) -> Any: ...


class CsrApi:
    """The manager's calls on CertificateSigningRequests and on the Secrets joining reads."""

    def __init__(self, *, certificates: CertificatesApi, core: SecretsApi) -> None:
        self._certs = certificates
        self._core = core

    def create(self, name: str, *, request_pem: bytes, usages: list[str], expiration_seconds: int,
               node: str, token_id: str | None) -> None:
        """Create the CSR object; AlreadyExists when that name (that key) was submitted before."""
        annotations = {NODE_ANNOTATION: node}
        if token_id is not None:
            annotations[TOKEN_ANNOTATION] = token_id
        body = {
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"request": base64.b64encode(request_pem).decode(), "signerName": SIGNER_NAME,
                     "usages": usages, "expirationSeconds": max(MIN_EXPIRATION_SECONDS, expiration_seconds)},
        }
        try:
            self._certs.create_certificate_signing_request(body, _preload_content=False, _request_timeout=_TIMEOUT)
        except ApiException as exc:
            if exc.status == 409:
                raise AlreadyExists(name) from None
            raise

    def get(self, name: str) -> dict[str, Any] | None:
        """The CSR object, None when there is none."""
        return _read_or_none(self._certs.read_certificate_signing_request, name)

    def approve(self, name: str, *, reason: str, message: str) -> None:
        """Add the Approved condition through the approval subresource (as `kubectl certificate approve`)."""
        obj = self.get(name)
        if obj is None:
            raise LookupError(f"CSR {name} vanished before its approval")
        if _condition(obj, "Approved") is not None or _condition(obj, "Denied") is not None:
            return  # decided meanwhile (a retry after a lost answer, or a human): nothing to add
        self._add_condition(obj, "Approved", reason, message)
        self._certs.replace_certificate_signing_request_approval(name, obj, _preload_content=False,
                                                                 _request_timeout=_TIMEOUT)

    def issue(self, obj: dict[str, Any], certificate_pem: bytes) -> None:
        """Write status.certificate through the status subresource (a conflict is retried by the next event)."""
        obj.setdefault("status", {})["certificate"] = base64.b64encode(certificate_pem).decode()
        self._certs.replace_certificate_signing_request_status(obj["metadata"]["name"], obj, _preload_content=False,
                                                               _request_timeout=_TIMEOUT)

    def fail(self, obj: dict[str, Any], *, reason: str, message: str) -> None:
        """Mark a request the signer refuses as Failed, with why."""
        self._add_condition(obj, "Failed", reason, message)
        self._certs.replace_certificate_signing_request_status(obj["metadata"]["name"], obj, _preload_content=False,
                                                               _request_timeout=_TIMEOUT)

    @staticmethod
    def _add_condition(obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        obj.setdefault("status", {}).setdefault("conditions", []).append(
            {"type": kind, "status": "True", "reason": reason, "message": message,
             "lastUpdateTime": now, "lastTransitionTime": now})

    def list_csrs(self, **kwargs: Any) -> Any:
        """The watch loop's list function: CSRs of our signer only."""
        return self._certs.list_certificate_signing_request(**kwargs)

    def token_secret(self, name: str) -> dict[str, Any] | None:
        """A bootstrap-token Secret of kube-system, None when there is none."""
        return self._secret(TOKEN_NAMESPACE, name)

    def tls_secret(self, namespace: str, name: str) -> tuple[bytes, bytes]:
        """(tls.crt, tls.key) of a kubernetes.io/tls Secret; SecretUnreadable naming what is wrong."""
        try:
            secret = self._secret(namespace, name)
        except ApiException as exc:
            raise SecretUnreadable(f"cannot read Secret {namespace}/{name}: HTTP {exc.status} "
                                   f"{' '.join(str(exc.reason).split())}") from None
        if secret is None:
            raise SecretUnreadable(f"no Secret {namespace}/{name}")
        data = secret.get("data") or {}
        missing = [k for k in ("tls.crt", "tls.key") if not data.get(k)]
        if missing:
            raise SecretUnreadable(f"Secret {namespace}/{name} has no {' or '.join(missing)}")
        return base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])

    def _secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _read_or_none(self._core.read_namespaced_secret, name, namespace)


def _read_or_none(read: Callable[..., Any], *args: str) -> dict[str, Any] | None:
    """The object a read_* call returns, as the API's dict; None on 404."""
    try:
        resp = read(*args, _preload_content=False, _request_timeout=_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return json.loads(resp.data)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignerSettings:
    """How long issued certificates live."""

    certificate_seconds: float
    """--agent-certificate-duration; a request's spec.expirationSeconds may shorten it."""


class Signer:
    """Signs Approved CSRs of `edge.k8s.io/agent` that are not issued yet, from a list+watch of them.

    A CSR whose signing fails (the API refused the status write) is retried alone with backoff,
    read afresh: a watch renewed from its resourceVersion would not show it again.
    """

    def __init__(self, *, api: CsrApi, ca: AgentCa, settings: SignerSettings,
                 watch_settings: WatchSettings = WatchSettings(),
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._api = api
        self._ca = ca
        self._settings = settings
        self._watch_settings = watch_settings
        self._now = now
        self.stats = WatchStats()
        self.issued = 0
        self.retries = RetryQueue(backoff=Backoff(max_seconds=60.0))

    def run(self, stop: threading.Event) -> None:
        """The watch loop (a thread) until `stop` is set."""
        watch_forever(self._api.list_csrs, handle=self._handle, settings=self._watch_settings, stats=self.stats,
                      stop=stop, what="agent CSRs", field_selector=f"spec.signerName={SIGNER_NAME}")

    def retry_due(self) -> None:
        """Sign again the CSRs whose backoff has passed, each read afresh."""
        for due in self.retries.take_due():
            try:
                obj = self._api.get(str(due.key))
            except Exception as exc:
                self._failed(str(due.key), exc)
                continue
            if obj is None:
                self.retries.forget(due.key)
            else:
                self._try(obj)

    def _handle(self, item: Listed | Changed) -> None:
        objects = item.objects if isinstance(item, Listed) else [] if item.type == "DELETED" else [item.object]
        for obj in objects:
            self._try(obj)

    def _try(self, obj: dict[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name"))
        try:
            self.consider(obj)
        except Exception as exc:  # one request's failure is that request's: retried alone with backoff
            self._failed(name, exc)
        else:
            self.retries.forget(name)

    def _failed(self, name: str, exc: Exception) -> None:
        delay = self.retries.failed(name, "changed", None)
        logger.warning("CSR {} not signed yet ({}); retrying in {:.1f}s", name, _why(exc), delay)


    def consider(self, obj: dict[str, Any]) -> None:
        """Sign one CSR object if it is Approved and not Denied, Failed or issued."""
        if (obj.get("spec") or {}).get("signerName") != SIGNER_NAME or _condition(obj, "Approved") is None:
            return
        if state_of(obj).phase is not CsrPhase.PENDING or (obj.get("status") or {}).get("certificate"):
            return
        name = obj["metadata"]["name"]
        spec = obj["spec"]
        node = ((obj["metadata"].get("annotations") or {}).get(NODE_ANNOTATION)) or ""
        try:
            csr = check_request(base64.b64decode(spec.get("request") or ""), node=node)
        except CsrProblem as exc:
            logger.warning("CSR {} refused by the signer: {}", name, exc)
            self._api.fail(obj, reason="SignerValidationFailure", message=str(exc))
            return
        seconds = self._settings.certificate_seconds
        if spec.get("expirationSeconds"):
            seconds = min(seconds, float(spec["expirationSeconds"]))
        pem = sign(self._ca, csr, seconds=seconds, now=self._now())
        self._api.issue(obj, pem)
        self.issued += 1
        logger.info("CSR {} issued: a certificate for node {} valid {}", name, node, lifetime_text(seconds))


class AutoApprover:
    """Approves the CSRs the join listener accepts; an approval the API refuses is retried alone with backoff.

    So a join answered 202 is approved once the API lets us, and the agent, polling, never
    has to submit its key again (that would be a replay).
    """

    def __init__(self, api: CsrApi) -> None:
        self._api = api
        self.retries = RetryQueue(backoff=Backoff(max_seconds=60.0))

    def approve(self, name: str, *, reason: str, message: str) -> bool:
        """Approve now; False when it failed and was scheduled again."""
        try:
            self._api.approve(name, reason=reason, message=message)
        except LookupError:
            self.retries.forget(name)
            logger.warning("CSR {} was deleted before its approval", name)
            return False
        except Exception as exc:
            delay = self.retries.failed(name, "changed", (reason, message))
            logger.warning("CSR {} not approved yet ({}); retrying in {:.1f}s", name, _why(exc), delay)
            return False
        self.retries.forget(name)
        return True

    def retry_due(self) -> None:
        """Approve again the CSRs whose backoff has passed."""
        for due in self.retries.take_due():
            reason, message = due.obj
            self.approve(str(due.key), reason=reason, message=message)


def _why(exc: Exception) -> str:
    """One short line for a failed API call."""
    return f"HTTP {exc.status} {exc.reason}" if isinstance(exc, ApiException) else " ".join(str(exc).split())[:300]
