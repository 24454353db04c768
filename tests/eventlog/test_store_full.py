"""A store that cannot grow refuses the write whole and takes writes again once there is room."""

from __future__ import annotations

import pytest

from eventlog import LogStore, StoreFullError
from eventlog.verify import verify_log
from tests.kit.builders import put


def test_a_map_at_its_limit_refuses_the_append_and_keeps_the_store_sound(tmp_path):
    limit = 1 << 20
    with LogStore(tmp_path / "log", map_size=256 << 10, max_map_size=limit) as store:
        v = 0
        with pytest.raises(StoreFullError, match="map is full at its limit"):
            while True:
                store.append([put(f"edge{n}", f"p{i}", v) for n in range(4) for i in range(8)])
                v += 1
        head = store.head_offset
        assert head == v * 32  # the failed batch left nothing behind
        assert verify_log(store) == []
        with pytest.raises(StoreFullError):  # and every later write fails the same way, changing nothing
            store.append([put(f"edge{n}", f"p{i}", v) for n in range(4) for i in range(8)])
        assert store.head_offset == head
    # room returns (here: a larger limit; on a full disk: freed space): writes go on where they stopped
    with LogStore(tmp_path / "log", max_map_size=4 * limit) as store:
        store.append([put("edge0", "p0", 10_000)])
        assert store.head_offset == head + 1
        assert verify_log(store) == []
