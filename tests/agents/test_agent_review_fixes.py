"""Fixes from a researcher's review: resuming with warm-start evidence, a failed agent's trials,
a used-up grid, a searcher that raises, searcher options and train functions checked at
declaration, the best trial after a restore.

Simulated backends and clocks: fast and deterministic (one test drives the suggester thread).
"""

from __future__ import annotations

import time

import pytest
from assay.agents.agent import Agent
from assay.agents.objective import Objective
from assay.errors import UserInputError
from assay.policies import RandomSearcher, TrialResult, TrialStatus
from assay.scheduler.base import SimClock
from assay.scheduler.sim_backend import CurveSimulatorSource, SimBackend
from assay.simulations.curves import CurveSimulator
from assay.store.control import AgentStatus, MemoryControlStore

SIM = CurveSimulator(seed=3, max_steps=20, metric="loss", crash_rate=0.3)


def objective(**kw):
    base = {"name": "sim", "project": "simproj", "train": "examples.digits:train",
            "metric": "loss", "mode": "min", "space": SIM.space.to_dict(),
            "budget": {"trials": 40}, "concurrency": 4, "searcher": "random",
            "stoppers": [{"asha": {"max_step": 19}}, "median"], "seed": 1}
    base.update(kw)
    return Objective.from_dict(base)


class RecordingBackend(SimBackend):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.ended = []  # runs it was asked to finish without an attempt

    def end_unlaunched(self, project, trial_id, status, reason):
        self.ended.append((trial_id, status))


def make(obj=None, control=None, agent_id=None, prior=None, ahead=False, searcher=None):
    clock = SimClock()
    backend = RecordingBackend(clock, CurveSimulatorSource(SIM), cpus=4)
    agent = Agent(obj or objective(), backend, backend, control or MemoryControlStore(),
                  agent_id=agent_id, prior=prior, ahead=ahead, searcher=searcher)
    return agent, backend, clock


def run_for(agent, backend, clock, steps):
    for _ in range(steps):
        agent.step()
        if agent.status not in (AgentStatus.RUNNING, AgentStatus.PAUSED):
            return
        t = backend.next_event_time()
        clock.advance_to(t if t is not None else clock.now() + 1.0)


def decisions(agent, kind=None):
    return [d for d in agent.control.decisions(agent_id=agent.agent_id)
            if kind is None or d.kind == kind]


# -- 1. a resumed agent's warm-start evidence holds its own trials ------------------------------
def test_a_resumed_agent_given_its_own_completed_trials_as_prior_drops_them_and_runs_on():
    control = MemoryControlStore()
    a, b1, c1 = make(control=control)
    for _ in range(500):  # until a trial completed, with others still running
        run_for(a, b1, c1, 1)
        done = [t for t in a.trials.values() if t.status is TrialStatus.COMPLETED]
        if done and len(a.active) >= 2:
            break
    assert done and a.active  # something to warm-start with, something to relaunch
    a.close()
    # What _build_agent passes on a resume (`assay run --agent-id`, a Ray actor restart): every
    # completed run of the project, this agent's own trials among them.
    other = TrialResult("otheragent1", dict(done[0].config), TrialStatus.COMPLETED, (), 0.5)
    prior = [t.result() for t in done] + [other]
    again, b2, c2 = make(control=control, agent_id=a.agent_id, prior=prior)
    assert [p.trial_id for p in again.prior] == ["otheragent1"]
    ids = [t.trial_id for t in again._history()]
    assert len(ids) == len(set(ids))
    run_for(again, b2, c2, 10_000)  # stoppers and searcher read the history: no duplicate
    assert again.status is AgentStatus.FINISHED and not again.active


# -- 1b. an agent that fails leaves no trial running ------------------------------------------
def test_an_agent_whose_loop_crashes_stops_and_ends_its_trials_with_decisions(monkeypatch):
    from assay.agents.runner import _AgentLoop

    agent, backend, clock = make()
    run_for(agent, backend, clock, 3)
    running = [t.trial_id for t in agent.active]
    assert running

    def boom():
        raise RuntimeError("stopper blew up")

    monkeypatch.setattr(agent, "_stop_hopeless", boom)
    loop = _AgentLoop.__new__(_AgentLoop)  # what runs in the Ray actor, without Ray
    loop.agent, loop.poll_interval, loop.error = agent, 0.0, ""
    loop._loop()
    assert "stopper blew up" in loop.error
    assert agent.status is AgentStatus.FAILED and "RuntimeError: stopper blew up" in agent.failure
    assert not agent.active and not backend.running()
    assert all(agent.trials[t].status is TrialStatus.STOPPED for t in running)
    stops = {d.trial_id for d in decisions(agent, "stop") if "the agent failed" in d.summary}
    assert stops == set(running)
    assert {tid for tid, st in backend.ended if st == "stopped"} >= set(running)
    assert any(d.kind == "finish" and "RuntimeError" in d.summary for d in decisions(agent))
    assert agent.control.get_agent(agent.agent_id).status is AgentStatus.FAILED


def test_a_restarted_agent_that_fails_before_relaunching_ends_its_lost_trials_failed():
    control = MemoryControlStore()
    a, b1, c1 = make(control=control)
    run_for(a, b1, c1, 3)
    lost = [t.trial_id for t in a.active]
    a.close()
    again, b2, _ = make(control=control, agent_id=a.agent_id)
    again.fail("ValueError: x")
    assert all(again.trials[t].status is TrialStatus.FAILED for t in lost)
    assert sorted(tid for tid, st in b2.ended if st == "failed") == sorted(lost)
    stored = control.get_agent(a.agent_id)
    assert stored.status is AgentStatus.FAILED
    assert not [t for t in stored.state["trials"].values() if t["status"] in
                ("running", "pending")]


# -- 2. a grid that is used up ends the search --------------------------------------------------
GRID_SPACE = {"lr": {"loguniform": [1e-4, 1e-1]}, "act": {"choice": ["relu", "tanh"]},
              "depth": 2, "width": 64, "dropout": 0.1}


def grid_objective():
    return objective(space=GRID_SPACE, searcher={"grid": {"points_per_dim": 2}},
                     budget={"trials": 8}, concurrency=2, stoppers=[])


def test_an_exhausted_grid_finishes_with_search_space_exhausted_and_no_random_fill():
    agent, backend, clock = make(grid_objective())
    run_for(agent, backend, clock, 10_000)
    assert agent.status is AgentStatus.FINISHED
    assert len(agent.trials) == 4  # the grid's 2 x 2 points, not the budget's 8
    launches = decisions(agent, "launch")
    assert all(d.explanation["method"] == "grid" for d in launches)
    assert decisions(agent, "finish")[-1].summary == "search space exhausted"


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.005)


def test_an_exhausted_grid_also_finishes_with_suggestions_prepared_ahead():
    agent, backend, clock = make(grid_objective(), ahead=True)
    sg = agent._suggester
    try:
        wait_for(lambda: sg.answers > 0)
        for _ in range(200):
            # Every take asks the thread again: step once it answered the last request (a
            # free slot finding the queue empty before that is filled at random, by design).
            wait_for(lambda: not sg.want.is_set() and not sg.busy)
            time.sleep(0.01)  # past the thread's window between clearing want and busy
            wait_for(lambda: not sg.want.is_set() and not sg.busy)
            agent.step()
            if agent.status is not AgentStatus.RUNNING:
                break
            t = backend.next_event_time()
            clock.advance_to(t if t is not None else clock.now() + 1.0)
    finally:
        agent.close()
    assert agent.status is AgentStatus.FINISHED
    assert decisions(agent, "finish")[-1].summary == "search space exhausted"
    launches = decisions(agent, "launch")
    assert sum(d.explanation["method"] == "grid" for d in launches) == 4  # the whole grid
    # Under load a slot can free before the thread answered: filled at random, by design,
    # and labelled so (never as a grid point, never as "still fitting").
    for d in launches:
        assert d.explanation["method"] == "grid" or "no suggestion ready yet" in \
            d.explanation["why"], d.explanation


# -- 3. a searcher that raises is recorded, and its fills say so --------------------------------
class FailingSearcher(RandomSearcher):
    """Answers twice, then raises."""

    calls = 0

    def suggest(self, history, n=1):
        self.calls += 1
        if self.calls > 2:
            raise RuntimeError("GP fit blew up on a loss of 1e300")
        return super().suggest(history, n)


def test_a_searcher_that_raises_gets_one_decision_and_truthful_random_fills():
    obj = objective(budget={"trials": 12}, concurrency=2)
    agent, backend, clock = make(obj, searcher=FailingSearcher(SIM.space, seed=1))
    run_for(agent, backend, clock, 10_000)
    assert agent.status is AgentStatus.FINISHED and len(agent.trials) == 12
    failed = [d for d in decisions(agent, "fail") if not d.trial_id]
    assert len(failed) == 1  # once per distinct failure, not once per launch
    assert "RuntimeError: GP fit blew up on a loss of 1e300" in failed[0].summary
    assert failed[0].explanation["error"] == "RuntimeError: GP fit blew up on a loss of 1e300"
    assert "Traceback" in failed[0].explanation["traceback"]
    fills = [d for d in decisions(agent, "launch") if d.explanation["method"] == "random fill"]
    assert len(fills) == 10
    assert all(d.explanation["why"] == "the searcher failed: RuntimeError: GP fit blew up on a "
               "loss of 1e300" for d in fills)


def test_a_searcher_failing_in_the_suggester_thread_is_recorded():
    obj = objective(budget={"trials": 6}, concurrency=2)
    searcher = FailingSearcher(SIM.space, seed=1)
    searcher.calls = 2  # raises from the first call
    agent = make(obj, searcher=searcher, ahead=True)[0]
    try:
        wait_for(lambda: agent._suggester.error)
        agent.step()
    finally:
        agent.close()
    failed = [d for d in decisions(agent, "fail") if not d.trial_id]
    assert len(failed) == 1 and "GP fit blew up" in failed[0].summary
    launches = decisions(agent, "launch")
    assert launches and all("the searcher failed: RuntimeError" in d.explanation["why"]
                            for d in launches)


# -- 4. searcher options are checked when the objective is declared -----------------------------
@pytest.mark.parametrize(("searcher", "match"), [
    ({"botorch": {"n_inital": 3}}, r"unknown option 'n_inital'(.|\n)*did you mean 'n_initial'"),
    ({"botorch": {"initial_design": "lhs"}}, "searcher botorch: initial_design must be"),
    ({"grid": {"points_per_dim": 0}}, "searcher grid: points_per_dim must be a positive int"),
    ({"tpe": {"foo": 1}}, r"searcher tpe: unknown option 'foo'(.|\n)*n_startup_trials"),
    ({"random": {"foo": 1}}, "random takes no options"),
    (["botorch", "tpe"], "one searcher, got 2: botorch, tpe"),
    ({"botorch": {"mode": "max"}}, "set mode at the objective's top level"),
])
def test_bad_searcher_options_are_refused_at_declaration(searcher, match):
    with pytest.raises(UserInputError, match=match):
        objective(searcher=searcher)


def test_good_searcher_options_are_accepted():
    assert objective(searcher={"botorch": {"n_initial": 3}}).searcher_spec["n_initial"] == 3
    assert objective(searcher={"tpe": {"n_startup_trials": 4}}).searcher_spec["name"] == "tpe"


# -- 5. a train function the agent's actor cannot import is refused -----------------------------
def test_a_train_function_defined_in_main_or_nested_is_refused_at_declaration():
    def train(config, run):
        return {}

    with pytest.raises(UserInputError, match="cannot be imported by that name"):
        objective(train=train)
    train.__module__ = "__main__"
    with pytest.raises(UserInputError, match="defined in __main__"):
        objective(train=train)
    with pytest.raises(UserInputError, match="names __main__"):
        objective(train="__main__:train")
    from assay.examples.digits import train as importable

    assert objective(train=importable).to_dict()["train"] == "assay.examples.digits:train"


# -- 6. only a completed trial can be the best after a restore ----------------------------------
def test_a_restored_agent_picks_its_best_among_completed_trials_only():
    from assay.store.control import AgentRow

    control = MemoryControlStore()
    obj = objective()
    cfg = {"lr": 0.01, "width": 64, "depth": 2, "dropout": 0.1, "act": "relu"}

    def trial(status, final, lr):
        return {"config": {**cfg, "lr": lr}, "status": status, "final": final,
                "origin": "searcher", "reason": "", "curve": [[0, final]]}

    state = {"trials": {"done1": trial("completed", 0.5, 0.01),
                        "done2": trial("completed", 0.4, 0.02),
                        "stop1": trial("stopped", 0.1, 0.03),  # its last value, not a result
                        "fail1": trial("failed", 0.05, 0.04)},
             "best": "done2", "concurrency": 4}
    control.save_agent(AgentRow("agrestore01", "sim", "simproj", obj.to_dict(), state=state,
                                hlc="1"))
    again = make(obj, control=control, agent_id="agrestore01")[0]
    assert again.best is not None and again.best.trial_id == "done2"
