"""The stream table alone: the global cap, one live stream per node, a node's share of open streams."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from manager.streams import StreamTable


@dataclass(eq=False)
class Stream:
    replaced_by: str = ""

    def replace(self, *, by_peer: str) -> None:
        self.replaced_by = by_peer


def test_the_cap_counts_every_open_stream() -> None:
    t = StreamTable(max_streams=2)
    assert t.enter() and t.enter() and not t.enter()
    assert (t.open, t.refused) == (2, 1)
    t.leave()
    assert t.enter()


def test_a_newer_stream_of_a_node_replaces_the_live_one() -> None:
    t = StreamTable()
    old, new, other = Stream(), Stream(), Stream()
    assert t.claim("edge01", old, peer="p1") and t.claim("edge02", other, peer="p2")
    assert t.claim("edge01", new, peer="p3")
    assert old.replaced_by == "p3" and not other.replaced_by and t.live("edge01") is new
    t.release("edge01", old)  # the replaced one ending does not free the node's slot
    assert t.live("edge01") is new and t.replaced == 1 and t.live_count == 2


def test_a_node_holds_at_most_max_per_node_open_streams() -> None:
    t = StreamTable(max_per_node=3)
    streams = [Stream() for _ in range(4)]
    assert [t.claim("edge01", s, peer="p") for s in streams] == [True, True, True, False]
    assert t.claim("edge02", Stream(), peer="p")  # other nodes are not affected
    t.finish("edge01")
    assert t.claim("edge01", streams[3], peer="p")


@pytest.mark.parametrize(("cap", "per_node"), [(0, 1), (1, 0)])
def test_limits_below_one_are_refused(cap: int, per_node: int) -> None:
    with pytest.raises(ValueError):
        StreamTable(max_streams=cap, max_per_node=per_node)
