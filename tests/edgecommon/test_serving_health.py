"""One health server for both daemons: /metrics, /healthz, /readyz with the reason, 404 otherwise."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter

from edgecommon.addresses import Address
from edgecommon.serving import HealthServer
from tests.kit.waits import http_get


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
    assert http_get(server.address.port, "/readyz") == (503, "not ready: store not open\n")
    why[0] = None
    assert http_get(server.address.port, "/readyz") == (200, "ok\n")


def test_metrics_healthz_and_unknown_paths(served):
    server, _ = served
    code, text = http_get(server.address.port, "/metrics")
    assert code == 200 and "k8s_edge_test_things_total 3.0" in text
    assert http_get(server.address.port, "/healthz?verbose") == (200, "ok\n")
    assert http_get(server.address.port, "/nope")[0] == 404


def test_a_taken_port_is_an_oserror_at_construction(served):
    server, _ = served
    with pytest.raises(OSError):
        HealthServer(server.address, registry=CollectorRegistry(), not_ready=lambda: None)
