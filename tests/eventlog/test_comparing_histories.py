"""One history: manager logs of one log_id hold the same bytes at every offset any two of them retain."""

from __future__ import annotations

import pytest

from eventlog import LogStore, ReplicaStore, RoleError
from eventlog.history import compare_histories
from tests.kit.builders import put
from tests.kit.files import log_records
from tests.kit.processes import run_cli


@pytest.fixture
def leader(tmp_path):
    """A leader's log of 10 events (2 nodes) and two standbys: one caught up and compacted, one behind."""
    with LogStore(tmp_path / "leader") as lead:
        for name in ("caught-up", "behind"):  # a standby starts as a copy of the leader's store: same log_id
            lead.copy_to(tmp_path / name)
        for v in range(5):
            lead.append([put("edge01", "a", v), put("edge02", "b", v)])
        for name, through in (("caught-up", 10), ("behind", 6)):
            with LogStore(tmp_path / name) as standby:
                standby.append_records(log_records(lead)[:through])
                if name == "caught-up":
                    standby.compact(keep_last=4)
        return tmp_path


def test_a_leader_and_its_standbys_hold_one_history(leader):
    report = compare_histories([leader / "leader", leader / "caught-up", leader / "behind"])
    assert report.one_history and report.first_disagreement is None
    with LogStore(leader / "leader", readonly=True) as lead:
        assert report.log_id == lead.log_id
    assert report.offsets_compared == 10  # 1..6 held by leader and behind, 7..10 by leader and caught-up
    res = run_cli("compare", str(leader / "leader"), str(leader / "caught-up"), str(leader / "behind"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok: one history: 3 stores of log ") and "10 offsets compared" in res.stdout


def test_a_deposed_leaders_tail_is_the_first_disagreement(leader):
    with LogStore(leader / "behind") as deposed:
        deposed.append([put("edge01", "a", 99)])  # offset 7: never the leader's
        deposed.append([put("edge01", "z")])  # 8
    report = compare_histories([leader / "leader", leader / "caught-up", leader / "behind"])
    d = report.first_disagreement
    assert d is not None and d.offset == 7 and set(d.paths) == {str(leader / "leader"), str(leader / "behind")}
    res = run_cli("compare", str(leader / "leader"), str(leader / "behind"))
    assert res.returncode == 1
    assert res.stdout.strip() == f"{leader / 'leader'} and {leader / 'behind'} hold different records at offset 7"
    assert res.stderr == "edge-eventlog: compare: 2 stores do not hold one history\n"


def test_stores_of_two_logs_are_two_histories(leader):
    with LogStore(leader / "other") as other:
        other.append([put("edge01", "a", 0)])
    report = compare_histories([leader / "leader", leader / "other"])
    assert report.first_disagreement is not None and report.first_disagreement.offset == 0
    assert "two histories" in report.first_disagreement.text
    assert run_cli("compare", str(leader / "leader"), str(leader / "other")).returncode == 1


def test_an_agent_replica_or_one_store_is_a_usage_error(leader):
    with ReplicaStore(leader / "agent", node="edge01"):
        pass
    with pytest.raises(RoleError, match="an agent replica; compare reads manager logs"):
        compare_histories([leader / "leader", leader / "agent"])
    for args, expect in (
        ((str(leader / "leader"),), "compare needs two stores or more"),
        ((str(leader / "leader"), str(leader / "agent")), "an agent replica; compare reads manager logs"),
        ((str(leader / "leader"), str(leader / "nowhere")), "nowhere: does not exist"),
    ):
        res = run_cli("compare", *args)
        lines = res.stderr.splitlines()
        assert res.returncode == 1 and len(lines) == 1 and expect in lines[0], res.stderr
        assert "Traceback" not in res.stderr
