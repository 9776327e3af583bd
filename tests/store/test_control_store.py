"""Contract of the agents' control store, run against the in-memory and LanceDB versions."""

from __future__ import annotations

import pytest
from assay.store.control import (
    AgentRow,
    AgentStatus,
    Decision,
    LanceControlStore,
    MemoryControlStore,
    Override,
    OverrideStatus,
)
from assay.store.ingest import IngestLock
from assay.store.lance import LanceStore


@pytest.fixture(params=["memory", pytest.param("lance", marks=pytest.mark.integration)])
def control(request, tmp_path):
    if request.param == "memory":
        return MemoryControlStore()
    return LanceControlStore(LanceStore(tmp_path), IngestLock(tmp_path))


def test_agents_round_trip_and_update(control):
    a = AgentRow("ag1", "obj", "p", {"metric": "acc"}, state={"n": 1}, hlc="1")
    control.save_agent(a)
    control.save_agent(AgentRow("ag1", "obj", "p", {"metric": "acc"}, AgentStatus.PAUSED,
                                state={"n": 2}, hlc="2"))
    control.save_agent(AgentRow("ag2", "obj2", "q", {}, hlc="3"))
    got = control.get_agent("ag1")
    assert got.status is AgentStatus.PAUSED and got.state == {"n": 2}
    assert [x.agent_id for x in control.list_agents("p")] == ["ag1"]
    assert len(control.list_agents()) == 2 and control.get_agent("none") is None


def test_decisions_come_back_in_hlc_order_with_evidence(control):
    ds = [Decision("ag1", "p", f"t{i}", "launch", f"launch {i}", {"acq": i / 10}, hlc=f"{9 - i}",
                   time=0.0) for i in range(3)]
    control.add_decisions(ds)
    got = control.decisions(agent_id="ag1")
    assert [d.trial_id for d in got] == ["t2", "t1", "t0"]
    assert got[0].explanation == {"acq": 0.2}
    assert [d.trial_id for d in control.decisions(trial_id="t1")] == ["t1"]


def test_overrides_pending_then_resolved(control):
    o = Override("ag1", "pause", {}, "alice", "checking a bug", hlc="5", time=1.0)
    control.add_override(o)
    control.add_override(Override("ag2", "stop", {}, "bob", "done", hlc="6", time=1.0))
    pend = control.overrides("ag1", OverrideStatus.PENDING)
    assert [(x.action, x.actor, x.reason) for x in pend] == [("pause", "alice", "checking a bug")]
    control.resolve_override(o.override_id, OverrideStatus.APPLIED, "paused")
    assert control.overrides("ag1", OverrideStatus.PENDING) == []
    assert control.overrides("ag1")[0].result == "paused"


def test_a_lease_is_held_by_the_first_claimer(control):
    assert control.claim_lease("p/cfg1", "ag1", "t1", "1") is None
    assert control.claim_lease("p/cfg1", "ag1", "t1", "2") is None  # idempotent
    assert control.claim_lease("p/cfg1", "ag2", "t9", "3") == "t1"
    assert control.claim_lease("p/cfg2", "ag2", "t9", "4") is None


def test_a_project_limit_caps_leases_across_agents(control):
    assert control.claim_lease("p_1/a", "ag1", "t1", "1", limit=("p_1/", 2)) is None
    assert control.claim_lease("p_1/b", "ag2", "t2", "2", limit=("p_1/", 2)) is None
    assert control.claim_lease("p_1/c", "ag1", "t3", "3", limit=("p_1/", 2)) == "project budget"
    assert control.claim_lease("pX1/c", "ag1", "t3", "3", limit=("pX1/", 2)) is None  # '_' literal
    assert control.count_leases("p_1/") == 2


def test_stored_decisions_names_only_the_agents_ids_already_stored(control):
    """What the server checks before storing a retried batch: only the batch's ids are
    looked up (not every decision of the agent, which grew with each step)."""
    control.add_decisions([Decision("ag1", "p", "t1", "launch", "x", {}, "1", 0.0,
                                    decision_id="d1"),
                           Decision("ag2", "p", "t1", "launch", "x", {}, "2", 0.0,
                                    decision_id="d2")])
    assert control.stored_decisions("ag1", ["d1", "d2", "d9"]) == {"d1"}
    assert control.stored_decisions("ag1", []) == set()
    assert control.stored_decisions("ag3", ["d1"]) == set()
    assert control.stored_decisions("ag1", ["d'1", "d1"]) == {"d1"}  # quoted, not injected
