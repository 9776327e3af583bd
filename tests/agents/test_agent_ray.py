"""Agents on a real local Ray, tracking into real LanceDB files."""

from __future__ import annotations

import sys
import threading
import time

import assay
import pytest
from assay.agents.objective import Objective
from assay.agents.runner import run_objective
from assay.store.control import LanceControlStore, Override
from assay.store.ingest import IngestLock
from assay.store.lance import LanceStore

pytestmark = pytest.mark.integration


def _control(data_dir):
    """The data directory's control store (agents, decisions, overrides)."""
    return LanceControlStore(LanceStore(data_dir), IngestLock(data_dir))


def toy(**kw):
    base = {"name": "toy", "project": "toyproj", "train": "examples.toy:train",
            "metric": "score", "mode": "max",
            "space": {"x": {"uniform": [0, 1]}, "y": {"uniform": [0, 1]},
                      "steps": 8, "step_s": 0.05},
            "budget": {"trials": 4}, "concurrency": 2, "searcher": "random",
            "stoppers": ["median"]}
    base.update(kw)
    return Objective.from_dict(base)


def test_objective_runs_end_to_end_and_everything_is_recorded(ray_local, data_dir):
    res = run_objective(toy(), dir=data_dir, poll_interval=0.2)
    assert res.status == "finished" and res.best_value is not None and res.best_value > 0
    api = assay.Api(data_dir)
    runs = api.runs(project="toyproj")
    runs = runs.filter(~runs["name"].str.starts_with("report-"))
    assert runs.height == 4 and set(runs["status"].to_list()) <= {"completed", "stopped"}
    best = api.run(res.best_run)
    assert best.config["x"] == res.best_config["x"]
    kinds = [d.kind for d in _control(data_dir).decisions(agent_id=res.agent_id)]
    assert kinds.count("launch") == 4 and kinds[-1] == "finish"
    checked, problems = api.verify()
    assert checked == 5 and not problems  # 4 trials and the sweep report's run


def _wait_for_agent(data_dir, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        agents = _control(data_dir).list_agents()
        if agents and agents[0].state.get("trials"):
            return agents[0]
        time.sleep(0.2)
    raise AssertionError("no agent appeared")


def test_a_person_stops_a_running_agent_and_the_reason_is_recorded(ray_local, data_dir):
    obj = toy(budget={"trials": 50}, space={"x": {"uniform": [0, 1]}, "y": {"uniform": [0, 1]},
                                            "steps": 200, "step_s": 0.05})
    out = {}
    th = threading.Thread(target=lambda: out.update(r=run_objective(obj, dir=data_dir,
                                                                    poll_interval=0.2)))
    th.start()
    agent = _wait_for_agent(data_dir)
    _control(data_dir).add_override(Override(agent.agent_id, "stop", {}, "alice",
                                             "enough for today", hlc="9" * 13 + ".0.x",
                                             time=time.time()))
    th.join(120)
    assert not th.is_alive() and out["r"].status == "stopped"
    ds = _control(data_dir).decisions(agent_id=agent.agent_id)
    ov = [d for d in ds if d.kind == "override"]
    assert ov and ov[0].explanation["actor"] == "alice"
    assert ov[0].explanation["reason"] == "enough for today"
    assert sum(1 for d in ds if d.kind == "launch") < 50


@pytest.mark.slow
def test_killed_agent_actor_is_restarted_and_resumes_the_runs_of_its_trials(ray_local,
                                                                           data_dir):
    import ray

    obj = toy(budget={"trials": 6}, stoppers=[],
              space={"x": {"uniform": [0, 1]}, "y": {"uniform": [0, 1]}, "steps": 30,
                     "step_s": 0.1})
    out = {}
    th = threading.Thread(target=lambda: out.update(r=run_objective(obj, dir=data_dir,
                                                                    poll_interval=0.2)))
    th.start()
    agent = _wait_for_agent(data_dir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            t["status"] == "running"
            for t in _control(data_dir).get_agent(agent.agent_id).state["trials"].values()):
        time.sleep(0.2)
    time.sleep(1.0)  # the running trials' runs are durable and have logged a few steps
    actor = ray.get_actor(f"assay-agent-{agent.agent_id}")
    ray.kill(actor, no_restart=False)  # the process dies; Ray restarts the actor
    th.join(300)
    assert not th.is_alive() and out["r"].status == "finished"
    row = _control(data_dir).get_agent(agent.agent_id)
    trials = row.state["trials"]
    assert len(trials) == 6  # the relaunches are not new trials
    configs = [(t["config"]["x"], t["config"]["y"]) for t in trials.values()]
    assert len(set(configs)) == 6
    assert all(t["status"] == "completed" for t in trials.values())
    assert not any("restarted" in t["reason"] for t in trials.values())
    ds = _control(data_dir).decisions(agent_id=agent.agent_id)
    resumed = {d.trial_id for d in ds if d.kind == "resume"}
    assert resumed and not [d for d in ds if d.kind == "fail"]
    assert sum(1 for d in ds if d.kind == "launch") == 6
    api = assay.Api(data_dir)
    for tid in resumed:
        rec = api.run(tid)  # the same run, continued by the relaunched trial
        assert rec.status == "completed" and rec.attach >= 1
        assert trials[tid]["relaunches"] == 1
        steps = api.history(tid, "score")["step"].to_list()
        assert steps == sorted(set(steps)) and steps[-1] == 29


def test_two_agents_share_a_project_budget_and_never_duplicate_a_config(ray_local, data_dir):
    space = {"x": {"choice": [0.1, 0.3, 0.5, 0.7, 0.9]}, "y": {"choice": [0.2, 0.7]},
             "steps": 4, "step_s": 0.05}
    objs = [toy(name=f"toy{i}", space=space, searcher="grid", stoppers=[], seed=i,
                budget={"trials": 6}, project_budget={"trials": 8}) for i in range(2)]
    out: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: out.update({i: run_objective(
        objs[i], dir=data_dir, poll_interval=0.2)})) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(240)
    assert len(out) == 2 and all(r.status == "finished" for r in out.values())
    runs = assay.Api(data_dir).runs(project="toyproj")
    runs = runs.filter(~runs["name"].str.starts_with("report-"))  # sweep reports' own runs
    assert runs.height == 8  # the project budget, shared
    configs = list(zip(runs["config.x"].to_list(), runs["config.y"].to_list()))
    assert len(set(configs)) == 8  # leases: no config ran twice


def stubborn(config, run):
    """A trial that never checks run.should_stop(): only a kill ends it."""
    step = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        run.log({"score": 0.01 * step}, step=step)
        step += 1
        time.sleep(0.1)
    return {"score": 0.0}


def test_a_stopped_agent_polls_on_until_a_trial_that_ignores_the_stop_is_killed(ray_local,
                                                                               data_dir):
    from assay.agents.agent import Agent
    from assay.policies import TrialStatus
    from assay.scheduler.metrics import StoreMetricSource
    from assay.scheduler.ray_backend import RayBackend
    from assay.store.control import AgentStatus
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import it
    obj = Objective.from_dict({"name": "deaf", "project": "deafproj", "train": stubborn,
                               "metric": "score", "space": {"x": {"uniform": [0, 1]}},
                               "budget": {"trials": 2}, "concurrency": 1, "stop_grace": 2,
                               "searcher": "random", "stoppers": []})
    backend = RayBackend(data_dir, heartbeat_s=0.2)
    control = _control(data_dir)
    agent = Agent(obj, backend, StoreMetricSource(data_dir, keys=["score"]), control,
                  ahead=False)
    try:
        deadline = time.monotonic() + 120
        while not any(t.status is TrialStatus.RUNNING for t in agent.trials.values()):
            assert time.monotonic() < deadline, "the trial never started"
            agent.step()
            time.sleep(0.2)
        control.add_override(Override(agent.agent_id, "stop", {}, "alice", "enough",
                                      hlc="9" * 13 + ".0.x", time=time.time()))
        agent.run(poll_interval=0.2, max_steps=600)
        assert agent.status is AgentStatus.STOPPED and not agent.active
        (t,) = agent.trials.values()
        assert t.status is TrialStatus.STOPPED and "killed after 2 s grace" in t.reason
        assert not backend.running()
        row = control.get_agent(agent.agent_id)
        assert {x["status"] for x in row.state["trials"].values()} == {"stopped"}
        assert [d.kind for d in control.decisions(agent_id=agent.agent_id)
                if d.trial_id == t.trial_id][-1] == "stop"
    finally:
        agent.close()
        backend.shutdown()
