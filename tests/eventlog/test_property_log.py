"""Property: any puts/deletes over many nodes, with compactions between, keep the log sound.

After every run: the view equals replay(base + retained events), every digest
equals one recomputed from scratch, the state at any retained offset equals a
model replay of the full history, and a replica following the log through
snapshots and events ends equal to it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog import Change, LogStore, ReplicaStore, digest_of
from eventlog.replay import log_state_at, replay
from eventlog.verify import verify_log, verify_replica, verify_replica_against
from tests.kit.builders import pod_manifest


NODES = [f"edge{i}" for i in range(4)]
PODS = [f"p{i}" for i in range(5)]

change = st.builds(
    lambda op, node, ns, pod, v: Change(node, op, ns, pod, pod_manifest(ns, pod, f"nginx:1.{v}", node=node) if op == "put" else None),
    st.sampled_from(["put", "put", "delete"]), st.sampled_from(NODES), st.sampled_from(["default", "kube-edge"]),
    st.sampled_from(PODS), st.integers(0, 3),
)
step = st.one_of(
    st.lists(change, min_size=1, max_size=12).map(lambda b: ("append", b)),
    st.integers(0, 30).map(lambda k: ("compact", k)),
    st.sampled_from(NODES[:2]).map(lambda n: ("sync", n)),
)


def _sync(store: LogStore, replica: ReplicaStore) -> None:
    """What the sync protocol does: resume with events, else snapshot then events."""
    cur, state = replica.cursor(), replica.state()
    if store.resume_reason(replica.node, log_id=cur.log_id, applied_offset=cur.applied_offset, digest=state.digest):
        replica.install_snapshot(store.snapshot(replica.node))
    while events := store.read_node(replica.node, after=replica.cursor().applied_offset, limit=7):
        replica.apply(events, log_id=store.log_id)


# EVENTLOG_PROPERTY_EXAMPLES=1000 for a longer search
@settings(max_examples=int(os.environ.get("EVENTLOG_PROPERTY_EXAMPLES", "100")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=25))
def test_view_is_base_plus_replay_and_digests_hold(steps):
    with tempfile.TemporaryDirectory() as tmp:
        history = []  # every event ever appended, compacted or not
        with LogStore(Path(tmp) / "log") as store, \
                ReplicaStore(Path(tmp) / "r0", node=NODES[0]) as r0, ReplicaStore(Path(tmp) / "r1", node=NODES[1]) as r1:
            replicas = {NODES[0]: r0, NODES[1]: r1}
            for kind, arg in steps:
                if kind == "append":
                    history += store.append(arg)
                elif kind == "compact":
                    store.compact(keep_last=arg)
                else:
                    _sync(store, replicas[arg])
            assert verify_log(store) == []
            first, head = store.first_offset, store.head_offset
            retained = store.read(after=first - 1, limit=10**6)
            assert [e.offset for e in retained] == list(range(first, head + 1))
            for node in NODES:
                view = store.pods(node)
                mine = [e for e in retained if e.node == node]
                assert replay(store.base(node), mine) == view
                assert replay({}, [e for e in history if e.node == node]) == view
                st_ = store.node_state(node)
                assert (st_.digest if st_ else 0) == digest_of(view.values())
                for at in {first - 1, (first + head) // 2, head}:
                    if at >= 0:
                        assert log_state_at(store, node, at) == replay({}, [e for e in history if e.node == node and e.offset <= at])
            for replica in replicas.values():
                _sync(store, replica)
                assert replica.pods() == store.pods(replica.node)
                assert replica.state().digest == digest_of(store.pods(replica.node).values())
                assert verify_replica(replica) == []
                assert verify_replica_against(replica, store) == []
