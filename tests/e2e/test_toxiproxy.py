"""The Toxiproxy client of the harness: a restart (the way out of a hung API) keeps every fault."""

from __future__ import annotations

import socket
import threading


def _upstream() -> socket.socket:
    """A loopback server that greets every connection with b"hi"."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.sendall(b"hi")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_a_restart_keeps_every_proxy_address_toxic_and_partition(toxiproxy, tmp_path):
    """Shopify/toxiproxy#558: the API can hang removing a toxic; the harness restarts the server."""
    upstream = _upstream()
    target = f"127.0.0.1:{upstream.getsockname()[1]}"
    a = toxiproxy.create_proxy(f"restart-a-{tmp_path.name}", upstream=target)
    b = toxiproxy.create_proxy(f"restart-b-{tmp_path.name}", upstream=target)
    try:
        a.slow(latency_ms=50)
        b.set_enabled(False)
        toxiproxy.restart()
        assert sorted(a.toxics()) == ["latency_downstream", "latency_upstream"] and b.toxics() == []
        state = toxiproxy.request("GET", "/proxies")
        assert isinstance(state, dict)
        assert state[a.name]["listen"] == a.listen and state[a.name]["enabled"] is True
        assert state[b.name]["enabled"] is False
        host, port = a.listen.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as c:
            assert c.recv(2) == b"hi"  # the restarted proxy forwards on its old address
    finally:
        toxiproxy.delete_proxy(a.name)
        toxiproxy.delete_proxy(b.name)
        upstream.close()


def test_clearing_a_proxy_whose_api_hangs_restarts_and_heals_only_it(toxiproxy, tmp_path, monkeypatch):
    upstream = _upstream()
    target = f"127.0.0.1:{upstream.getsockname()[1]}"
    a = toxiproxy.create_proxy(f"hang-a-{tmp_path.name}", upstream=target)
    b = toxiproxy.create_proxy(f"hang-b-{tmp_path.name}", upstream=target)
    try:
        a.black_hole()
        b.narrow(rate_kb=4)
        real = toxiproxy.request

        def hung_delete(method, path, body=None):  # what a stuck RemoveToxic looks like from here
            if method == "DELETE":
                raise TimeoutError("timed out")
            return real(method, path, body)

        monkeypatch.setattr(toxiproxy, "request", hung_delete)
        restarts = toxiproxy.restarts
        a.clear()
        monkeypatch.setattr(toxiproxy, "request", real)
        assert toxiproxy.restarts == restarts + 1
        assert a.toxics() == [] and sorted(b.toxics()) == ["bandwidth_downstream", "bandwidth_upstream"]
    finally:
        toxiproxy.delete_proxy(a.name)
        toxiproxy.delete_proxy(b.name)
        upstream.close()
