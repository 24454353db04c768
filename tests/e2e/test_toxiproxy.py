"""The Toxiproxy client of the harness: a restart (the way out of a hung API) keeps every fault."""

from __future__ import annotations

import socket
import threading


def _upstream(greeting: bytes = b"hi") -> socket.socket:
    """A loopback server that greets every connection with `greeting` (two bytes)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.sendall(greeting)
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


def test_a_proxy_moved_to_another_upstream_forwards_new_connections_there(toxiproxy, tmp_path):
    """The HA harness's join proxy follows the leader, as a Service selecting the leader's pod does."""
    first, second = _upstream(b"m0"), _upstream(b"m1")
    p = toxiproxy.create_proxy(f"move-{tmp_path.name}", upstream=f"127.0.0.1:{first.getsockname()[1]}")
    try:
        host, port = p.listen.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as c:
            assert c.recv(2) == b"m0"
        p.set_upstream(f"127.0.0.1:{second.getsockname()[1]}")
        with socket.create_connection((host, int(port)), timeout=5) as c:
            assert c.recv(2) == b"m1"
        toxiproxy.restart()  # the new upstream is what a restart puts back
        with socket.create_connection((host, int(port)), timeout=5) as c:
            assert c.recv(2) == b"m1"
    finally:
        toxiproxy.delete_proxy(p.name)
        first.close()
        second.close()
