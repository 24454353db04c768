"""A loopback TCP relay to one upstream that a test can turn into a black hole, then heal.

Owns one fault Toxiproxy also offers, with no process to build: a partition where connections
stay open and nothing arrives (only a timeout can tell). Imports only the standard library.
"""

from __future__ import annotations

import select
import socket
import threading


class TcpRelay:
    """Forwards 127.0.0.1:<port> to upstream; black_hole() drops every byte both ways, heal() resets."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._holed = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    @property
    def address(self) -> str:
        """HOST:PORT of the relay."""
        return f"127.0.0.1:{self.port}"

    def black_hole(self) -> None:
        """From now on nothing reaches either side; open connections stay open."""
        self._holed.set()

    def heal(self) -> None:
        """Close every connection (their streams lost bytes) and forward new ones again."""
        self._drop_all()
        self._holed.clear()

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._closed.set()
        self._listener.close()
        self._drop_all()

    def _drop_all(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._socks.append(client)
            threading.Thread(target=self._pump, args=(client,), name="relay-pump", daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            if not self._holed.is_set():
                upstream = socket.create_connection(self.upstream, timeout=5)
                with self._lock:
                    self._socks.append(upstream)
            peers = {client: upstream, upstream: client} if upstream else {client: None}
            while not self._closed.is_set():
                ready, _, _ = select.select(list(peers), [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    other = peers[s]
                    if other is not None and not self._holed.is_set():
                        other.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (client, upstream):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
