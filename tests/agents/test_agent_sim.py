"""The agent's step() loop on simulated curves and a simulated clock (fast, deterministic)."""

from __future__ import annotations

import assay.agents.overrides as overrides_mod
import pytest
from assay.agents.agent import Agent
from assay.agents.objective import Objective
from assay.errors import UserInputError
from assay.policies import TrialStatus
from assay.scheduler.base import SimClock
from assay.scheduler.sim_backend import CurveSimulatorSource, SimBackend
from assay.simulations.curves import CurveSimulator
from assay.store.control import AgentStatus, MemoryControlStore, Override

SIM = CurveSimulator(seed=3, max_steps=20, metric="loss", crash_rate=0.05)


def objective(**kw):
    base = {"name": "sim", "project": "simproj", "train": "examples.digits:train",
            "metric": "loss", "mode": "min", "space": SIM.space.to_dict(),
            "budget": {"trials": 40}, "concurrency": 4, "searcher": "random",
            "stoppers": [{"asha": {"max_step": 19}}], "seed": 1}
    base.update(kw)
    return Objective.from_dict(base)


def make(obj=None, control=None, agent_id=None, cpus=4):
    clock = SimClock()
    backend = SimBackend(clock, CurveSimulatorSource(SIM), cpus=cpus)
    agent = Agent(obj or objective(), backend, backend, control or MemoryControlStore(),
                  agent_id=agent_id, ahead=False)
    return agent, backend, clock


def drive(agent, backend, clock, max_steps=10_000):
    for _ in range(max_steps):
        agent.step()
        if agent.status not in (AgentStatus.RUNNING, AgentStatus.PAUSED):
            return
        t = backend.next_event_time()
        clock.advance_to(t if t is not None else clock.now() + 1.0)
    raise AssertionError("the agent never finished")


def test_agent_runs_the_trial_budget_with_stops_and_finds_a_best():
    agent, backend, clock = make()
    drive(agent, backend, clock)
    assert agent.status is AgentStatus.FINISHED
    assert len(agent.trials) == 40
    statuses = {t.status for t in agent.trials.values()}
    assert TrialStatus.STOPPED in statuses and TrialStatus.COMPLETED in statuses
    d = agent.control.decisions(agent_id=agent.agent_id)
    kinds = [x.kind for x in d]
    assert kinds.count("launch") == 40 and kinds[-1] == "finish"
    stops = [x for x in d if x.kind == "stop"]
    assert stops and all(x.explanation["rule"] and x.explanation["evidence"] for x in stops)
    best = min(t.final for t in agent.trials.values()
               if t.status is TrialStatus.COMPLETED and t.final is not None)
    assert agent.best.final == best
    assert d[-1].explanation["best_config"] == agent.best.config


def test_runs_are_deterministic_with_inline_suggestions():
    a1, b1, c1 = make()
    drive(a1, b1, c1)
    a2, b2, c2 = make()
    drive(a2, b2, c2)
    assert [t.config for t in a1.trials.values()] == [t.config for t in a2.trials.values()]
    assert a1.best.final == a2.best.final


def test_overrides_pause_pin_concurrency_budget_stop_run_and_stop(monkeypatch):
    monkeypatch.setattr(overrides_mod, "OVERRIDE_POLL_S", 0.0)  # every step reads overrides
    control = MemoryControlStore()
    agent, _backend, clock = make(control=control)
    agent.step()
    assert len(agent.active) == 4

    def say(action, **params):
        override(control, agent, action, params, f"test {action}")
    say("pause")
    agent.step()
    assert agent.status is AgentStatus.PAUSED
    n = len(agent.trials)
    clock.advance(1000)
    agent.step()
    assert len(agent.trials) == n  # paused: nothing new launched
    pinned = {"lr": 0.001, "width": 128, "depth": 3, "dropout": 0.1, "act": "relu"}
    say("pin", config=pinned)
    say("concurrency", concurrency=2)
    say("resume")
    agent.step()
    launched = [t for t in agent.trials.values() if t.origin == "pinned"]
    assert launched and launched[0].config == pinned
    assert len(agent.active) <= 2
    running = next(t.trial_id for t in agent.active)
    say("stop_run", trial_id=running)
    say("budget", budget={"trials": 8})
    say("concurrency", concurrency=0)  # invalid: rejected, nothing changes
    agent.step()
    rejected = [o for o in control.overrides(agent.agent_id) if o.status == "rejected"]
    assert len(rejected) == 1 and "concurrency" in rejected[0].result
    clock.advance(1)
    agent.step()
    assert agent.trials[running].status is TrialStatus.STOPPED
    ov = [d for d in control.decisions(agent_id=agent.agent_id) if d.kind == "override"]
    assert {d.explanation["action"] for d in ov} == {"pause", "pin", "concurrency", "resume",
                                                     "stop_run", "budget"}
    assert all(d.explanation["actor"] == "alice" for d in ov)
    say("stop")
    agent.step()
    assert agent.status is AgentStatus.STOPPED


class RecordingBackend(SimBackend):
    """A SimBackend that keeps every spec it was given, in order."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.specs = []
        self.ended = []  # runs it was asked to finish without an attempt

    def launch(self, spec):
        self.specs.append(spec)
        super().launch(spec)

    def end_unlaunched(self, project, trial_id, status, reason):
        self.ended.append((project, trial_id, status, reason))


def restart(control, agent_id, obj=None, cpus=4):
    """What a restarted agent actor does: a fresh backend (the old trials died with the
    old one) and the agent restored from the graph."""
    clock = SimClock()
    backend = RecordingBackend(clock, CurveSimulatorSource(SIM), cpus=cpus)
    agent = Agent(obj or objective(), backend, backend, control, agent_id=agent_id, ahead=False)
    return agent, backend, clock


def override(control, agent, action, params, reason):
    """What a person's override through the API or CLI writes, signed by alice."""
    control.add_override(Override(agent.agent_id, action, params, "alice", reason,
                                  hlc=str(agent.hlc.now()), time=0.0))


def started(obj=None):
    """A fresh agent after its first step, with the ids of the trials it is running."""
    control = MemoryControlStore()
    agent = make(obj, control)[0]
    agent.step()
    return control, agent, [t.trial_id for t in agent.active]


def run_for(agent, backend, clock, steps):
    for _ in range(steps):
        agent.step()
        clock.advance_to(backend.next_event_time() or clock.now() + 1)


def test_restarted_agent_relaunches_its_running_trials_resuming_them_and_repeats_no_trial():
    control = MemoryControlStore()
    agent, backend, clock = make(control=control)
    run_for(agent, backend, clock, 30)
    before = {tid: (t.status, t.reason, t.final) for tid, t in agent.trials.items()}
    lost = [tid for tid, (st, _, _) in before.items() if st.is_active]
    assert lost
    agent.close()
    again, b2, c2 = restart(control, agent.agent_id)
    assert set(before) == set(again.trials)
    assert {tid for tid, t in again.trials.items() if t.status is TrialStatus.PENDING} == set(lost)
    for tid, (st, reason, final) in before.items():  # finished trials are left as they were
        if not st.is_active:
            t = again.trials[tid]
            assert (t.status, t.reason, t.final, t.relaunches) == (st, reason, final, 0)
    again.step()
    first = b2.specs[:len(lost)]
    assert [s.trial_id for s in first] == lost and all(s.resume for s in first)
    assert all(not s.resume for s in b2.specs[len(lost):])  # new configs only after them
    assert all(s.config == again.trials[s.trial_id].config for s in first)
    resumed = [d for d in control.decisions(agent_id=agent.agent_id) if d.kind == "resume"]
    assert [d.trial_id for d in resumed] == lost
    assert all(d.explanation["relaunch"] == 1 and "restarted" in d.summary for d in resumed)
    assert not [d for d in control.decisions(agent_id=agent.agent_id)
                if d.kind == "fail" and d.trial_id in lost]
    drive(again, b2, c2)
    assert len(again.trials) == 40  # the budget counts the trials before the restart, once
    assert again.ledger.trials_launched == 40
    launches = [d for d in control.decisions(agent_id=agent.agent_id) if d.kind == "launch"]
    assert len(launches) == 40 and len({d.trial_id for d in launches}) == 40
    assert all(again.trials[tid].status.is_finished for tid in lost)
    assert all(again.trials[tid].relaunches == 1 for tid in lost)
    configs = [repr(sorted(t.config.items())) for t in again.trials.values()]
    assert len(configs) == len(set(configs))


def test_relaunched_trials_wait_for_free_slots_and_count_against_concurrency():
    control, agent, lost = started()
    assert len(lost) == 4
    agent.close()
    again, b2, c2 = restart(control, agent.agent_id, cpus=2)  # room for 2 now
    again.step()
    assert [s.trial_id for s in b2.specs] == lost[:2] and all(s.resume for s in b2.specs)
    assert len(again.active) == 4  # two running, two waiting for a slot
    for _ in range(200):
        if len(b2.specs) >= 5:
            break
        assert len(again.active) <= again.concurrency
        c2.advance_to(b2.next_event_time() or c2.now() + 1)
        again.step()
    assert [s.trial_id for s in b2.specs[:4]] == lost
    assert [s.resume for s in b2.specs[:5]] == [True] * 4 + [False]


def test_a_trial_lost_in_more_restarts_than_max_retries_is_failed_with_the_reason():
    obj = objective(max_retries=1)
    control, agent, lost = started(obj)
    agent.close()
    second = restart(control, agent.agent_id, obj)[0]
    second.step()  # relaunched once; the agent dies again while they run
    assert all(second.trials[t].relaunches == 1 for t in lost)
    used = {t: second.ledger.usage(run=t) for t in lost}
    second.close()
    third, b3, c3 = restart(control, agent.agent_id, obj)
    for tid in lost:
        t = third.trials[tid]
        assert t.status is TrialStatus.FAILED
        assert "max_retries=1" in t.reason and "not relaunched again" in t.reason
        c3.advance(3600)
        assert third.ledger.usage(run=tid) == used[tid]  # charged up to the last save, no more
    fails = [d for d in control.decisions(agent_id=agent.agent_id) if d.kind == "fail"]
    assert {d.trial_id for d in fails} == set(lost)
    assert sorted(e[1] for e in b3.ended) == sorted(lost)
    assert {e[2] for e in b3.ended} == {"failed"}
    assert all(d.explanation["relaunches"] == 1 for d in fails)
    third.step()
    assert not any(s.trial_id in lost for s in b3.specs)
    assert third.ledger.trials_launched == len(lost) + len(b3.specs)


def test_with_max_retries_0_a_restart_fails_the_trials_it_lost():
    obj = objective(max_retries=0)
    control, agent, lost = started(obj)
    agent.close()
    again = restart(control, agent.agent_id, obj)[0]
    assert all(again.trials[t].status is TrialStatus.FAILED for t in lost)
    assert all("max_retries=0" in again.trials[t].reason for t in lost)


def test_a_restart_after_the_wall_clock_budget_ran_out_ends_its_lost_trials_unrelaunched():
    """A relaunch does not count as a new trial, but it spends time and resources: with the
    wall-clock budget spent while the agent was down, its lost trials end stopped."""
    obj = objective(budget={"trials": 40, "wall_clock": "30m"})
    control, agent, lost = started(obj)
    agent.close()
    again, b2, c2 = restart(control, agent.agent_id, obj)
    c2.advance(3600)  # the agent was down for an hour
    again.step()
    assert b2.specs == []  # nothing relaunched, nothing new
    for tid in lost:
        t = again.trials[tid]
        assert t.status is TrialStatus.STOPPED
        assert "not relaunched" in t.reason and "wall-clock budget reached" in t.reason
    assert sorted(e[1] for e in b2.ended) == sorted(lost)
    assert again.ledger.trials_launched == len(lost)  # counted once, before the restart
    stops = [d for d in control.decisions(agent_id=agent.agent_id) if d.kind == "stop"]
    assert sorted(d.trial_id for d in stops) == sorted(lost)  # every decision is a row
    assert all(d.explanation["rule"] == "budget" for d in stops)


def test_stopping_a_restarted_agent_never_relaunches_its_waiting_trials(monkeypatch):
    monkeypatch.setattr(overrides_mod, "OVERRIDE_POLL_S", 0.0)
    control, agent, lost = started()
    agent.close()
    again, b2, _ = restart(control, agent.agent_id, cpus=2)
    again.step()  # two relaunched, two waiting
    waiting = lost[2:]
    override(control, again, "stop_run", {"trial_id": waiting[0]}, "not this one")
    again.step()
    assert again.trials[waiting[0]].status is TrialStatus.STOPPED
    assert "alice" in again.trials[waiting[0]].reason
    override(control, again, "stop", {}, "enough")
    again.step()
    assert again.status is AgentStatus.STOPPED
    assert [s.trial_id for s in b2.specs] == lost[:2]
    assert again.trials[waiting[1]].status is TrialStatus.STOPPED
    ov = [o for o in control.overrides(agent.agent_id) if o.status == "applied"]
    assert len(ov) == 2


def test_two_agents_never_run_the_same_config():
    control = MemoryControlStore()
    obj = objective(searcher="grid", space={"lr": {"choice": [0.001, 0.01, 0.1]},
                                            "width": {"choice": [32, 64]}, "depth": 2,
                                            "dropout": 0.0, "act": "relu"},
                    budget={"trials": 6}, stoppers=[], concurrency=2)
    a, ba, ca = make(obj, control)
    b, bb, cb = make(obj, control)
    for _ in range(200):
        for ag, be, cl in ((a, ba, ca), (b, bb, cb)):
            if ag.status is AgentStatus.RUNNING:
                ag.step()
                cl.advance_to(be.next_event_time() or cl.now() + 1)
    ran = [repr(sorted(t.config.items())) for ag in (a, b) for t in ag.trials.values()]
    assert len(ran) == len(set(ran)) == 6
    assert any(d.kind == "skip" for d in control.decisions())


def test_bad_objectives_are_rejected_with_hints():
    from assay.errors import UserInputError

    with pytest.raises(UserInputError, match="did you mean 'budget'"):
        objective(budgte={"trials": 3})
    with pytest.raises(UserInputError, match="cannot import train target"):
        objective(train="no_such_module.sub:train")
    with pytest.raises(UserInputError, match="smaller than concurrency"):
        objective(budget={"trials": 2}, concurrency=4)
    with pytest.raises(UserInputError, match="unknown searcher 'botorc'"):
        objective(searcher="botorc")


def test_two_agents_share_a_project_budget():
    control = MemoryControlStore()
    obj = objective(budget={"trials": 10}, project_budget={"trials": 12}, stoppers=[])
    a, ba, ca = make(obj, control)
    b, bb, cb = make(objective(budget={"trials": 10}, project_budget={"trials": 12},
                               stoppers=[], seed=2), control)
    for _ in range(2000):
        live = False
        for ag, be, cl in ((a, ba, ca), (b, bb, cb)):
            if ag.status is AgentStatus.RUNNING:
                live = True
                ag.step()
                cl.advance_to(be.next_event_time() or cl.now() + 1)
        if not live:
            break
    assert len(a.trials) + len(b.trials) == 12
    finish = [d for d in control.decisions() if d.kind == "finish"]
    assert len(finish) == 2 and any("project budget" in d.summary for d in finish)


class FakeArtifacts:
    def __init__(self):
        self.latest = {"data": 0}
        self.stale: list[str] = []
        self.links: list[tuple[str, str]] = []

    def latest_version(self, name):
        return self.latest.get(name)

    def mark_stale(self, run_ids, reason):
        self.stale += run_ids

    def link(self, old, new):
        self.links.append((old, new))


def test_a_new_dataset_version_marks_users_stale_and_reruns_the_top_configs(monkeypatch):
    import assay.agents.agent as mod

    t = [0.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: t[0])
    space = {**SIM.space.to_dict(), "data": "data:v0"}
    obj = objective(space=space, budget={"trials": 12}, stoppers=[], reevaluate_on=["data"],
                    reevaluate_top=2)
    clock = SimClock()
    backend = SimBackend(clock, CurveSimulatorSource(SIM), cpus=4)
    fake = FakeArtifacts()
    agent = Agent(obj, backend, backend, MemoryControlStore(), ahead=False, artifacts=fake)
    def done():
        return [x for x in agent.trials.values() if x.status is TrialStatus.COMPLETED]

    while len(done()) < 3:  # run part of the search on data:v0
        agent.step()
        t[0] += 3
        clock.advance_to(backend.next_event_time() or clock.now() + 1)
    done = done()
    fake.latest["data"] = 1
    for _ in range(200):  # queued: they launch as slots free up, like any config
        agent.step()
        assert len(agent.active) <= agent.concurrency
        if len([x for x in agent.trials.values() if x.origin == "reevaluate"]) == 2:
            break
        clock.advance_to(backend.next_event_time() or clock.now() + 1)
    re = [x for x in agent.trials.values() if x.origin == "reevaluate"]
    assert len(re) == 2 and all(x.config["data"] == "data:v1" for x in re)
    assert set(fake.stale) >= {x.trial_id for x in done}
    best_two = sorted(done, key=lambda x: x.final)[:2]
    assert {old for old, _ in fake.links} == {x.trial_id for x in best_two}
    agent.step()
    assert len([x for x in agent.trials.values() if x.origin == "reevaluate"]) == 2  # once


def test_the_learned_stopper_retrains_on_the_sweeps_finished_curves():
    obj = objective(stoppers=[{"learned": {"refit_every": 4}}], budget={"trials": 12},
                    space={**SIM.space.to_dict()})
    agent, backend, clock = make(obj)
    learned = agent._refitter.stopper
    before = learned.predictor
    for _ in range(10_000):  # step until the first refit has started
        agent.step()
        if agent._refitter.busy or agent.status is not AgentStatus.RUNNING:
            break
        t = backend.next_event_time()
        clock.advance_to(t if t is not None else clock.now() + 1.0)
    agent._refitter.wait(120)
    agent.step()  # the finished refit is swapped in between two steps
    assert learned.predictor is not before
    assert learned.predictor.n_examples > before.n_examples
    retrain = [d for d in agent.control.decisions(agent_id=agent.agent_id) if d.kind == "retrain"]
    assert retrain and retrain[0].explanation["trials"] >= 4
    assert retrain[0].explanation["examples"] == learned.predictor.n_examples


def test_refit_every_is_validated_and_zero_turns_it_off():
    with pytest.raises(UserInputError, match="refit_every"):
        make(objective(stoppers=[{"learned": {"refit_every": -1}}]))
    with pytest.raises(UserInputError, match="refit_every"):
        make(objective(stoppers=[{"learned": {"refit_every": "often"}}]))
    agent, _, _ = make(objective(stoppers=[{"learned": {"refit_every": 0}}]))
    assert agent._refitter is None
    agent, _, _ = make(objective(stoppers=["asha"]))
    assert agent._refitter is None


def test_objective_sets_the_learned_stoppers_leader_threshold():
    from assay.agents.factory import make_stopper
    from assay.policies import AnyOf, LearnedStopper

    def learned(obj):
        s = make_stopper(obj)
        parts = s.stoppers if isinstance(s, AnyOf) else [s]
        return next(x for x in parts if isinstance(x, LearnedStopper))

    assert learned(objective(stoppers=["learned"])).leader_threshold == (0.3, 0.995)
    # As YAML/JSON gives them: a list, or null for "never stop a leader".
    assert learned(objective(stoppers=[{"learned": {"leader_threshold": [0.5, 0.99]}}])
                   ).leader_threshold == (0.5, 0.99)
    assert learned(objective(stoppers=[{"learned": {"leader_threshold": None}}])
                   ).leader_threshold is None
    with pytest.raises(UserInputError, match="leader_threshold"):
        make_stopper(objective(stoppers=[{"learned": {"leader_threshold": 0.99}}]))


def test_a_lowered_concurrency_holds_back_relaunches_too(monkeypatch):
    monkeypatch.setattr(overrides_mod, "OVERRIDE_POLL_S", 0.0)
    control, agent, lost = started()
    override(control, agent, "concurrency", {"concurrency": 2}, "share the machine")
    agent.step()
    agent.close()
    again, b2, _ = restart(control, agent.agent_id)  # cpus for 4, concurrency 2
    again.step()
    assert again.concurrency == 2
    assert [s.trial_id for s in b2.specs] == lost[:2]


def test_a_trial_asked_to_stop_before_a_restart_ends_stopped_instead_of_being_relaunched(
        monkeypatch):
    monkeypatch.setattr(overrides_mod, "OVERRIDE_POLL_S", 0.0)
    control, agent, lost = started()
    victim = lost[0]
    override(control, agent, "stop_run", {"trial_id": victim}, "wrong data")
    agent.step()  # asked to stop; the agent dies before it hears the trial stopped
    assert agent.trials[victim].status is TrialStatus.RUNNING
    agent.close()
    again, b2, _ = restart(control, agent.agent_id)
    t = again.trials[victim]
    assert t.status is TrialStatus.STOPPED and "alice" in t.reason
    again.step()
    assert victim not in [s.trial_id for s in b2.specs]  # the person's stop is not undone
    assert [s.trial_id for s in b2.specs[:3]] == lost[1:]
    ended = [d for d in control.decisions(agent_id=agent.agent_id)
             if d.trial_id == victim and d.kind == "stop"]
    assert ended and "not relaunched" in ended[-1].summary
    assert b2.ended == [("simproj", victim, "stopped", t.reason)]  # its run is finished too


def test_a_paused_agent_that_restarts_still_relaunches_the_trials_it_lost(monkeypatch):
    monkeypatch.setattr(overrides_mod, "OVERRIDE_POLL_S", 0.0)
    control, agent, lost = started()
    override(control, agent, "pause", {}, "let them drain")
    agent.step()
    assert agent.status is AgentStatus.PAUSED
    agent.close()
    again, b2, c2 = restart(control, agent.agent_id)
    assert again.status is AgentStatus.PAUSED
    again.step()
    assert [s.trial_id for s in b2.specs] == lost and all(s.resume for s in b2.specs)
    for _ in range(500):  # they run to the end; nothing new starts while paused
        if not again.active:
            break
        c2.advance_to(b2.next_event_time() or c2.now() + 1)
        again.step()
    assert not again.active and [s.trial_id for s in b2.specs] == lost
    assert all(again.trials[t].status.is_finished for t in lost)


class _FlakyControl(MemoryControlStore):
    """A control store on a server that is away at times: a lease claim or state write is
    stored and its answer lost (a timeout after the server acted); an override's outcome
    never reaches it. The agent hears ServerUnreachableError."""

    def __init__(self) -> None:
        super().__init__()
        self.lose: set[str] = set()  # the next call of each named method loses its answer

    def _lost(self, name: str) -> None:
        from assay.errors import ServerUnreachableError

        if name in self.lose:
            self.lose.discard(name)
            raise ServerUnreachableError(f"{name}: the answer was lost")

    def claim_lease(self, *a, **k):
        got = super().claim_lease(*a, **k)
        self._lost("claim_lease")
        return got

    def resolve_override(self, *a, **k):
        self._lost("resolve_override")  # this one never reached the server
        super().resolve_override(*a, **k)

    def save_agent(self, row):
        self._lost("save_agent")
        super().save_agent(row)


def test_answers_a_server_lost_neither_block_a_config_nor_apply_an_override_twice(
        monkeypatch):
    """A lease claim the server stored but whose answer was lost is claimed again with the
    same trial id (a new one found the config held, by no running trial, for good); an
    override applied whose outcome was lost is resolved at the next poll, not applied again
    (a pin applied twice ran the config twice, or was recorded as rejected); a lost state
    write is retried. The sweep goes on through all of it."""
    monkeypatch.setattr(overrides_mod, "OVERRIDE_POLL_S", 0.0)
    control = _FlakyControl()
    agent, backend, clock = make(objective(budget={"trials": 12}), control=control)
    control.lose.add("claim_lease")
    agent.step()
    assert not control.lose and not agent.trials  # nothing launched at that step
    ((_, (_, first)),) = control._leases.items()  # the claim was stored all the same
    agent.step()
    assert first in agent.trials  # claimed again with its trial id: ours, and launched
    control.lose.add("save_agent")
    agent._persist(force=True)
    assert not control.lose and agent._dirty  # not saved: still to save
    agent.step()
    assert not agent._dirty and first in control.get_agent(agent.agent_id).state["trials"]
    control.add_override(Override(agent.agent_id, "concurrency", {"concurrency": 2}, "alice",
                                  "fewer", hlc="9" * 13 + ".0.x", time=0.0))
    control.lose.add("resolve_override")
    agent.step()
    agent.step()
    ds = [d for d in control.decisions(agent_id=agent.agent_id) if d.kind == "override"]
    assert len(ds) == 1  # applied once, its outcome stored at the next poll
    assert [str(o.status) for o in control.overrides(agent.agent_id)] == ["applied"]
    drive(agent, backend, clock)
    assert agent.status is AgentStatus.FINISHED and len(agent.trials) == 12


def test_an_override_whose_outcome_was_lost_is_not_applied_again_by_a_restarted_agent(
        monkeypatch):
    """The agent applied an override and saved its state (the effect in it), the outcome
    never reached the server, and the agent restarted: the restarted agent resolves the
    override from its saved state instead of applying it a second time (a pin applied twice
    ran its config twice or was recorded as rejected)."""
    monkeypatch.setattr(overrides_mod, "OVERRIDE_POLL_S", 0.0)
    control = _FlakyControl()
    agent, _backend, _clock = make(objective(budget={"trials": 12}), control=control)
    agent.step()
    pin = {"lr": 0.001, "width": 128, "depth": 3, "dropout": 0.1, "act": "relu"}
    override(control, agent, "pin", {"config": pin}, "try this one")
    control.lose.add("resolve_override")
    agent.step()  # applied (pinned and launched or queued), its outcome lost
    agent._persist(force=True)
    saved = control.get_agent(agent.agent_id).state
    assert [v[0] for v in saved["unresolved_overrides"].values()] == ["applied"]
    agent.close()
    again, b2, c2 = restart(control, agent.agent_id, obj=objective(budget={"trials": 12}))
    again.step()
    assert [str(o.status) for o in control.overrides(agent.agent_id)] == ["applied"]
    ds = [d for d in control.decisions(agent_id=agent.agent_id) if d.kind == "override"]
    assert len(ds) == 1 and "rejected" not in ds[0].summary
    drive(again, b2, c2)
    assert [t.config for t in again.trials.values() if t.origin == "pinned"] == [pin]
    assert not again._unresolved
    assert "unresolved_overrides" in control.get_agent(agent.agent_id).state
    assert not control.get_agent(agent.agent_id).state["unresolved_overrides"]


def test_a_misspelled_metric_ends_the_agent_after_three_trials_saying_what_they_logged():
    """helper-60: ``metric: scor`` with trials logging ``score`` spent the whole budget
    ("completed with scor=None" each time) and ended "finished" with no best."""
    from assay.scheduler.base import EventKind

    agent, backend, clock = make(objective(metric="los", stoppers=[], concurrency=2,
                                           budget={"trials": 40}))
    real = backend.poll

    def poll():  # what a worker reports: the run's metrics, without the misspelled one
        import dataclasses

        return [dataclasses.replace(ev, result={"loss": 0.5, "epoch_s": 1.0})
                if ev.kind is EventKind.COMPLETED else ev for ev in real()]

    backend.poll = poll
    agent.metrics = _NoPoints()
    drive(agent, backend, clock)
    assert agent.status is AgentStatus.FAILED
    assert "3 trials completed without logging the objective's metric 'los'" in agent.failure
    assert "did you mean 'loss'?" in agent.failure_hint and "they logged: " in \
        agent.failure_hint
    assert len(agent.trials) < 10  # not the whole budget of 40


def test_an_agent_whose_first_trials_all_fail_ends_failed_saying_why():
    """helper-67: a train function that raises (or a command not found) failed every trial of
    the budget, and the agent ended "finished" with no best and exit 0; the cause was in
    `assay decisions` only."""
    import dataclasses

    from assay.scheduler.base import EventKind

    agent, backend, clock = make(objective(stoppers=[], concurrency=2, budget={"trials": 40}))
    real = backend.poll

    def poll():  # every trial's end is a failure, as a worker reports a raising function
        return [dataclasses.replace(ev, kind=EventKind.FAILED, reason="exception",
                                    error="Traceback ...\nFileNotFoundError: 'pyhton'")
                if ev.kind is EventKind.COMPLETED else ev for ev in real()]

    backend.poll = poll
    drive(agent, backend, clock)
    assert agent.status is AgentStatus.FAILED
    assert "the first 3 trials failed, none ran to an end" in agent.failure
    assert "FileNotFoundError: 'pyhton'" in agent.failure
    assert f"assay decisions {agent.agent_id} --kind fail" in agent.failure_hint
    assert len(agent.trials) < 10  # not the whole budget of 40


class _NoPoints:
    """A metric source that never has a point of the (misspelled) metric."""

    def new_points(self, trial_ids):
        return {}

    def replaced(self):
        return set()

    def forget(self, trial_id):
        pass
