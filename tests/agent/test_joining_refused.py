"""A join that cannot succeed ends with one clear line, a non-zero exit, and nothing written in the data dir's pki/.

Each refusal comes from the real edge-manager reading real bootstrap-token Secrets (or from
the agent's own checks before it sends anything); none leaves a key, a certificate or a temp
directory on the edge.
"""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from tests.kit.processes import AGENT, REPO, error_lines, free_port, run_agent
from tests.kit.waits import wait_for
from tests.kit.joining import new_token
from tests.kit.builders import apply


def _join(j, tmp: Path, node: str, *args: str, timeout: str = "20s") -> tuple[object, Path]:
    """Run edge-agent to its end; (the completed process, its data dir)."""
    data = tmp / f"{node}-data"
    (tmp / f"{node}-manifests").mkdir(exist_ok=True)
    res = run_agent("--node-name", node, "--data-dir", str(data), "--pod-manifest-path", str(tmp / f"{node}-manifests"),
                    "--sync-server", j.manager.address if j else "127.0.0.1:1", "--join-timeout", timeout, *args)
    return res, data


def _refused(res, data: Path, *needles: str) -> str:
    """Exit 1, one error line holding the needles, no traceback, nothing in pki/; the line."""
    text = res.stdout + res.stderr
    assert res.returncode == 1, text
    assert "Traceback" not in text, text
    errs = error_lines(text)
    assert len(errs) == 1, text
    assert errs[0].startswith("edge-agent: error: "), errs[0]
    for n in needles:
        assert n in errs[0], errs[0]
    assert not (data / "pki").exists() and not (data / ".pki-new").exists()
    return errs[0]


def test_a_manager_whose_ca_does_not_match_the_pinned_hash_is_not_trusted(join_manager, tmp_path):
    j = join_manager()
    token = j.token()
    wrong = "sha256:" + "0" * 64
    res, data = _join(j, tmp_path, "edge-hash", *j.agent_args(j.token_file(token), ca_hash=wrong))
    _refused(res, data, f"the manager at {j.join_address} is not the one expected: its CA hashes to {j.ca_hash}, "
                        f"not {wrong}")
    assert f"bootstrap token {token.split('.')[0]}" not in j.manager.log()  # discovery only: no token sent


@pytest.mark.parametrize("case, status, needle", [
    ("unknown", 401, "unknown bootstrap token"),
    ("wrong-secret", 401, "wrong secret for bootstrap token"),
    ("expired", 401, "has expired at"),
    ("not-for-authentication", 403, "is not for authentication"),
    ("bound-to-another-node", 403, "is bound to node someone-else, not edge-bad-token"),
])
def test_a_bad_token_is_refused_by_the_manager(join_manager, tmp_path, case, status, needle):
    j = join_manager()
    tid, secret = new_token()
    if case == "wrong-secret":
        j.token(token=(tid, "x" * 16))
    elif case == "expired":
        j.token(token=(tid, secret), expires_in=timedelta(minutes=-1))
    elif case == "not-for-authentication":
        j.token(token=(tid, secret), authentication=False)
    elif case == "bound-to-another-node":
        j.token(token=(tid, secret), node="someone-else")
    res, data = _join(j, tmp_path, "edge-bad-token", *j.agent_args(j.token_file(f"{tid}.{secret}")))
    line = _refused(res, data, f"the manager at {j.join_address} refused (HTTP {status}): ", needle)
    assert secret not in line and secret not in res.stderr


def test_a_node_refused_by_its_edgenode_label_cannot_join(control_plane, join_manager, namespace, tmp_path):
    j = join_manager()
    node = "edge-refused"
    apply(control_plane, node, namespace, {"web": "nginx:1.25"})
    control_plane.kubectl("label", "edgenode", node, "-n", namespace, "edge.k8s.io/agent-refused=true")
    wait_for(lambda: f"node {node} is refused" in j.manager.log(), timeout=60, what="the manager to see the label")
    res, data = _join(j, tmp_path, node, *j.agent_args(j.token_file(j.token())))
    _refused(res, data, "refused (HTTP 403): ", f"node {node} is refused")


def test_a_denied_request_ends_the_join(control_plane, join_manager, tmp_path):
    j = join_manager("--join-approval", "manual")
    node = "edge-denied"
    data = tmp_path / f"{node}-data"
    (tmp_path / "m").mkdir()
    cmd = [*AGENT, "--node-name", node, "--data-dir", str(data), "--pod-manifest-path",
           str(tmp_path / "m"), "--sync-server", j.manager.address, *j.agent_args(j.token_file(j.token()))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        def pending() -> str | None:
            out = control_plane.kubectl("get", "csr", "-o", "name").stdout.split()
            mine = [n.split("/", 1)[1] for n in out if n.startswith(f"certificatesigningrequest.certificates.k8s.io/"
                                                                      f"edge-agent-{node}-")]
            return mine[0] if mine else None

        name = wait_for(pending, timeout=60, what="the agent's CSR")
        control_plane.kubectl("certificate", "deny", name)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    res = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    _refused(res, data, f"certificate request {name} was denied")


def test_an_unreachable_manager_is_retried_until_the_join_timeout(tmp_path):
    port = free_port()
    res, data = _join(None, tmp_path, "edge-unreachable", "--join-server", f"127.0.0.1:{port}",
                      "--discovery-token-ca-cert-hash", "sha256:" + "a" * 64, "--token", "abcdef.0123456789abcdef",
                      timeout="3s")
    _refused(res, data, f"cannot reach the manager at 127.0.0.1:{port}: ", "gave up discovery after --join-timeout")
    assert res.stderr.count("retrying until --join-timeout") == 1  # one warning per distinct error


@pytest.mark.parametrize("content, needle", [
    (None, "No such file or directory"),
    ("not a token\n", "not a bootstrap token: expected <token-id>.<token-secret>"),
    ("abcdef.0123456789ABCDEF\n", "not a bootstrap token"),
])
def test_a_bad_token_file_is_one_line_before_anything_is_sent(tmp_path, content, needle):
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    res, data = _join(None, tmp_path, "edge-token-file", "--join-server", "127.0.0.1:1",
                      "--discovery-token-ca-cert-hash", "sha256:" + "a" * 64, "--token-file", str(token_file))
    line = _refused(res, data, f"--token-file {token_file}: ", needle)
    assert "0123456789" not in line  # the content is never echoed


def test_no_identity_and_no_token_says_what_to_give(tmp_path):
    res, data = _join(None, tmp_path, "edge-no-token", "--join-server", "127.0.0.1:1",
                      "--discovery-token-ca-cert-hash", "sha256:" + "a" * 64)
    _refused(res, data, "no usable certificate yet and no --token-file to join with")
