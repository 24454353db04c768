"""When the agent renews its certificate: kubelet's 70-90% jittered deadline, and a failing renewal retried quietly."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from loguru import logger

from agent import pki
from agent.join_settings import JoinSettings
from agent.pki import Identity, agent_pem, new_key
from agent.renewing import Renewer, rotation_deadline
from tests.kit.local_ca import NOW, LocalCa
from tests.kit.processes import free_port

YEAR = Identity(node="edge01", serial=1, not_before=NOW, not_after=NOW + timedelta(days=365))


@pytest.mark.parametrize("draw, fraction", [(0.0, 0.7), (0.5, 0.8), (0.999999, 0.9)])
def test_the_deadline_is_70_to_90_percent_of_the_lifetime(draw, fraction):
    deadline = rotation_deadline(YEAR, rng=lambda: draw)
    assert abs((deadline - NOW).total_seconds() - fraction * 365 * 86400) < 60


def test_jitter_spreads_nodes_that_joined_together():
    deadlines = {rotation_deadline(YEAR) for _ in range(50)}
    assert len(deadlines) > 40
    assert all(NOW + timedelta(days=255) < d < NOW + timedelta(days=329) for d in deadlines)


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999999])
def test_a_backdated_certificate_counts_its_lifetime_from_its_arrival(draw):
    # kube's signer backdates notBefore 5 minutes: a 60 s certificate would be 70-90% old within 24 s of arriving
    short = Identity(node="edge01", serial=2, not_before=NOW - timedelta(minutes=5), not_after=NOW + timedelta(seconds=60))
    assert rotation_deadline(short, rng=lambda: draw) < NOW + timedelta(seconds=25)  # kubelet's rule alone
    deadline = rotation_deadline(short, received=NOW, rng=lambda: draw)
    assert abs((deadline - NOW).total_seconds() - 60 * (0.7 + 0.2 * draw)) < 0.01


def test_a_certificate_read_from_disk_past_its_deadline_is_renewed_at_once():
    old = Identity(node="edge01", serial=3, not_before=NOW - timedelta(days=340), not_after=NOW + timedelta(days=25))
    assert rotation_deadline(old, rng=lambda: 0.999999) < NOW  # 90% of its 365 days ended 11 days ago


def test_a_failing_renewal_is_retried_with_one_line_per_error_and_the_expiry_said_once(tmp_path):
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    clock = [NOW]
    expired = Identity(node="edge01", serial=4, not_before=NOW - timedelta(hours=1), not_after=NOW - timedelta(seconds=1))
    ca = LocalCa()
    key = new_key()
    pki.write_identity(tmp_path, bundle_pem=ca.pem, pem=agent_pem(ca.issue(key.public_key()), key))
    before = (tmp_path / "pki" / "agent.pem").read_bytes()
    settings = JoinSettings(host="127.0.0.1", port=free_port(), ca_cert_hashes=("sha256:" + "0" * 64,), timeout=0.1)
    r = Renewer(settings, node="edge01", data_dir=tmp_path, identity=expired, rng=lambda: 0.0,
                now=lambda: clock[0]).start()
    try:
        deadline = time.monotonic() + 30
        while sum("certificate renewal failed" in l for l in lines) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.5)  # several more attempts (backoff from 1 s, full jitter: rng 0 retries at once)
    finally:
        r.stop()
        logger.remove(sink)
    failed = [l for l in lines if "certificate renewal failed" in l]
    assert len(failed) == 1, lines
    assert "cannot reach the manager at 127.0.0.1:" in failed[0]  # nothing listens on that port
    assert sum("expired at" in l for l in lines) == 1
    assert r.renewals == 0 and (tmp_path / "pki" / "agent.pem").read_bytes() == before
