"""One health server for both daemons: /metrics, /healthz, /readyz with the reason, 404 otherwise."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from edgecommon.addresses import Address
from edgecommon.serving import HealthServer


def get(server: HealthServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.address.port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def served():
    registry = CollectorRegistry()
    Counter("k8s_edge_test_things", "Things.", registry=registry).inc(3)
    why: list[str | None] = ["store not open"]
    server = HealthServer(Address("127.0.0.1", 0), registry=registry, not_ready=lambda: why[0])
    server.start()
    yield server, why
    server.stop()


def test_readyz_says_why_until_ready(served):
    server, why = served
    assert get(server, "/readyz") == (503, "not ready: store not open\n")
    why[0] = None
    assert get(server, "/readyz") == (200, "ok\n")


def test_metrics_healthz_and_unknown_paths(served):
    server, _ = served
    code, text = get(server, "/metrics")
    assert code == 200 and "k8s_edge_test_things_total 3.0" in text
    assert get(server, "/healthz?verbose") == (200, "ok\n")
    assert get(server, "/nope")[0] == 404


def test_a_taken_port_is_an_oserror_at_construction(served):
    server, _ = served
    with pytest.raises(OSError):
        HealthServer(server.address, registry=CollectorRegistry(), not_ready=lambda: None)
