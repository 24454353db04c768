"""Pod Security Standards for static pods: the checks of PodSecurity admission, applied by the manager.

Static pods never pass the API server's admission, so the manager evaluates each pod of an
EdgeNode against the Pod Security level of the EdgeNode's namespace, exactly as the PodSecurity
admission plugin would evaluate the same pod created as an ordinary Pod there. The shape copies
`k8s.io/pod-security-admission/policy` (v0.35.4): each check is a small pure function of a pod
returning a `CheckResult`, registered per level with the minor versions it applies from; a
restricted check may override baseline checks. Wording, order and joining of the forbidden
reasons are PodSecurity's, so a refusal reads as the API server's would:
`violates PodSecurity "baseline:latest": privileged (container "app" must not set ...), ...`.

Supported: levels privileged, baseline, restricted; versions `latest` and `v1.0`..`v1.35` with
each check's version ranges (a newer `v1.X` is evaluated as v1.35, as the API server does).
Not supported: exemptions (usernames, runtime classes, namespaces; the API server has none by
default) and the audit/warn modes (they never refuse). Pods are dicts as the API returns them;
a field of the wrong type is treated as unset here (type validation is the recorder's, before).
Must not import grpc or the kubernetes client.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
ENFORCE_VERSION_LABEL = "pod-security.kubernetes.io/enforce-version"
MAX_MINOR = 35  # newest minor any check is registered for (pod-security-admission v0.35.4)

Pod = Mapping[str, Any]


class Level(StrEnum):
    """A Pod Security Standard, least to most restrictive."""

    PRIVILEGED = "privileged"
    BASELINE = "baseline"
    RESTRICTED = "restricted"


@dataclass(frozen=True, slots=True)
class Policy:
    """An enforce level and version (minor None = latest), shown as PodSecurity shows it."""

    level: Level
    minor: int | None = None

    def __str__(self) -> str:
        return f"{self.level}:{'latest' if self.minor is None else f'v1.{self.minor}'}"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's verdict: allowed, or the forbidden reason and its detail."""

    allowed: bool
    reason: str = ""
    detail: str = ""


ALLOWED = CheckResult(True)
CheckFn = Callable[[Mapping[str, Any], Mapping[str, Any]], CheckResult]  # (metadata, spec) -> result


@dataclass(frozen=True, slots=True)
class VersionedCheck:
    """A check function in force from minor version `minimum` (until the next one of its check)."""

    minimum: int
    check: CheckFn
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Check:
    """One rule of a level, by ID, with its versions in increasing order."""

    id: str
    level: Level
    versions: tuple[VersionedCheck, ...]


# -- reading dicts like Go reads typed structs (wrong type = unset) ---------------------------

def _map(v: Any) -> Mapping[str, Any]:  # dict, not Mapping: the ABC check is 3x slower
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Init, regular, then ephemeral containers: PodSecurity's visitContainers order."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in _list(spec.get(key)):
            yield _map(c)


def _name(c: Mapping[str, Any]) -> str:
    return _str(c.get("name"))


def _sc(x: Mapping[str, Any]) -> Mapping[str, Any]:
    return _map(x.get("securityContext"))


def _plural(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


def _join_quote(items: Sequence[str]) -> str:
    return '"' + '", "'.join(items) + '"' if items else ""


def _go_quote(s: str) -> str:
    """Go's %q of a string (for annotation values in details)."""
    out = []
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _setters(pod_bad: bool, containers: list[str]) -> list[str]:
    out = ["pod"] if pod_bad else []
    if containers:
        out.append(f"{_plural('container', 'containers', len(containers))} {_join_quote(containers)}")
    return out


def _not_windows(fn: CheckFn) -> CheckFn:
    """The 1.25+ form of a restricted check: Windows pods are exempt from it."""
    def check(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
        if _str(_map(spec.get("os")).get("name")) == "windows":
            return ALLOWED
        return fn(meta, spec)
    return check


def _relaxed_for_user_namespaces(fn: CheckFn) -> CheckFn:
    """The 1.35 form of a check that a pod in its own user namespace (hostUsers: false) passes."""
    def check(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
        if spec.get("hostUsers") is False:
            return ALLOWED
        return fn(meta, spec)
    return check


# -- baseline checks ---------------------------------------------------------------------------

_APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def app_armor_profile(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """appArmorProfile: only RuntimeDefault or Localhost profiles (fields and annotations)."""
    allowed_types = ("RuntimeDefault", "Localhost")
    bad_values: set[str] = set()
    pod_profile = _sc(spec).get("appArmorProfile")
    pod_bad = False
    if isinstance(pod_profile, dict) and _str(pod_profile.get("type")) not in allowed_types:
        pod_bad = True
        bad_values.add(_str(pod_profile.get("type")))
    bad: list[str] = []
    for c in _containers(spec):
        prof = _sc(c).get("appArmorProfile")
        if isinstance(prof, dict) and _str(prof.get("type")) not in allowed_types:
            bad.append(_name(c))
            bad_values.add(_str(prof.get("type")))
    setters = _setters(pod_bad, bad)
    values = sorted(bad_values)
    annotations = sorted(
        f"{k}={_go_quote(v)}" for k, v in _map(meta.get("annotations")).items()
        if isinstance(k, str) and k.startswith(_APPARMOR_ANNOTATION_PREFIX)
        and not (_str(v) == "" or v == "runtime/default" or _str(v).startswith("localhost/")))
    if annotations:
        values += annotations
        setters.append(_plural("annotation", "annotations", len(annotations)))
    if setters:
        return CheckResult(False, _plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(values)),
                           f"{' and '.join(setters)} must not set AppArmor profile type to {_join_quote(values)}")
    return ALLOWED


_DEFAULT_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})


def capabilities_baseline(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """capabilities_baseline: add only capabilities of the container runtime's default set."""
    bad: list[str] = []
    caps: set[str] = set()
    for c in _containers(spec):
        extra = {_str(x) for x in _list(_map(_sc(c).get("capabilities")).get("add"))} - _DEFAULT_CAPABILITIES
        if extra:
            bad.append(_name(c))
            caps |= extra
    if bad:
        return CheckResult(False, "non-default capabilities",
                           f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} must not include "
                           f"{_join_quote(sorted(caps))} in securityContext.capabilities.add")
    return ALLOWED


def host_namespaces(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """hostNamespaces: no hostNetwork, hostPID or hostIPC."""
    found = [f"{f}=true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f) is True]
    return CheckResult(False, "host namespaces", ", ".join(found)) if found else ALLOWED


def host_path_volumes(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """hostPathVolumes: no hostPath volumes."""
    bad = [_str(v.get("name")) for v in map(_map, _list(spec.get("volumes"))) if v.get("hostPath") is not None]
    if bad:
        return CheckResult(False, "hostPath volumes", f"{_plural('volume', 'volumes', len(bad))} {_join_quote(bad)}")
    return ALLOWED


def host_ports(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """hostPorts: no container port bound on the host."""
    bad: list[str] = []
    ports: set[str] = set()
    for c in _containers(spec):
        used = {str(_int(p.get("hostPort"))) for p in map(_map, _list(c.get("ports"))) if _int(p.get("hostPort"))}
        if used:
            bad.append(_name(c))
            ports |= used
    if bad:
        return CheckResult(False, "hostPort",
                           f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} "
                           f"{_plural('uses', 'use', len(bad))} {_plural('hostPort', 'hostPorts', len(ports))} "
                           f"{', '.join(sorted(ports))}")
    return ALLOWED


def _handler_hosts(handler: Any) -> list[str]:
    h = _map(handler)
    return [host for key in ("httpGet", "tcpSocket") if (host := _str(_map(h.get(key)).get("host")))]


def host_probes_and_host_lifecycle(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """hostProbesAndHostLifecycle: probes and lifecycle hooks must not name a host."""
    bad: set[str] = set()
    hosts: set[str] = set()
    for c in _containers(spec):
        lifecycle = _map(c.get("lifecycle"))
        for handler in (c.get("livenessProbe"), c.get("readinessProbe"), c.get("startupProbe"),
                        lifecycle.get("postStart"), lifecycle.get("preStop")):
            if found := _handler_hosts(handler):
                bad.add(_name(c))
                hosts.update(found)
    if bad:
        return CheckResult(False, "probe or lifecycle host",
                           f"{_plural('container', 'containers', len(bad))} {_join_quote(sorted(bad))} "
                           f"{_plural('uses', 'use', len(bad))} "
                           f"{_plural('probe or lifecycle host', 'probe or lifecycle hosts', len(hosts))} "
                           f"{_join_quote(sorted(hosts))}")
    return ALLOWED


def privileged(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """privileged: no privileged containers."""
    bad = [_name(c) for c in _containers(spec) if _sc(c).get("privileged") is True]
    if bad:
        return CheckResult(False, "privileged", f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} "
                                                "must not set securityContext.privileged=true")
    return ALLOWED


def proc_mount(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """procMount: only the Default proc mount."""
    bad: list[str] = []
    types: set[str] = set()
    for c in _containers(spec):
        pm = _sc(c).get("procMount")
        if isinstance(pm, str) and pm != "Default":
            bad.append(_name(c))
            types.add(pm)
    if bad:
        return CheckResult(False, "procMount",
                           f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} must not set "
                           f"securityContext.procMount to {_join_quote(sorted(types))}")
    return ALLOWED


def _se_linux_options(allowed_types: frozenset[str]) -> CheckFn:
    def se_linux_options(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
        """seLinuxOptions: only container types, no user or role."""
        bad_types: set[str] = set()
        flags = {"user": False, "role": False}

        def valid(opts: Mapping[str, Any]) -> bool:
            ok = True
            if _str(opts.get("type")) not in allowed_types:
                ok = False
                bad_types.add(_str(opts.get("type")))
            for key in ("user", "role"):
                if _str(opts.get(key)):
                    ok = False
                    flags[key] = True
            return ok

        pod_opts = _sc(spec).get("seLinuxOptions")
        pod_bad = isinstance(pod_opts, dict) and not valid(pod_opts)
        bad = [_name(c) for c in _containers(spec)
               if isinstance(o := _sc(c).get("seLinuxOptions"), dict) and not valid(o)]
        setters = _setters(pod_bad, bad)
        if setters:
            data = [f"{_plural('type', 'types', len(bad_types))} {_join_quote(sorted(bad_types))}"] if bad_types else []
            data += [f"{key} may not be set" for key in ("user", "role") if flags[key]]
            return CheckResult(False, "seLinuxOptions", f"{' and '.join(setters)} set forbidden "
                                                        f"securityContext.seLinuxOptions: {'; '.join(data)}")
        return ALLOWED
    return se_linux_options


_SELINUX_TYPES_1_0 = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
_SELINUX_TYPES_1_31 = _SELINUX_TYPES_1_0 | {"container_engine_t"}

_SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
_SECCOMP_CONTAINER_ANNOTATION_PREFIX = "container.seccomp.security.alpha.kubernetes.io/"
_VALID_SECCOMP = ("RuntimeDefault", "Localhost")


def _valid_seccomp_annotation(v: str) -> bool:
    return v in ("runtime/default", "docker/default") or v.startswith("localhost/")


def seccomp_profile_baseline_1_0(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """seccompProfile_baseline before 1.19: the seccomp annotations must not ask for unconfined."""
    annotations = _map(meta.get("annotations"))
    forbidden: set[str] = set()
    keys = [_SECCOMP_POD_ANNOTATION] + [_SECCOMP_CONTAINER_ANNOTATION_PREFIX + _name(c) for c in _containers(spec)]
    for key in keys:
        if key in annotations and not _valid_seccomp_annotation(_str(annotations[key])):
            forbidden.add(f"{key}={_go_quote(_str(annotations[key]))}")
    if forbidden:
        return CheckResult(False, "seccompProfile", f"forbidden {_plural('annotation', 'annotations', len(forbidden))} "
                                                    f"{', '.join(sorted(forbidden))}")
    return ALLOWED


def _seccomp_setters(spec: Mapping[str, Any]) -> tuple[list[str], set[str], bool, list[str]]:
    """(bad setters, bad values, pod sets a valid profile, containers setting none)."""
    bad_values: set[str] = set()
    pod_prof = _sc(spec).get("seccompProfile")
    pod_bad = pod_set = False
    if isinstance(pod_prof, dict):
        if _str(pod_prof.get("type")) in _VALID_SECCOMP:
            pod_set = True
        else:
            pod_bad = True
            bad_values.add(_str(pod_prof.get("type")))
    explicit: list[str] = []
    unset: list[str] = []
    for c in _containers(spec):
        prof = _sc(c).get("seccompProfile")
        if isinstance(prof, dict):
            if _str(prof.get("type")) not in _VALID_SECCOMP:
                explicit.append(_name(c))
                bad_values.add(_str(prof.get("type")))
        else:
            unset.append(_name(c))
    return _setters(pod_bad, explicit), bad_values, pod_set, unset


def seccomp_profile_baseline_1_19(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """seccompProfile_baseline: a profile, if set, is RuntimeDefault or Localhost."""
    setters, values, _, _ = _seccomp_setters(spec)
    if setters:
        return CheckResult(False, "seccompProfile", f"{' and '.join(setters)} must not set securityContext."
                                                    f"seccompProfile.type to {_join_quote(sorted(values))}")
    return ALLOWED


def _sysctls(allowed: frozenset[str]) -> CheckFn:
    def sysctls(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
        """sysctls: only the namespaced, isolated ("safe") ones."""
        names = [_str(s.get("name")) for s in map(_map, _list(_sc(spec).get("sysctls")))]
        bad = [n for n in names if n not in allowed]
        return CheckResult(False, "forbidden sysctls", ", ".join(bad)) if bad else ALLOWED
    return sysctls


_SYSCTLS_1_0 = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                          "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"})
_SYSCTLS_1_27 = _SYSCTLS_1_0 | {"net.ipv4.ip_local_reserved_ports"}
_SYSCTLS_1_29 = _SYSCTLS_1_27 | {"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                                 "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
_SYSCTLS_1_32 = _SYSCTLS_1_29 | {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}


def windows_host_process(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """windowsHostProcess: no Windows host-process containers."""
    def host_process(x: Mapping[str, Any]) -> bool:
        return _map(_sc(x).get("windowsOptions")).get("hostProcess") is True

    setters = _setters(host_process(spec), [_name(c) for c in _containers(spec) if host_process(c)])
    if setters:
        return CheckResult(False, "hostProcess",
                           f"{' and '.join(setters)} must not set securityContext.windowsOptions.hostProcess=true")
    return ALLOWED


# -- restricted checks -------------------------------------------------------------------------

def allow_privilege_escalation(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """allowPrivilegeEscalation: every container sets it to false."""
    bad = [_name(c) for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    if bad:
        return CheckResult(False, "allowPrivilegeEscalation != false",
                           f"{_plural('container', 'containers', len(bad))} {_join_quote(bad)} must set "
                           "securityContext.allowPrivilegeEscalation=false")
    return ALLOWED


def capabilities_restricted(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """capabilities_restricted: drop ALL, add at most NET_BIND_SERVICE."""
    missing_drop: list[str] = []
    adding: list[str] = []
    forbidden: set[str] = set()
    for c in _containers(spec):
        caps = _sc(c).get("capabilities")
        if not isinstance(caps, dict):
            missing_drop.append(_name(c))
            continue
        if "ALL" not in [_str(x) for x in _list(caps.get("drop"))]:
            missing_drop.append(_name(c))
        extra = {_str(x) for x in _list(caps.get("add")) if _str(x) != "NET_BIND_SERVICE"}
        if extra:
            adding.append(_name(c))
            forbidden |= extra
    details = []
    if missing_drop:
        details.append(f"{_plural('container', 'containers', len(missing_drop))} {_join_quote(missing_drop)} "
                       'must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_plural('container', 'containers', len(adding))} {_join_quote(adding)} must not include "
                       f"{_join_quote(sorted(forbidden))} in securityContext.capabilities.add")
    return CheckResult(False, "unrestricted capabilities", "; ".join(details)) if details else ALLOWED


_ALLOWED_VOLUMES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim",
                    "projected", "secret")
_RESTRICTED_VOLUMES = ("hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs",
                       "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile", "vsphereVolume",
                       "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos")


def restricted_volumes(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """restrictedVolumes: only volume types that expose nothing of the host."""
    bad: list[str] = []
    types: set[str] = set()
    for v in map(_map, _list(spec.get("volumes"))):
        if any(v.get(k) is not None for k in _ALLOWED_VOLUMES):
            continue
        bad.append(_str(v.get("name")))
        types.add(next((k for k in _RESTRICTED_VOLUMES if v.get(k) is not None), "unknown"))
    if bad:
        return CheckResult(False, "restricted volume types",
                           f"{_plural('volume', 'volumes', len(bad))} {_join_quote(bad)} "
                           f"{_plural('uses', 'use', len(bad))} "
                           f"{_plural('restricted volume type', 'restricted volume types', len(types))} "
                           f"{_join_quote(sorted(types))}")
    return ALLOWED


def run_as_non_root(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """runAsNonRoot: the pod or every container sets runAsNonRoot=true, none sets false."""
    pod_value = _sc(spec).get("runAsNonRoot")
    pod_bad = isinstance(pod_value, bool) and not pod_value
    pod_non_root = pod_value is True
    explicit: list[str] = []
    implicit: list[str] = []
    for c in _containers(spec):
        value = _sc(c).get("runAsNonRoot")
        if isinstance(value, bool):
            if not value:
                explicit.append(_name(c))
        elif not pod_non_root:
            implicit.append(_name(c))
    setters = _setters(pod_bad, explicit)
    if setters:
        return CheckResult(False, "runAsNonRoot != true",
                           f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false")
    if implicit:
        return CheckResult(False, "runAsNonRoot != true",
                           f"pod or {_plural('container', 'containers', len(implicit))} {_join_quote(implicit)} "
                           "must set securityContext.runAsNonRoot=true")
    return ALLOWED


def run_as_user(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """runAsUser: neither the pod nor a container sets runAsUser=0."""
    def root(x: Mapping[str, Any]) -> bool:
        v = _sc(x).get("runAsUser")
        return isinstance(v, int) and not isinstance(v, bool) and v == 0

    setters = _setters(root(spec), [_name(c) for c in _containers(spec) if root(c)])
    if setters:
        return CheckResult(False, "runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0")
    return ALLOWED


def seccomp_profile_restricted(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> CheckResult:
    """seccompProfile_restricted: the pod or every container sets RuntimeDefault or Localhost."""
    setters, values, pod_set, unset = _seccomp_setters(spec)
    if setters:
        return CheckResult(False, "seccompProfile", f"{' and '.join(setters)} must not set securityContext."
                                                    f"seccompProfile.type to {_join_quote(sorted(values))}")
    if unset and not pod_set:
        return CheckResult(False, "seccompProfile",
                           f"pod or {_plural('container', 'containers', len(unset))} {_join_quote(unset)} must set "
                           'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
    return ALLOWED


# -- the registry ------------------------------------------------------------------------------

B, R = Level.BASELINE, Level.RESTRICTED
CHECKS: tuple[Check, ...] = (
    Check("appArmorProfile", B, (VersionedCheck(0, app_armor_profile),)),
    Check("capabilities_baseline", B, (VersionedCheck(0, capabilities_baseline),)),
    Check("hostNamespaces", B, (VersionedCheck(0, host_namespaces),)),
    Check("hostPathVolumes", B, (VersionedCheck(0, host_path_volumes),)),
    Check("hostPorts", B, (VersionedCheck(0, host_ports),)),
    Check("hostProbesAndHostLifecycle", B, (VersionedCheck(34, host_probes_and_host_lifecycle),)),
    Check("privileged", B, (VersionedCheck(0, privileged),)),
    Check("procMount", B, (VersionedCheck(0, proc_mount),
                           VersionedCheck(35, _relaxed_for_user_namespaces(proc_mount)))),
    Check("seLinuxOptions", B, (VersionedCheck(0, _se_linux_options(_SELINUX_TYPES_1_0)),
                                VersionedCheck(31, _se_linux_options(_SELINUX_TYPES_1_31)))),
    Check("seccompProfile_baseline", B, (VersionedCheck(0, seccomp_profile_baseline_1_0),
                                         VersionedCheck(19, seccomp_profile_baseline_1_19))),
    Check("sysctls", B, (VersionedCheck(0, _sysctls(_SYSCTLS_1_0)), VersionedCheck(27, _sysctls(_SYSCTLS_1_27)),
                         VersionedCheck(29, _sysctls(_SYSCTLS_1_29)), VersionedCheck(32, _sysctls(_SYSCTLS_1_32)))),
    Check("windowsHostProcess", B, (VersionedCheck(0, windows_host_process),)),
    Check("allowPrivilegeEscalation", R, (VersionedCheck(8, allow_privilege_escalation),
                                          VersionedCheck(25, _not_windows(allow_privilege_escalation)))),
    Check("capabilities_restricted", R, (
        VersionedCheck(22, capabilities_restricted, ("capabilities_baseline",)),
        VersionedCheck(25, _not_windows(capabilities_restricted), ("capabilities_baseline",)))),
    Check("procMount_restricted", R, (VersionedCheck(35, proc_mount, ("procMount",)),)),
    Check("restrictedVolumes", R, (VersionedCheck(0, restricted_volumes, ("hostPathVolumes",)),)),
    Check("runAsNonRoot", R, (VersionedCheck(0, run_as_non_root),
                              VersionedCheck(35, _relaxed_for_user_namespaces(run_as_non_root)))),
    Check("runAsUser", R, (VersionedCheck(23, run_as_user),
                           VersionedCheck(35, _relaxed_for_user_namespaces(run_as_user)))),
    Check("seccompProfile_restricted", R, (
        VersionedCheck(19, seccomp_profile_restricted, ("seccompProfile_baseline",)),
        VersionedCheck(25, _not_windows(seccomp_profile_restricted), ("seccompProfile_baseline",)))),
)


def _in_force(check: Check, minor: int) -> VersionedCheck | None:
    """The version of `check` that applies at `minor` (None: not yet introduced)."""
    found = None
    for v in check.versions:
        if v.minimum <= minor:
            found = v
    return found


@functools.cache
def checks_for(policy: Policy) -> tuple[tuple[str, CheckFn], ...]:
    """The checks of a level at a version, in PodSecurity's order (baseline IDs sorted, then restricted)."""
    if policy.level is Level.PRIVILEGED:
        return ()
    minor = MAX_MINOR if policy.minor is None else min(policy.minor, MAX_MINOR)
    active = {c.id: (c, v) for c in CHECKS if (v := _in_force(c, minor)) is not None
              and (c.level is Level.BASELINE or policy.level is Level.RESTRICTED)}
    overridden = {o for c, v in active.values() if c.level is Level.RESTRICTED for o in v.overrides}
    order = sorted(i for i, (c, _) in active.items() if c.level is Level.BASELINE) + \
        sorted(i for i, (c, _) in active.items() if c.level is Level.RESTRICTED)
    return tuple((i, active[i][1].check) for i in order if i not in overridden)


def as_admitted(pod: Pod) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(metadata, spec) as PodSecurity admission sees a created Pod: after defaulting and version skew.

    Three API server steps change what the checks see: a volume without a source defaults to
    emptyDir; with hostNetwork, a port's hostPort defaults to its containerPort; and a container
    without an AppArmor field gets one from its deprecated `unconfined` annotation (other
    annotation values map to allowed types and change no verdict).
    """
    meta = _map(pod.get("metadata"))
    spec = dict(_map(pod.get("spec")))
    windows = _str(_map(spec.get("os")).get("name")) == "windows"
    annotations = _map(meta.get("annotations"))
    pod_profile = _sc(spec).get("appArmorProfile")
    if isinstance(spec.get("volumes"), list):
        spec["volumes"] = [{**v, "emptyDir": {}} if isinstance(v, dict)
                           and all(val is None for k, val in v.items() if k != "name") else v
                           for v in spec["volumes"]]
    for key in ("initContainers", "containers", "ephemeralContainers"):
        if not isinstance(spec.get(key), list):
            continue
        out = []
        for c in spec[key]:
            if isinstance(c, dict):
                c = dict(c)
                host_network = spec.get("hostNetwork") is True and key != "ephemeralContainers"
                if host_network and isinstance(c.get("ports"), list):
                    c["ports"] = [{**p, "hostPort": p.get("containerPort")} if isinstance(p, dict)
                                  and not _int(p.get("hostPort")) else p for p in c["ports"]]
                sc = _sc(c)
                if (not windows and annotations.get(_APPARMOR_ANNOTATION_PREFIX + _name(c)) == "unconfined"
                        and sc.get("appArmorProfile") is None and pod_profile != {"type": "Unconfined"}):
                    c["securityContext"] = {**sc, "appArmorProfile": {"type": "Unconfined"}}
            out.append(c)
        spec[key] = out
    return meta, spec


def evaluate(pod: Pod, policy: Policy) -> list[CheckResult]:
    """The forbidden results of every check of the policy on this pod, in PodSecurity's order."""
    meta, spec = as_admitted(pod)
    return [r for _, fn in checks_for(policy) if not (r := fn(meta, spec)).allowed]


def forbidden_detail(results: Sequence[CheckResult]) -> str:
    """PodSecurity's aggregate detail: `reason (detail), reason (detail)`."""
    return ", ".join(f"{r.reason or 'unknown forbidden reason'}" + (f" ({r.detail})" if r.detail else "")
                     for r in results)


def refusal(pod: Pod, policy: Policy) -> str | None:
    """The API server's refusal message for this pod under the policy (None: admitted)."""
    results = evaluate(pod, policy)
    return f"violates PodSecurity {_go_quote(str(policy))}: {forbidden_detail(results)}" if results else None


_VERSION = re.compile(r"v1\.([0-9]|[1-9][0-9]*)")


def parse_level(value: str) -> Level | None:
    """A level label value (None: not a level)."""
    try:
        return Level(value)
    except ValueError:
        return None


def policy_of(labels: Mapping[str, str] | None, *, default: Policy) -> Policy:
    """The enforce policy of a namespace's labels, as PodSecurity reads them.

    An invalid level fails closed to restricted and an invalid version to latest, as
    PodSecurity does; a namespace without the level label gets `default` (with the
    namespace's version label, if any).
    """
    labels = labels or {}
    level, minor = default.level, default.minor
    if ENFORCE_LABEL in labels:
        level = parse_level(labels[ENFORCE_LABEL]) or Level.RESTRICTED
    if ENFORCE_VERSION_LABEL in labels:
        value = labels[ENFORCE_VERSION_LABEL]
        m = _VERSION.fullmatch(value) if isinstance(value, str) else None
        minor = int(m.group(1)) if m else None
    return Policy(level, minor)
