"""Human overrides and their edge cases on the simulated backend: bad params, restarts,
space changes, stops, pins, re-evaluation within the budget (fast, deterministic)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import assay.agents.agent as agent_mod
import assay.agents.overrides as overrides_mod
import pytest
from assay.agents.agent import Agent
from assay.agents.objective import Objective
from assay.errors import UserInputError
from assay.policies import Suggestion, TrialStatus, as_space
from assay.policies.searchers.basic import RandomSearcher
from assay.scheduler.base import SimClock
from assay.scheduler.budget import Budget
from assay.scheduler.sim_backend import CurveSimulatorSource, SimBackend
from assay.store.control import AgentStatus, MemoryControlStore, Override, OverrideStatus
from test_agent_sim import SIM, FakeArtifacts, make, objective, override, restart

NARROW = {"lr": {"loguniform": [1e-3, 1e-2]}, "width": 64, "depth": 2, "dropout": 0.0,
          "act": "relu"}
PIN = {"lr": 0.001, "width": 128, "depth": 3, "dropout": 0.1, "act": "relu"}


@pytest.fixture(autouse=True)
def _every_step_reads_overrides(monkeypatch):
    monkeypatch.setattr(overrides_mod, "OVERRIDE_POLL_S", 0.0)


def last(control, agent):
    return control.overrides(agent.agent_id)[-1]


def steps(agent, backend, clock, n, *, until=None):
    for _ in range(n):
        agent.step()
        if until is not None and until():
            return
        clock.advance_to(backend.next_event_time() or clock.now() + 1)


# -- 1. bad params never kill the agent ---------------------------------------------------------
@pytest.mark.parametrize(("action", "params", "says"), [
    ("budget", {"budget": "trials=3"}, "params.budget must be a mapping"),
    ("space", {"space": [1, 2]}, "params.space must be a mapping"),
    ("pin", {"config": "lr=0.1"}, "params.config must be a mapping"),
    ("budget", {}, "budget needs params.budget"),
    ("pause", {"trial_id": 123}, "pause does not take params"),
])
def test_a_mistyped_override_param_is_rejected_and_the_agent_keeps_running(action, params,
                                                                           says):
    control = MemoryControlStore()
    agent, _, _ = make(control=control)
    agent.step()
    override(control, agent, action, params, "typo")
    agent.step()
    o = last(control, agent)
    assert o.status is OverrideStatus.REJECTED and says in o.result
    assert agent.status is AgentStatus.RUNNING


def test_an_override_that_fails_unexpectedly_is_rejected_with_the_reason(monkeypatch):
    control = MemoryControlStore()
    agent, _, _ = make(control=control)
    agent.step()

    def broken(new):
        raise RuntimeError("searcher exploded")
    monkeypatch.setattr(agent, "_set_space", broken)
    override(control, agent, "space", {"space": NARROW}, "narrow")
    agent.step()
    o = last(control, agent)
    assert o.status is OverrideStatus.REJECTED and "RuntimeError: searcher exploded" in o.result
    assert agent.status is AgentStatus.RUNNING
    ds = [d for d in control.decisions(agent_id=agent.agent_id) if d.kind == "override"]
    assert ds[-1].explanation["status"] == "rejected"


# -- 2. decisions: str trial ids, a failed write is retried --------------------------------------
class StrictControl(MemoryControlStore):
    """Refuses what a LanceDB decisions table refuses (a non-str trial id), and can fail
    the next ``fail`` writes the way a store under trouble does."""

    def __init__(self):
        super().__init__()
        self.fail = 0

    def add_decisions(self, decisions):
        if self.fail:
            self.fail -= 1
            raise OSError("disk full")
        for d in decisions:
            if not isinstance(d.trial_id, str):
                raise TypeError(f"Expected bytes, got a {type(d.trial_id).__name__!r} object")
        super().add_decisions(decisions)


def test_a_non_str_trial_id_in_params_loses_no_decision():
    control = StrictControl()
    agent, backend, clock = make(control=control)
    agent.step()
    override(control, agent, "stop_run", {"trial_id": 123}, "note")
    agent._decide(456, "note", "a caller passing an int", {})  # type: ignore[arg-type]
    steps(agent, backend, clock, 5)
    assert last(control, agent).status is OverrideStatus.REJECTED
    kinds = Counter(d.kind for d in control.decisions(agent_id=agent.agent_id))
    assert kinds["override"] == 1 and kinds["note"] == 1 and kinds["launch"] >= 4
    assert not agent._pending_decisions


def test_a_decision_batch_that_fails_to_write_is_kept_and_written_at_the_next_step():
    control = StrictControl()
    agent, _, _ = make(control=control)
    control.fail = 1
    agent.step()  # 4 launch decisions: the write fails, the step does not
    assert not control.decisions(agent_id=agent.agent_id)
    assert len(agent._pending_decisions) == 4
    agent.step()
    launches = [d for d in control.decisions(agent_id=agent.agent_id) if d.kind == "launch"]
    assert {d.trial_id for d in launches} == set(agent.trials)


# -- 4. a restart keeps the overridden budget and space ------------------------------------------
def test_a_restarted_agent_keeps_the_budget_and_space_people_set():
    control = MemoryControlStore()
    obj = objective(stoppers=[], budget={"trials": 40})
    agent, _, _ = make(obj, control=control)
    agent.step()
    override(control, agent, "budget", {"budget": {"trials": 6}}, "cut costs")
    override(control, agent, "space", {"space": NARROW}, "narrow")
    agent.step()
    [o] = [o for o in control.overrides(agent.agent_id) if o.action == "budget"]
    assert o.result.startswith("budget now 6 trials"), o.result  # not a Python dict
    before = set(agent.trials)
    agent.close()
    again, b2, c2 = restart(control, agent.agent_id, obj)
    assert again.budget.trials == 6 and again.ledger.budget.trials == 6
    assert again.space == as_space(NARROW)
    steps(again, b2, c2, 3000, until=lambda: again.status is not AgentStatus.RUNNING)
    assert again.ledger.trials_launched == 6
    new = [t for tid, t in again.trials.items() if tid not in before]
    assert new and all(as_space(NARROW).contains(t.config) for t in new)


# -- 5. re-evaluation launches like any config -------------------------------------------------
def reeval_agent(monkeypatch, **kw):
    t = [0.0]
    monkeypatch.setattr(agent_mod.time, "monotonic", lambda: t[0])
    space = {**SIM.space.to_dict(), "data": "data:v0"}
    obj = objective(space=space, concurrency=2, stoppers=[], reevaluate_on=["data"],
                    reevaluate_top=3, **kw)
    clock = SimClock()
    backend = SimBackend(clock, CurveSimulatorSource(SIM), cpus=4)
    fake, control = FakeArtifacts(), MemoryControlStore()
    agent = Agent(obj, backend, backend, control, ahead=False, artifacts=fake)

    def tick():
        agent.step()
        t[0] += 3
        clock.advance_to(backend.next_event_time() or clock.now() + 1)
    return agent, control, fake, tick


def test_reevaluation_never_overruns_the_trial_budget_and_says_why(monkeypatch):
    agent, control, fake, tick = reeval_agent(monkeypatch, budget={"trials": 6},
                                              project_budget={"trials": 6})
    while not (agent.ledger.trials_launched == 6 and agent.active and sum(
            x.status is TrialStatus.COMPLETED for x in agent.trials.values()) >= 3):
        tick()
    fake.latest["data"] = 1
    for _ in range(50):
        tick()
        assert len(agent.active) <= agent.concurrency
    assert agent.ledger.trials_launched == 6 and control.count_leases("simproj/") == 6
    skips = [d for d in control.decisions() if d.kind == "skip"]
    assert len(skips) == 3 and all("trial budget reached" in d.summary for d in skips)
    assert all(d.explanation["reevaluation"] for d in skips)


def test_reevaluation_waits_for_free_slots_and_claims_leases(monkeypatch):
    agent, control, fake, tick = reeval_agent(monkeypatch, budget={"trials": 30})
    while sum(x.status is TrialStatus.COMPLETED for x in agent.trials.values()) < 3:
        tick()
    fake.latest["data"] = 1
    for _ in range(100):
        tick()
        assert len(agent.active) <= agent.concurrency
        if len([x for x in agent.trials.values() if x.origin == "reevaluate"]) == 3:
            break
    re = [x for x in agent.trials.values() if x.origin == "reevaluate"]
    assert len(re) == 3
    launches = {d.trial_id: d for d in control.decisions() if d.kind == "launch"}
    assert all(launches[x.trial_id].explanation["reevaluation"] for x in re)
    key = agent.space.key
    assert all(control.claim_lease(f"simproj/{key(x.config)}", "other", "zzzz", "0")
               == x.trial_id for x in re)  # leased to the re-run: no one else runs it
    assert {new for _, new in fake.links} == {x.trial_id for x in re}


# -- 6. pause, change the space, resume ---------------------------------------------------------
def test_a_paused_agent_given_a_new_space_does_not_finish_and_resumes_on_it():
    small = {"lr": {"choice": [0.001, 0.01]}, "width": 64, "depth": 2, "dropout": 0.0,
             "act": "relu"}
    wide = {**small, "lr": {"loguniform": [1e-5, 1.0]}, "width": {"integer": [16, 512]}}
    control = MemoryControlStore()
    agent, backend, clock = make(objective(searcher="grid", space=small, stoppers=[],
                                           concurrency=2, budget={"trials": 40}), control)
    steps(agent, backend, clock, 100, until=lambda: agent._no_more)
    assert agent.active
    override(control, agent, "pause", {}, "let me widen the space")
    override(control, agent, "space", {"space": wide}, "wider")
    steps(agent, backend, clock, 100, until=lambda: not agent.active)
    assert agent.status is AgentStatus.PAUSED and not agent.active
    override(control, agent, "resume", {}, "go on")
    agent.step()
    assert last(control, agent).status is OverrideStatus.APPLIED
    assert len(agent.trials) > 2 and agent.status is AgentStatus.RUNNING


def test_a_paused_agent_whose_budget_is_spent_finishes():
    control = MemoryControlStore()
    agent, backend, clock = make(objective(stoppers=[], budget={"trials": 4}), control)
    agent.step()
    override(control, agent, "pause", {}, "hold")
    steps(agent, backend, clock, 200, until=lambda: agent.status is AgentStatus.FINISHED)
    assert agent.status is AgentStatus.FINISHED
    assert "trial budget" in control.decisions(agent_id=agent.agent_id)[-1].summary


# -- 7. space changes: stale suggestions and pins ------------------------------------------------
class SlowSearcher(RandomSearcher):
    """Stands for a BoTorch fit: suggests, then waits until released."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.gate = threading.Event()
        self.inside = threading.Event()

    def suggest(self, history, n=1):
        out = super().suggest(history, n)
        self.inside.set()
        self.gate.wait(10)
        return out


def test_a_suggestion_from_before_a_space_change_is_never_launched():
    obj = objective(stoppers=[], budget={"trials": 40}, concurrency=2)
    clock = SimClock()
    backend = SimBackend(clock, CurveSimulatorSource(SIM), cpus=4)
    control = MemoryControlStore()
    slow = SlowSearcher(as_space(dict(obj.space)), mode="min", seed=1)
    agent = Agent(obj, backend, backend, control, ahead=True, searcher=slow)
    try:
        assert slow.inside.wait(10)  # the thread is inside the old searcher's suggest
        override(control, agent, "space", {"space": NARROW}, "narrow")
        agent.step()
        slow.gate.set()  # the old fit ends after the change; then the new searcher's runs
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with agent._suggester.mu:
                if len(agent._suggester.ready) >= 2:
                    break
            time.sleep(0.01)
        with agent._suggester.mu:
            assert agent._suggester.ready
            assert all(as_space(NARROW).contains(s.config) for s in agent._suggester.ready)
        for tid in list(agent.trials):
            backend.stop(tid, "make room")
        clock.advance(10)
        agent.step()
        assert all(as_space(NARROW).contains(t.config) for t in agent.trials.values())
    finally:
        slow.gate.set()
        agent.close()


class FixedQueue:
    """Stands for the suggester thread's queue."""

    def __init__(self, items):
        self.items, self.ready = list(items), []
        self.busy = self.exhausted = False
        self.error = self.error_trace = ""

    def take(self):
        return self.items.pop(0) if self.items else None


def test_a_queued_suggestion_outside_the_current_space_is_skipped_at_launch():
    agent, _, _ = make(objective(stoppers=[], concurrency=2))
    agent.space = as_space(NARROW)
    agent._suggester = FixedQueue([Suggestion(dict(PIN), {})])  # queued before the change
    got = agent._next_config()
    assert got is not None and as_space(NARROW).contains(got[0]) and got[2] == "fill"


def test_pins_outside_a_new_space_are_dropped_with_a_decision():
    control = MemoryControlStore()
    agent, backend, clock = make(objective(stoppers=[], concurrency=1), control, cpus=1)
    agent.step()  # the one slot is busy: pins wait
    override(control, agent, "pin", {"config": PIN}, "try this")
    override(control, agent, "space", {"space": NARROW}, "narrow")
    agent.step()
    assert agent.pinned == []
    assert "1 pinned config(s) outside it dropped" in last(control, agent).result
    dropped = [d for d in control.decisions() if d.kind == "skip"]
    assert dropped and dropped[-1].explanation["config"] == PIN
    steps(agent, backend, clock, 100)
    assert all(t.config != PIN for t in agent.trials.values())


# -- 8. budget aliases -------------------------------------------------------------------------
def test_a_budget_override_in_the_canonical_spelling_replaces_the_alias():
    control = MemoryControlStore()
    agent, _, clock = make(objective(budget={"trials": 40, "wall_clock": "20m"}), control)
    agent.step()
    override(control, agent, "budget", {"budget": {"wall_clock_s": 60}}, "a minute")
    agent.step()
    assert agent.budget.wall_clock_s == 60.0
    assert agent._budget_spec == {"trials": 40, "wall_clock_s": 60}
    clock.advance(300)
    assert "wall-clock" in agent.ledger.launch_blocker(agent.resources)


def test_a_budget_with_both_spellings_of_one_limit_is_rejected():
    from assay.agents.objective import check_override

    with pytest.raises(UserInputError, match="wall_clock_s twice"):
        Budget.from_mapping({"wall_clock": "1h", "wall_clock_s": 60})
    with pytest.raises(UserInputError, match="twice"):
        check_override("budget", {"budget": {"wall_clock": "1h", "wall_clock_s": 5}},
                       budget={"trials": 3}, space=None)


# -- 9, 10. stopping ---------------------------------------------------------------------------
def test_a_stopped_agent_polls_until_its_trials_end_and_records_them():
    control = MemoryControlStore()
    agent, backend, clock = make(control=control)
    agent.step()
    clock.advance(1)
    override(control, agent, "stop", {}, "enough")
    agent.run(poll_interval=1.0, max_steps=50)
    assert agent.status is AgentStatus.STOPPED
    assert all(t.status is TrialStatus.STOPPED for t in agent.trials.values())
    row = control.get_agent(agent.agent_id)
    assert {t["status"] for t in row.state["trials"].values()} == {"stopped"}
    stops = [d for d in control.decisions() if d.kind == "stop"]
    assert {d.trial_id for d in stops} == set(agent.trials)
    assert backend.poll() == []


def test_a_trial_that_ignores_the_stop_is_killed_after_its_grace():
    control = MemoryControlStore()
    obj = objective(stop_grace=30)
    clock = SimClock()
    backend = SimBackend(clock, CurveSimulatorSource(SIM), cpus=4, stop_mode="step")
    agent = Agent(obj, backend, backend, control, ahead=False)
    agent.step()
    override(control, agent, "stop", {}, "enough")
    agent.run(poll_interval=1.0, max_steps=500)  # a trial reports a step or is killed at 30 s
    assert not agent.active and not backend.running()
    assert clock.now() <= 32


class DeafBackend(SimBackend):
    """Its trials never hear a stop (a worker that does not check, on a backend that
    loses the kill): only shutdown() ends them."""

    def stop(self, trial_id, reason="stop requested"):
        return None


def test_trials_that_never_end_after_a_stop_are_ended_by_shutting_the_backend_down():
    control = MemoryControlStore()
    clock = SimClock()
    backend = DeafBackend(clock, CurveSimulatorSource(SIM), cpus=4)
    agent = Agent(objective(stop_grace=5, stoppers=[]), backend, backend, control, ahead=False)
    agent.step()
    override(control, agent, "stop", {}, "enough")
    agent.step()
    assert agent.live
    agent.run(poll_interval=10.0, max_steps=100)
    assert not agent.live and not agent.active and not backend.running()
    assert clock.now() >= 5 + agent_mod.STOP_WAIT_S


def test_a_trial_winding_down_gets_one_stop_decision(monkeypatch):
    t = [0.0]
    monkeypatch.setattr(agent_mod.time, "monotonic", lambda: t[0])
    obj = objective(budget={"trials": 20}, stoppers=[{"median": {}}], stop_grace=60)
    clock = SimClock()
    backend = SimBackend(clock, CurveSimulatorSource(SIM), cpus=4, stop_mode="step")
    control = MemoryControlStore()
    agent = Agent(obj, backend, backend, control, ahead=False)
    for _ in range(3000):
        agent.step()
        t[0] += 1
        if agent.status is not AgentStatus.RUNNING:
            break
        clock.advance(1.0)
    stops = Counter(d.trial_id for d in control.decisions() if d.kind == "stop")
    assert stops and max(stops.values()) == 1


def test_overrides_to_a_stopped_agent_other_than_stop_run_are_rejected():
    control = MemoryControlStore()
    clock = SimClock()
    backend = DeafBackend(clock, CurveSimulatorSource(SIM), cpus=4)
    agent = Agent(objective(stoppers=[]), backend, backend, control, ahead=False)
    agent.step()
    override(control, agent, "stop", {}, "enough")
    agent.step()
    override(control, agent, "budget", {"budget": {"trials": 100}}, "more")
    agent.step()
    assert "agent is stopped" in last(control, agent).result


# -- 11. objectives: bad input fails the declaration -------------------------------------------
@pytest.mark.parametrize(("extra", "says"), [
    ({"space": [1, 2]}, "space must be a mapping"),
    ({"space": None}, "space must be a mapping"),
    ({"resources": "gpu"}, "resources must be a mapping"),
    ({"resources": {"cpu": 1}}, "unknown resources keys"),
    ({"stoppers": {"asha": 1}}, "options must be a mapping"),
    ({"stoppers": [{"asha": {"max_step": "x"}}]}, "max_step"),
    ({"trial_timeout": "soon"}, "trial_timeout"),
    ({"seed": "x"}, "seed must be an integer"),
    ({"warm_start": "yes"}, "warm_start must be true or false"),
    ({"budget": {"wall_clock": "1h", "wall_clock_s": 3600}}, "twice"),
])
def test_an_objective_with_a_mistyped_value_is_refused_with_a_user_error(extra, says):
    with pytest.raises(UserInputError, match=says):
        Objective.from_dict({"name": "o", "project": "p", "train": "examples.digits:train",
                             "metric": "loss", "space": SIM.space.to_dict(), **extra})


# -- 12. pins ---------------------------------------------------------------------------------
def test_pinning_a_config_twice_or_one_already_run_is_rejected_saying_so():
    control = MemoryControlStore()
    agent, backend, clock = make(objective(stoppers=[], concurrency=2), control)
    agent.step()
    override(control, agent, "pin", {"config": PIN}, "first")
    override(control, agent, "pin", {"config": PIN}, "again")
    agent.step()
    o1, o2 = control.overrides(agent.agent_id)
    assert o1.status is OverrideStatus.APPLIED
    assert o2.status is OverrideStatus.REJECTED and "pinned already" in o2.result
    steps(agent, backend, clock, 300, until=lambda: any(
        t.origin == "pinned" for t in agent.trials.values()))
    mine = next(t for t in agent.trials.values() if t.origin == "pinned")
    override(control, agent, "pin", {"config": PIN}, "once more")
    agent.step()
    o3 = last(control, agent)
    assert o3.status is OverrideStatus.REJECTED and mine.trial_id in o3.result
    assert "duplicates this agent's trial" in o3.result


def test_a_pin_that_reaches_a_lease_of_its_own_trial_says_so_and_is_not_foreign():
    control = MemoryControlStore()
    agent, backend, clock = make(objective(stoppers=[], concurrency=2), control)
    agent.step()
    own = next(iter(agent.trials.values()))
    agent.pinned.append(dict(own.config))  # queued before the trial existed, say
    steps(agent, backend, clock, 100, until=lambda: not agent.pinned)
    skip = [d for d in control.decisions() if d.kind == "skip"]
    assert skip and f"own trial {own.trial_id}" in skip[-1].summary
    assert not agent._foreign


def test_a_pin_with_keys_outside_the_space_is_rejected():
    control = MemoryControlStore()
    agent, _, _ = make(objective(stoppers=[], concurrency=1), control)
    override(control, agent, "pin", {"config": {**PIN, "dropuot": 0.5, "batch_size": 512}},
             "big batch")
    agent.step()
    o = last(control, agent)
    assert o.status is OverrideStatus.REJECTED
    assert "batch_size" in o.result and "dropuot" in o.result
    assert not [t for t in agent.trials.values() if t.origin == "pinned"]


# -- 13. one project budget for every agent of the project ------------------------------------
def drive_all(agents):
    for _ in range(3000):
        live = False
        for ag, be, cl in agents:
            if ag.status is AgentStatus.RUNNING:
                live = True
                ag.step()
                cl.advance_to(be.next_event_time() or cl.now() + 1)
        if not live:
            return
    raise AssertionError("the agents never finished")


@pytest.mark.parametrize("capped_first", [True, False])
def test_an_agent_without_a_project_budget_keeps_to_the_one_another_declared(capped_first):
    control = MemoryControlStore()
    capped = objective(budget={"trials": 10}, project_budget={"trials": 12}, stoppers=[])
    free = objective(budget={"trials": 10}, stoppers=[], seed=2)
    first, second = (capped, free) if capped_first else (free, capped)
    a = make(first, control)
    a[0].step()  # the first agent launches before the second declares anything
    b = make(second, control)
    drive_all([a, b])
    assert len(a[0].trials) + len(b[0].trials) == 12
    assert control.count_leases("simproj/") == 12


def test_a_conflicting_project_budget_is_refused_with_the_one_in_force():
    from assay.errors import ConflictError

    control = MemoryControlStore()
    make(objective(project_budget={"trials": 12}), control)
    with pytest.raises(ConflictError, match="12 trials already") as e:
        make(objective(project_budget={"trials": 100}, seed=2), control)
    assert "trials: 12" in e.value.hint
    make(objective(project_budget={"trials": 12}, seed=3), control)  # the same cap is fine


def test_an_override_from_a_lagging_clock_is_ordered_after_the_ones_sent_before():
    # A "pause" sent from a machine whose clock runs an hour ahead, then a "resume" from one
    # on time: ordered by raw clocks, the resume would come first and the pause would stick.
    from assay.agents.hlc import HybridLogicalClock
    from assay.agents.overrides import stamp
    from assay.store.control import Override

    control = MemoryControlStore()
    ahead = HybridLogicalClock("cli", physical_ms=lambda: 2_000_000_000_000 + 3_600_000)
    on_time = HybridLogicalClock("api", physical_ms=lambda: 2_000_000_000_000)
    for action, clock in (("pause", ahead), ("resume", on_time)):
        control.add_override(Override("ag1", action, {}, "alice", "", stamp(control, "ag1", clock),
                                      0.0))
    assert [o.action for o in control.overrides("ag1")] == ["pause", "resume"]


def test_a_pin_need_not_repeat_the_spaces_fixed_values_but_must_set_every_tunable_one():
    """helper-61: pinning {x, y} in a space that also fixes ``steps`` was refused with
    "config lacks parameter 'steps'"; fixed values are filled in now, and a pin that lacks
    a tunable value says which, listing the tunable ones."""
    from assay.agents.objective import check_override

    space = as_space({**SIM.space.to_dict(), "epochs": 20})
    tunable = {k: PIN[k] for k in space.tunable}
    got = check_override("pin", {"config": tunable}, budget={"trials": 5}, space=space)
    assert got == {"config": {**tunable, "epochs": 20}}
    with pytest.raises(UserInputError, match=r"lacks \['lr'\]") as err:
        check_override("pin", {"config": {k: v for k, v in tunable.items() if k != "lr"}},
                       budget={"trials": 5}, space=space)
    assert "tunable parameters: " in err.value.hint and "epochs" not in err.value.hint
    with pytest.raises(UserInputError, match="epochs=21 is outside"):
        check_override("pin", {"config": {**tunable, "epochs": 21}}, budget={"trials": 5},
                       space=space)
    control = MemoryControlStore()
    agent, _, _ = make(objective(stoppers=[], concurrency=1, space=space.to_dict()), control)
    override(control, agent, "pin", {"config": tunable}, "this one")
    agent.step()
    assert last(control, agent).status is OverrideStatus.APPLIED
    (pinned,) = [t for t in agent.trials.values() if t.origin == "pinned"]
    assert pinned.config == {**tunable, "epochs": 20}


@pytest.mark.parametrize(("action", "params", "match"), [
    ("concurrency", {"concurrency": 10**23}, "concurrency must be an int from 1 to 100,000"),
    ("budget", {"budget": {"trials": 10**23}}, "at most 10,000,000"),
])
def test_absurd_numbers_in_overrides_are_refused_not_applied(action, params, match):
    """helper-61: concurrency 1e23 and a trial budget of 1e23 were accepted and applied."""
    from assay.agents.objective import check_override

    with pytest.raises(UserInputError, match=match):
        check_override(action, params, budget={"trials": 5}, space=None)
    with pytest.raises(UserInputError, match="at most 10,000,000"):
        Budget(trials=10**8)
    with pytest.raises(UserInputError, match="from 1 to 100,000"):
        objective(concurrency=10**6)


def test_overrides_sent_as_the_budget_runs_out_are_applied_or_rejected_never_left_pending(
        monkeypatch):
    """helper-60: overrides sent just before an agent finished stayed pending for good (a
    budget raise among them, never applied nor rejected). Before it ends, the agent reads
    them: a raised budget keeps it going; one that arrives as it ends is rejected, saying
    why."""
    monkeypatch.setattr(overrides_mod, "OVERRIDE_POLL_S", 3600.0)  # as if it just looked

    class LateStore(MemoryControlStore):
        """Shows an override only from its second read on: sent after the agent's look."""

        late: Override | None = None

        def overrides(self, agent_id, status=None):
            if self.late is not None:
                late, self.late = self.late, None
                got = super().overrides(agent_id, status)
                self.add_override(late)
                return got
            return super().overrides(agent_id, status)

    control = LateStore()
    agent, backend, clock = make(objective(stoppers=[], concurrency=2, budget={"trials": 4}),
                                 control)
    raised = False
    for _ in range(1000):
        agent.step()
        if agent.status is not AgentStatus.RUNNING:
            break
        if len(agent.trials) == 4 and len(agent.active) == 1 and not raised:
            override(control, agent, "budget", {"budget": {"trials": 6}}, "two more")
            raised = True
        clock.advance_to(backend.next_event_time() or clock.now() + 1)
    assert raised and len(agent.trials) == 6  # the raise was read before the agent ended
    assert agent.status is AgentStatus.FINISHED
    assert [str(o.status) for o in control.overrides(agent.agent_id)] == ["applied"]

    agent2, b2, c2 = make(objective(stoppers=[], concurrency=2, budget={"trials": 2}), control)
    for _ in range(1000):
        if len(agent2.trials) == 2 and control.late is None and not control.overrides(
                agent2.agent_id):
            control.late = Override(agent2.agent_id, "concurrency", {"concurrency": 1},
                                    "alice", "late", hlc=str(agent2.hlc.now()), time=0.0)
        agent2.step()
        if agent2.status is not AgentStatus.RUNNING:
            break
        c2.advance_to(b2.next_event_time() or c2.now() + 1)
    assert agent2.status is AgentStatus.FINISHED
    (o,) = control.overrides(agent2.agent_id)
    assert o.status is OverrideStatus.REJECTED and "the agent finished" in o.result
    ds = [d for d in control.decisions(agent_id=agent2.agent_id) if d.kind == "override"]
    assert len(ds) == 1 and "rejected" in ds[0].summary


def test_an_applied_budget_reads_as_people_write_it():
    from assay.agents.overrides import budget_text

    assert budget_text(Budget(trials=40, wall_clock_s="15m", gpu_hours=2), 3) == (
        "budget now 40 trials, 15m wall clock, 2 GPU-hours")
    assert budget_text(Budget(trials=3), 7) == (
        "budget now 3 trials (7 launched already: no new trial starts; running ones go on)")
    assert budget_text(Budget(), 7) == "budget now unlimited"
