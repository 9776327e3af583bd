"""Every status change of an agent reaches the graph, and an objective the cluster can never
run is refused (or, on a cluster that may grow, waited on with a decision saying why).

Simulated backends and clocks: fast and deterministic.
"""

from __future__ import annotations

import assay.agents.overrides as overrides_mod
import pytest
from assay.agents.agent import Agent
from assay.agents.objective import Objective
from assay.errors import UserInputError
from assay.scheduler.base import Resources, Shortfall, SimClock
from assay.scheduler.sim_backend import CurveSimulatorSource, SimBackend
from assay.simulations.curves import CurveSimulator
from assay.store.control import AgentStatus, MemoryControlStore, Override

SIM = CurveSimulator(seed=3, max_steps=20, metric="loss")


def objective(**kw):
    base = {"name": "sim", "project": "simproj", "train": "examples.digits:train",
            "metric": "loss", "mode": "min", "space": SIM.space.to_dict(),
            "budget": {"trials": 4, "wall_clock": "45s"}, "concurrency": 1,
            "searcher": "random", "seed": 1}
    base.update(kw)
    return Objective.from_dict(base)


def make(obj, *, cpus=2, gpus=0, autoscaling=False, control=None):
    clock = SimClock()
    backend = SimBackend(clock, CurveSimulatorSource(SIM), cpus=cpus, gpus=gpus,
                         autoscaling=autoscaling)
    agent = Agent(obj, backend, backend, control or MemoryControlStore(), ahead=False)
    return agent, backend, clock


def stored(agent):
    return agent.control.get_agent(agent.agent_id)


def override(agent, action, reason):
    agent.control.add_override(Override(agent.agent_id, action, {}, "alice", reason,
                                        hlc=str(agent.hlc.now()), time=0.0))


def kinds(agent):
    return [d.kind for d in agent.control.decisions(agent_id=agent.agent_id)]


# -- 1. a status change is saved in the step that makes it --------------------------------------
def test_an_agent_that_finishes_on_its_wall_clock_with_nothing_else_to_save_is_stored_finished():
    # Waiting on a cluster that may grow, it launches nothing: when the wall clock runs out,
    # the finish is the only change of the step, and must still reach the graph.
    agent, _backend, clock = make(objective(resources={"cpus": 1, "gpus": 1}), autoscaling=True)
    agent.step()
    assert stored(agent).status is AgentStatus.RUNNING
    clock.advance(46.0)
    agent.step()
    assert agent.status is AgentStatus.FINISHED
    assert stored(agent).status is AgentStatus.FINISHED  # was still "running"
    assert kinds(agent)[-1] == "finish"


def test_run_returns_with_the_final_status_stored():
    agent, _backend, _clock = make(objective(resources={"cpus": 1, "gpus": 1}), autoscaling=True)
    agent.run(poll_interval=5.0)  # the SimClock's sleep advances simulated time
    assert stored(agent).status is AgentStatus.FINISHED
    assert stored(agent).state == agent.state()


def test_a_paused_agent_whose_wall_clock_runs_out_is_stored_finished(monkeypatch):
    # Paused before any trial ran (it waited on a growing cluster): the wall clock ends it
    # in a step where nothing else happens.
    monkeypatch.setattr(overrides_mod, "OVERRIDE_POLL_S", 0.0)
    agent, _backend, clock = make(objective(resources={"cpus": 1, "gpus": 1}), autoscaling=True)
    agent.step()
    override(agent, "pause", "lunch")
    agent.step()
    assert stored(agent).status is AgentStatus.PAUSED
    clock.advance(46.0)
    agent.step()
    assert agent.status is AgentStatus.FINISHED
    assert stored(agent).status is AgentStatus.FINISHED


def test_a_stopped_agent_and_a_spent_trial_budget_are_stored(monkeypatch):
    monkeypatch.setattr(overrides_mod, "OVERRIDE_POLL_S", 0.0)
    control = MemoryControlStore()
    agent, backend, clock = make(objective(budget={"trials": 1}), control=control)
    for _ in range(500):
        agent.step()
        if agent.status is not AgentStatus.RUNNING:
            break
        t = backend.next_event_time()
        clock.advance_to(t if t is not None else clock.now() + 1.0)
    assert stored(agent).status is AgentStatus.FINISHED
    other, _b, _c = make(objective(), control=control)
    other.step()
    override(other, "stop", "enough")
    other.step()
    assert stored(other).status is AgentStatus.STOPPED


# -- 2. resources the cluster can never supply ---------------------------------------------------
def test_an_objective_larger_than_a_fixed_cluster_fails_its_agent_at_once_and_says_why():
    agent, _backend, _clock = make(objective(resources={"cpus": 1, "gpus": 1}))
    agent.step()
    assert agent.status is AgentStatus.FAILED and not agent.trials
    assert stored(agent).status is AgentStatus.FAILED
    last = agent.control.decisions(agent_id=agent.agent_id)[-1]
    assert last.kind == "finish"
    assert "1 GPU" in last.summary and "0 GPU" in last.summary
    assert last.explanation["requested"] == {"CPU": 1.0, "GPU": 1.0}
    assert last.explanation["cluster"] == {"CPU": 2.0, "GPU": 0.0}
    assert "resources" in last.explanation["hint"] and "add nodes" in last.explanation["hint"]
    assert agent.failure.startswith("no trial can run") and "gpus: 0" in agent.failure_hint
    assert not agent.live  # run() returns instead of waiting forever


def test_on_a_cluster_that_may_grow_the_agent_waits_says_why_once_and_launches_when_it_grows():
    agent, backend, clock = make(objective(resources={"cpus": 1, "gpus": 1}), autoscaling=True)
    for _ in range(5):
        agent.step()
        clock.advance(1.0)
    assert agent.status is AgentStatus.RUNNING and not agent.trials
    waits = [d for d in agent.control.decisions(agent_id=agent.agent_id) if d.kind == "wait"]
    assert len(waits) == 1 and "grow" in waits[0].summary and "GPU" in waits[0].summary
    assert waits[0].explanation["may_grow"] is True
    backend.resize(gpus=1)
    agent.step()
    assert len(agent.trials) == 1


def test_a_busy_cluster_is_waited_on_without_a_decision():
    agent, _backend, _clock = make(objective(concurrency=2, budget={"trials": 4}), cpus=1)
    agent.step()
    agent.step()
    assert agent.status is AgentStatus.RUNNING and len(agent.trials) == 1
    assert "wait" not in kinds(agent) and "finish" not in kinds(agent)


def test_sim_backend_reports_its_shortfall_and_refuses_such_a_launch():
    b = SimBackend(SimClock(), CurveSimulatorSource(SIM), cpus=2, gpus=0)
    assert b.shortfall(Resources(cpus=2)) is None
    s = b.shortfall(Resources(cpus=1, gpus=1))
    assert isinstance(s, Shortfall) and s.missing == ["GPU"] and not s.may_grow
    assert b.capacity(Resources(cpus=1, gpus=1)) == 0
    assert b.shortfall(Resources(cpus=3)).missing == ["CPU"]
    from assay.scheduler.base import TrialSpec

    with pytest.raises(UserInputError, match="1 GPU"):
        b.launch(TrialSpec("tgpu0001", "p", {}, resources=Resources(cpus=1, gpus=1)))


def test_a_shortfall_names_custom_resources_too():
    s = Shortfall.of({"CPU": 1, "TPU": 4}, {"CPU": 8, "TPU": 2})
    assert s is not None and s.missing == ["TPU"] and "4 TPU" in s.message
    assert Shortfall.of({"CPU": 1, "TPU": 4}, {"CPU": 8, "TPU": 8}) is None


# -- 3. a duration the budget cannot read names the key the user wrote ---------------------------
def test_an_unreadable_duration_names_the_users_key_and_the_accepted_forms():
    with pytest.raises(UserInputError) as e:
        objective(budget={"trials": 2, "wall_clock": "10 minutes"})
    assert "budget.wall_clock" in e.value.message and "wall_clock_s" not in e.value.message
    assert "10 minutes" in e.value.message
    assert all(f in e.value.hint for f in ("45s", "10m", "2h"))
    with pytest.raises(UserInputError) as e:
        objective(budget={"trials": 2, "wall_clock": 0})
    assert "budget.wall_clock" in e.value.message
    with pytest.raises(UserInputError) as e:
        objective(budget={"gpu_hours": "lots"})
    assert "budget.gpu_hours" in e.value.message and "hours" in e.value.hint
    from assay.agents.objective import check_override

    with pytest.raises(UserInputError) as e:
        check_override("budget", {"budget": {"wall_clock": "10 minutes"}},
                       budget={"trials": 2}, space=None)
    assert "params.budget.wall_clock" in e.value.message and "10m" in e.value.hint


# -- custom Ray resources ---------------------------------------------------------------------
def test_an_objective_asking_for_a_custom_resource_runs_as_many_trials_as_the_cluster_has():
    """``resources: {custom: {A100: 1}}`` steers trials to the nodes that declare A100s: with
    two of them, four concurrent slots run two trials at a time."""
    obj = objective(resources={"cpus": 1, "custom": {"A100": 1}}, concurrency=4,
                    budget={"trials": 6, "wall_clock": "1h"})
    assert Objective.from_dict(obj.to_dict()).resources == {"cpus": 1, "custom": {"A100": 1}}
    clock = SimClock()
    backend = SimBackend(clock, CurveSimulatorSource(SIM), cpus=8, resources={"A100": 2})
    agent = Agent(obj, backend, backend, MemoryControlStore(), ahead=False)
    peak = 0
    while agent.status is AgentStatus.RUNNING and clock.now() < 3600:
        agent.step()
        peak = max(peak, len(backend.running()))
        clock.advance(1.0)
    assert agent.status is AgentStatus.FINISHED
    assert peak == 2 and len(agent.trials) == 6
    ledger = agent.ledger.state_dict()
    assert next(iter(ledger["runs"].values()))["custom"] == {"A100": 1.0}
    agent.ledger.load_state_dict(ledger)  # a restarted agent reads it back


def test_an_objective_asking_for_a_custom_resource_the_cluster_lacks_is_refused():
    agent, _backend, _clock = make(objective(resources={"cpus": 1, "custom": {"TPU": 1}}))
    agent.step()
    assert agent.status is AgentStatus.FAILED and not agent.trials
    last = agent.control.decisions(agent_id=agent.agent_id)[-1]
    assert "1 TPU" in last.summary and "0 TPU" in last.summary
    assert last.explanation["requested"] == {"CPU": 1.0, "TPU": 1.0}
    assert "custom: {TPU: 0}" in last.explanation["hint"]


@pytest.mark.parametrize(("resources", "says"), [
    ({"cpus": 1, "custom": {"GPU": 1}}, "Ray's own"),
    ({"cpus": 1, "custom": {"A100": -1}}, ">= 0"),
    ({"cpus": 1, "custom": "A100"}, "mapping"),
])
def test_bad_custom_resources_fail_the_declaration(resources, says):
    with pytest.raises(UserInputError, match=says):
        objective(resources=resources)
