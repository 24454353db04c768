"""The list+watch generator and its loop, over canned API answers (kopf-style unit tests).

A fake list function stands in for a kubernetes client list_* method: called without
`watch` it answers a list page, with `watch=True` the next canned watch stream (JSON lines).
The end-to-end behaviour against a real apiserver is in test_relisting_after_gone.py.
"""

from __future__ import annotations

import json
import threading

import pytest
import urllib3

from manager.watching import Changed, Gone, Listed, WatchSettings, WatchStats, watch_forever, watch_once

SETTINGS = WatchSettings(server_timeout_seconds=5, read_timeout_seconds=10, backoff_initial=0.01, backoff_max=0.02)


def obj(name: str, rv: str) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


class Response:
    def __init__(self, body: bytes) -> None:
        self.status = 200
        self.data = body
        self._body = body

    def stream(self, amt=None, decode_content=False):
        yield self._body

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class FakeApi:
    """Answers lists with `items` and watches with the canned streams, in order."""

    def __init__(self, items: list[dict], rv: str, streams: list[list[dict] | Exception]) -> None:
        self.items, self.rv, self.streams = items, rv, list(streams)
        self.calls: list[dict] = []

    def list(self, **kwargs):
        self.calls.append(kwargs)
        if kwargs.get("watch"):
            if not self.streams:
                raise urllib3.exceptions.ProtocolError("no more canned streams")
            s = self.streams.pop(0)
            if isinstance(s, Exception):
                raise s
            return Response(b"".join(json.dumps(e).encode() + b"\n" for e in s))
        return Response(json.dumps({"items": self.items, "metadata": {"resourceVersion": self.rv}}).encode())


def test_lists_then_yields_changes_and_rewatches_from_the_newest_resource_version():
    api = FakeApi([obj("a", "5")], "10", [
        [{"type": "ADDED", "object": obj("b", "11")},
         {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}],
        [{"type": "DELETED", "object": obj("a", "16")}],
    ])
    gen = watch_once(api.list, settings=SETTINGS)
    listed = next(gen)
    assert isinstance(listed, Listed) and listed.resource_version == "10" and len(listed.objects) == 1
    assert next(gen) == Changed("ADDED", obj("b", "11"))
    assert next(gen) == Changed("DELETED", obj("a", "16"))  # the bookmark was not yielded
    gen.close()
    watches = [c for c in api.calls if c.get("watch")]
    assert [c["resource_version"] for c in watches] == ["10", "15"]
    assert all(c["allow_watch_bookmarks"] and c["timeout_seconds"] == 5 and c["_request_timeout"] == (10.0, 10)
               for c in watches)


def test_gone_as_an_error_event_ends_the_generator():
    api = FakeApi([], "10", [[{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                           "message": "too old resource version: 3 (9)"}}]])
    gen = watch_once(api.list, settings=SETTINGS)
    next(gen)
    with pytest.raises(Gone):
        next(gen)


def test_the_loop_relists_after_gone_and_backs_off_after_connection_errors():
    api = FakeApi([obj("a", "5")], "10", [
        [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "old"}}],
        urllib3.exceptions.ProtocolError("connection reset"),
        [{"type": "MODIFIED", "object": obj("a", "12")}],
    ])
    seen: list = []
    stop = threading.Event()
    stats = WatchStats()

    def handle(item):
        seen.append(item)
        if isinstance(item, Changed):
            stop.set()

    watch_forever(api.list, handle=handle, settings=SETTINGS, stats=stats, stop=stop)
    assert [type(x).__name__ for x in seen] == ["Listed", "Listed", "Listed", "Changed"]
    assert stats.restarts == {"gone": 1, "connection": 1} and stats.lists == 3
