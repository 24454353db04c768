"""edge-agent's joining flags: kubeadm's names, the pki as the TLS files, one line for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.main import parse_args
from edgecommon.usage import UsageError as SettingsError

HASH = "sha256:" + "ab" * 32
TOKEN = "abcdef.0123456789abcdef"
JOIN = ["--node-name", "edge01", "--data-dir", "/var/lib/edge", "--join-server", "manager.example:50052",
        "--discovery-token-ca-cert-hash", HASH]


def test_join_flags_make_the_pki_the_tls_files_and_default_the_sync_server_to_the_joined_host():
    s = parse_args([*JOIN, "--token-file", "/etc/edge/token"])
    assert s.join is not None
    assert (s.join.host, s.join.port, s.join.ca_cert_hashes) == ("manager.example", 50052, (HASH,))
    assert s.join.token_file == Path("/etc/edge/token") and s.join.timeout == 900.0
    assert s.sync_servers == ("manager.example:50051",)
    pki = Path("/var/lib/edge/pki")
    assert (s.ca_file, s.cert_file, s.key_file) == (pki / "ca.crt", pki / "agent.pem", pki / "agent.pem")
    assert not s.insecure


def test_an_explicit_sync_server_an_ipv6_join_server_and_an_upper_case_hash_are_kept():
    s = parse_args(["--join-server", "[fd00::1]:50052", "--discovery-token-ca-cert-hash", "sha256:" + "AB" * 32,
                    "--sync-server", "sync.example:443", "--join-timeout", "2m"])
    assert s.join.host == "fd00::1" and s.join.address == "[fd00::1]:50052"
    assert s.join.ca_cert_hashes == (HASH,)
    assert s.sync_servers == ("sync.example:443",) and s.join.timeout == 120.0


def test_a_token_on_the_command_line_never_shows_in_the_settings():
    s = parse_args([*JOIN, "--token", TOKEN])
    assert s.join.token == TOKEN
    assert "0123456789abcdef" not in repr(s)


def test_several_pinned_hashes_may_be_given():
    other = "sha256:" + "cd" * 32
    s = parse_args([*JOIN, "--discovery-token-ca-cert-hash", f"{other}"])
    assert s.join.ca_cert_hashes == (HASH, other)


@pytest.mark.parametrize("argv, message", [
    (["--join-server", "m:50052"], "--join-server needs --discovery-token-ca-cert-hash"),
    ([*JOIN, "--insecure"], "--join-server cannot be combined with --insecure"),
    ([*JOIN, "--ca-file", "/x/ca.crt"], "drop --ca-file, --cert-file and --key-file"),
    ([*JOIN, "--token", TOKEN, "--token-file", "/t"], "give --token-file or --token, not both"),
    ([*JOIN, "--token", "abcdef.short"], "--token is not a bootstrap token"),
    ([*JOIN[:-1], "sha256:1234"], "--discovery-token-ca-cert-hash: not a CA hash: 'sha256:1234'"),
    ([*JOIN[:-1], "md5:" + "a" * 64], "(sha256: and 64 hex digits)"),
    (["--join-server", "no-port", "--discovery-token-ca-cert-hash", HASH], "--join-server: not an address: 'no-port'"),
    (["--join-server", "m:70000", "--discovery-token-ca-cert-hash", HASH], "--join-server: not an address: 'm:70000'"),
    (["--join-server", ":50052", "--discovery-token-ca-cert-hash", HASH], "--join-server: not an address: ':50052'"),
    ([*JOIN, "--join-timeout", "0s"], "--join-timeout must be positive"),
    ([*JOIN, "--join-timeout", "soon"], "--join-timeout: "),
    (["--insecure", "--token-file", "/t"], "--token-file needs --join-server"),
    (["--insecure", "--discovery-token-ca-cert-hash", HASH], "--discovery-token-ca-cert-hash needs --join-server"),
])
def test_mistakes_are_one_line(argv, message):
    with pytest.raises(SettingsError) as e:
        parse_args(argv)
    assert message in str(e.value)
    assert "\n" not in str(e.value) and ("soon" not in argv or "'soon'" in str(e.value))
    assert "0123456789abcdef" not in str(e.value)  # a token is never echoed


def test_without_join_or_ca_the_plaintext_refusal_names_joining():
    with pytest.raises(SettingsError, match="give --join-server"):
        parse_args(["--node-name", "edge01"])
