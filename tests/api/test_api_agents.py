"""Agents, decisions and overrides over HTTP, against a real uvicorn server."""

from __future__ import annotations

import os
import re
import time

import pytest
from assay.store.control import AgentRow, AgentStatus, Decision, LanceControlStore
from assay.store.ingest import IngestLock
from assay.store.lance import LanceStore

pytestmark = pytest.mark.integration


@pytest.fixture
def agent(data_dir):
    ctl = LanceControlStore(LanceStore(data_dir), IngestLock(data_dir))
    spec = {"name": "toy", "project": "p", "metric": "score", "mode": "max", "owner": "researcher",
            "budget": {"trials": 4}}
    state = {"trials": {"t1": {"config": {"x": 0.1}, "status": "completed", "final": 0.9,
                               "origin": "searcher", "reason": "", "curve": [[0, 0.5]]},
                        "t2": {"config": {"x": 0.7}, "status": "running", "final": None,
                               "origin": "searcher", "reason": "", "curve": []}},
             "best": "t1", "concurrency": 2}
    ctl.save_agent(AgentRow("agtoy00001", "toy", "p", spec, state=state, hlc="1"))
    ctl.add_decisions([Decision("agtoy00001", "p", "t1", "launch", "launch (sobol)", {"acq": 1},
                                "2", 0.0),
                       Decision("agtoy00001", "p", "t2", "launch", "launch (gp)", {"acq": 2},
                                "3", 0.0)])
    return ctl


def test_viewers_read_agents_and_decisions(server, client, agent):
    c = client("viewer")
    got = c.get("/api/agents").json()["agents"]
    assert got[0]["agent_id"] == "agtoy00001" and got[0]["counts"] == {"completed": 1,
                                                                        "running": 1}
    assert got[0]["best"]["value"] == 0.9
    one = c.get("/api/agents/agtoy00001").json()
    assert {t["trial_id"] for t in one["trials"]} == {"t1", "t2"}
    ds = c.get("/api/decisions", params={"agent_id": "agtoy00001"}).json()["decisions"]
    assert [d["trial_id"] for d in ds] == ["t1", "t2"] and ds[1]["explanation"] == {"acq": 2}
    assert c.get("/api/agents/nosuchagent").status_code == 404


def test_overrides_need_a_supervisor_or_the_owner_and_a_reason(server, client, agent):
    body = {"action": "pause", "reason": "GPU maintenance"}
    assert client("viewer").post("/api/agents/agtoy00001/overrides", json=body).status_code == 403
    other = client("researcher2").post("/api/agents/agtoy00001/overrides", json=body)
    assert other.status_code == 403 and "only the ones they declared" in other.json()["hint"]
    r = client("supervisor").post("/api/agents/agtoy00001/overrides", json=body)
    assert r.status_code == 202 and r.json()["status"] == "pending"
    assert client("researcher").post("/api/agents/agtoy00001/overrides",
                                     json=body).status_code == 202  # the owner
    bad = client("supervisor").post("/api/agents/agtoy00001/overrides",
                                    json={"action": "pause", "reason": ""})
    assert bad.status_code in (400, 422) and "reason" in bad.text
    nope = client("supervisor").post("/api/agents/agtoy00001/overrides",
                                     json={"action": "explode", "reason": "x"})
    assert nope.status_code in (400, 422)
    ov = client("viewer").get("/api/agents/agtoy00001/overrides").json()["overrides"]
    assert [(o["action"], o["actor"], o["reason"]) for o in ov] == [
        ("pause", "supervisor", "GPU maintenance"), ("pause", "researcher", "GPU maintenance")]
    stop = client("supervisor").post("/api/runs/t2/stop", json={"reason": "looks diverged"})
    assert stop.status_code == 202
    assert agent.overrides("agtoy00001")[-1].params == {"trial_id": "t2"}
    assert client("supervisor").post("/api/runs/zzz/stop",
                                     json={"reason": "x"}).status_code == 404


def test_bad_objectives_get_400_with_a_hint(server, client):
    r = client("researcher").post("/api/objectives", json={
        "name": "o", "project": "p", "train": "examples.toy:train", "metric": "score",
        "budgte": {"trials": 3}})
    assert r.status_code == 400 and "budget" in r.json()["hint"]
    r = client("researcher").post("/api/objectives", json={
        "name": "o", "project": "p", "train": "nowhere.mod:train", "metric": "score"})
    assert r.status_code == 400 and "cannot import" in r.json()["error"]
    assert client("viewer").post("/api/objectives", json={}).status_code == 403
    for bad in (5, True, {"a": 1}):  # 5 was a 500; a mapping was read as its keys
        r = client("researcher").post("/api/objectives", json={
            "name": "o", "project": "p", "train": "examples.toy:train", "metric": "score",
            "reevaluate_on": bad})
        assert r.status_code == 400, r.text
        assert "reevaluate_on must be an artifact name" in r.json()["error"]
    for searcher, said in (({"botorch": {"n_inital": 3}}, "did you mean 'n_initial'"),
                           ({"grid": {"points_per_dim": 0}}, "points_per_dim"),
                           (["botorch", "tpe"], "one searcher")):
        r = client("researcher").post("/api/objectives", json={  # refused before any agent
            "name": "o", "project": "p", "train": "examples.toy:train", "metric": "score",
            "space": {"x": {"uniform": [0.0, 1.0]}}, "searcher": searcher})
        assert r.status_code == 400, r.text
        assert said in r.json()["error"] + r.json()["hint"]
    assert client("viewer").get("/api/agents").json()["agents"] == []  # none started


@pytest.mark.slow
def test_an_objective_declared_over_http_runs_to_the_end(server, client):
    r = client("researcher").post("/api/objectives", json={
        "name": "toy", "project": "httpproj", "train": "examples.toy:train", "metric": "score",
        "mode": "max", "space": {"x": {"uniform": [0, 1]}, "y": {"uniform": [0, 1]}, "steps": 3},
        "budget": {"trials": 2}, "concurrency": 1, "searcher": "random"})
    assert r.status_code == 202
    aid = r.json()["agent_id"]
    # At once, before its process saved a row: readable, and steerable (helper-61: 404s).
    got = client("viewer").get(f"/api/agents/{aid}")
    assert got.status_code == 200 and got.json()["status"] in ("starting", "running")
    sent = client("researcher").post(f"/api/agents/{aid}/overrides", json={
        "action": "concurrency", "params": {"concurrency": 1}, "reason": "one at a time"})
    assert sent.status_code == 202, sent.text
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        got = client("viewer").get(f"/api/agents/{aid}")
        if got.status_code == 200 and got.json()["status"] == "finished":
            break
        time.sleep(1)
    assert got.json()["status"] == "finished" and got.json()["owner"] == "researcher"
    ov = client("viewer").get(f"/api/agents/{aid}/overrides").json()["overrides"]
    assert [(o["action"], o["status"]) for o in ov] == [("concurrency", "applied")]


def test_a_command_train_target_needs_a_supervisor(server, client):
    body = {"name": "o", "project": "p", "train": ["sh", "-c", "cat auth/tokens.json"],
            "metric": "score", "space": {"x": {"uniform": [0, 1]}}, "budget": {"trials": 1}}
    r = client("researcher").post("/api/objectives", json=body)
    assert r.status_code == 403 and "module:function" in r.json()["hint"]
    r = client("researcher").post("/api/objectives", json={**body, "train": "python train.py"})
    assert r.status_code == 403  # a command as one string too
    assert not list(server.data_dir.glob("objectives/*.json"))  # no agent was started


def test_overrides_the_agent_would_reject_get_400_and_nothing_is_stored(server, client, agent):
    agent.save_agent(AgentRow("agtoy00001", "toy", "p", {
        "name": "toy", "project": "p", "metric": "score", "owner": "researcher",
        "budget": {"trials": 4, "wall_clock": "1h"},
        "space": {"x": {"uniform": [0, 1]}, "steps": 3}},
        state=agent.get_agent("agtoy00001").state, hlc="1"))
    sup = client("supervisor")
    for params, action, says in [
            ({"budget": {"trials": -5}}, "budget", "at least 1"),
            ({"budget": "trials=3"}, "budget", "must be a mapping"),
            ({}, "budget", "needs params.budget"),
            ({"budget": {"wall_clock_s": 5, "wall_clock": "1h"}}, "budget", "twice"),
            ({"space": [1, 2]}, "space", "must be a mapping"),
            ({"spcae": {"x": {"uniform": [0, 1]}}}, "space", "does not take params"),
            ({"space": {"x": {"uniform": [1, 0]}}}, "space", "x"),
            ({"config": "x=0.1"}, "pin", "must be a mapping"),
            ({"config": {"x": 0.5, "steps": 3, "y": 1}}, "pin", "'y'"),
            ({"config": {"x": 5.0, "steps": 3}}, "pin", "outside"),
            ({"concurrency": 0}, "concurrency", "int from 1 to"),
            ({"trial_id": 123}, "pause", "does not take params"),
            ({"trial_id": 123}, "stop_run", "run id")]:
        r = sup.post("/api/agents/agtoy00001/overrides",
                     json={"action": action, "reason": "x", "params": params})
        assert r.status_code == 400, (params, r.text)
        assert says in r.json()["error"] and r.json()["hint"], (params, r.text)
    ok_ = sup.post("/api/agents/agtoy00001/overrides", json={
        "action": "budget", "reason": "x", "params": {"budget": {"wall_clock_s": 60}}})
    assert ok_.status_code == 202
    assert len(agent.overrides("agtoy00001")) == 1  # only the valid one


def test_a_pin_of_a_config_already_run_or_pinned_and_a_blank_reason_get_400(server, client,
                                                                           agent):
    """Both were accepted (202) and then rejected by the agent at its next step, seen only
    in the overrides list (a supervisor review's finding); the dashboard pre-filled one."""
    row = agent.get_agent("agtoy00001")
    spec = {**row.spec, "space": {"x": {"uniform": [0, 1]}, "steps": 3}}
    state = {**row.state, "pinned": [{"x": 0.3, "steps": 3}]}
    state["trials"] = {**state["trials"], "t1": {**state["trials"]["t1"],
                                                 "config": {"x": 0.1, "steps": 3}}}
    agent.save_agent(AgentRow(row.agent_id, row.objective, row.project, spec, state=state,
                              hlc="1"))
    sup = client("supervisor")
    for config, says in (({"x": 0.1, "steps": 3}, "duplicates this agent's trial t1"),
                         ({"x": 0.3, "steps": 3}, "pinned already")):
        r = sup.post("/api/agents/agtoy00001/overrides",
                     json={"action": "pin", "reason": "try it", "params": {"config": config}})
        assert r.status_code == 400 and says in r.json()["error"], r.text
    for body, path in (({"action": "pause", "reason": "   "}, "/api/agents/agtoy00001/overrides"),
                       ({"reason": " \n "}, "/api/runs/t2/stop")):
        r = sup.post(path, json=body)
        assert r.status_code == 400 and "reason" in r.text, r.text
    assert agent.overrides("agtoy00001") == []  # nothing stored
    ok_ = sup.post("/api/agents/agtoy00001/overrides", json={
        "action": "pin", "reason": "try it", "params": {"config": {"x": 0.5, "steps": 3}}})
    assert ok_.status_code == 202


def test_overrides_to_a_finished_agent_or_an_ended_run_get_409(server, client, agent):
    sup = client("supervisor")
    r = sup.post("/api/agents/agtoy00001/overrides",
                 json={"action": "stop_run", "reason": "x", "params": {"trial_id": "t1"}})
    assert r.status_code == 409 and "completed" in r.json()["error"]
    assert sup.post("/api/runs/t1/stop", json={"reason": "x"}).status_code == 409
    r = sup.post("/api/agents/agtoy00001/overrides",
                 json={"action": "stop_run", "reason": "x", "params": {"trial_id": "t9"}})
    assert r.status_code == 404
    row = agent.get_agent("agtoy00001")
    for status in ("finished", "failed", "stopped"):
        agent.save_agent(AgentRow(row.agent_id, row.objective, row.project, row.spec,
                                  status=AgentStatus(status), state=row.state, hlc="1"))
        for action in ("resume", "stop", "pause"):
            r = sup.post("/api/agents/agtoy00001/overrides",
                         json={"action": action, "reason": "x"})
            assert r.status_code == 409 and status in r.json()["error"]
        assert sup.post("/api/runs/t2/stop", json={"reason": "x"}).status_code == 409
    assert agent.overrides("agtoy00001") == []


def test_objectives_with_mistyped_values_get_400_not_500_and_start_nothing(server, client,
                                                                          monkeypatch):
    import assay.api.agents as routes

    started = []
    monkeypatch.setattr(routes.subprocess, "Popen", lambda *a, **kw: started.append(a))
    base = {"name": "o", "project": "p", "train": "examples.toy:train", "metric": "score",
            "space": {"x": {"uniform": [0, 1]}}}
    for extra in ({"space": [1, 2]}, {"space": None}, {"resources": "gpu"},
                  {"stoppers": {"asha": 1}}, {"stoppers": [{"asha": {"max_step": "x"}}]},
                  {"trial_timeout": "soon"}, {"seed": "x"}, {"warm_start": "yes"}):
        r = client("researcher").post("/api/objectives", json={**base, **extra})
        assert r.status_code == 400, (extra, r.text)
    assert not started and not list(server.data_dir.glob("objectives/*.json"))


def test_an_objective_with_a_different_project_budget_than_the_projects_gets_409(
        server, client, agent, monkeypatch):
    import assay.api.agents as routes
    from assay.agents.overrides import PROJECT_BUDGET_KEY

    monkeypatch.setattr(routes.subprocess, "Popen", lambda *a, **kw: None)
    agent.claim_lease(PROJECT_BUDGET_KEY + "capped", "agother0001", "12", "1")
    body = {"name": "o", "project": "capped", "train": "examples.toy:train", "metric": "score",
            "space": {"x": {"uniform": [0, 1]}}, "project_budget": {"trials": 100}}
    r = client("researcher").post("/api/objectives", json=body)
    assert r.status_code == 409 and "12 trials already" in r.json()["error"]
    r = client("researcher").post("/api/objectives",
                                  json={**body, "project_budget": {"trials": 12}})
    assert r.status_code == 202


def test_an_objective_asking_for_more_than_this_machine_has_gets_400_and_starts_nothing(
        server, client, monkeypatch):
    import assay.api.agents as routes
    import assay.scheduler.ray_backend as rb

    started = []
    monkeypatch.setattr(routes.subprocess, "Popen", lambda *a, **kw: started.append(a))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # What a local Ray on this machine would have (the agent's server-side Ray); no GPU.
    monkeypatch.setattr(rb, "local_resources", lambda: {"CPU": 4.0, "GPU": 0.0})
    body = {"name": "g", "project": "p", "train": "examples.toy:train", "metric": "score",
            "space": {"x": {"uniform": [0, 1]}}, "budget": {"trials": 2, "wall_clock": "45s"},
            "resources": {"cpus": 1, "gpus": 1}}
    r = client("researcher").post("/api/objectives", json=body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert "1 GPU" in err["error"] and "0 GPU" in err["error"]
    assert "resources" in err["hint"] and "add nodes" in err["hint"]
    r = client("researcher").post("/api/objectives", json={**body, "resources": {"cpus": 8}})
    assert r.status_code == 400 and "8 CPU" in r.json()["error"]
    assert not started and not list(server.data_dir.glob("objectives/*.json"))
    r = client("researcher").post("/api/objectives", json={**body, "resources": {"cpus": 2}})
    assert r.status_code == 202 and len(started) == 1


def test_a_wrong_duration_unit_names_the_key_the_user_wrote(server, client, agent):
    body = {"name": "o", "project": "p", "train": "examples.toy:train", "metric": "score",
            "space": {"x": {"uniform": [0, 1]}}, "budget": {"wall_clock": "10 minutes"}}
    r = client("researcher").post("/api/objectives", json=body)
    assert r.status_code == 400
    assert "budget.wall_clock" in r.json()["error"] and "wall_clock_s" not in r.json()["error"]
    assert "10m" in r.json()["hint"]
    r = client("supervisor").post("/api/agents/agtoy00001/overrides", json={
        "action": "budget", "reason": "x", "params": {"budget": {"wall_clock": "10 minutes"}}})
    assert r.status_code == 400 and "params.budget.wall_clock" in r.json()["error"]


def test_stopping_a_run_that_does_not_exist_is_404_no_run(server, client, agent, data_dir):
    import assay

    r = client("supervisor").post("/api/runs/nope1234/stop", json={"reason": "x"})
    assert r.status_code == 404 and r.json()["error"] == "no run 'nope1234'"
    run = assay.init(project="p", system_metrics_interval=None, capture=False)
    run.log({"loss": 1.0})
    run.finish()
    r = client("supervisor").post(f"/api/runs/{run.id}/stop", json={"reason": "x"})
    assert r.status_code == 404 and "was not launched by an agent" in r.json()["error"]
    assert agent.overrides("agtoy00001") == []


def test_an_agent_the_server_starts_keeps_everything_in_its_directory(server, client,
                                                                      monkeypatch):
    """An operator's $ASSAY_SERVER/$ASSAY_TOKEN (pointing back at this server) would send the
    agent it starts, and its trials, through HTTP to itself: they are not passed on."""
    import subprocess
    from types import SimpleNamespace

    import assay.api.agents as routes

    started: list[dict[str, str]] = []
    monkeypatch.setattr(routes, "subprocess", SimpleNamespace(  # not subprocess.Popen itself:
        DEVNULL=subprocess.DEVNULL,  # Ray subclasses it when first imported
        Popen=lambda *a, **kw: started.append(kw["env"])))
    monkeypatch.setenv("ASSAY_SERVER", server.url)
    monkeypatch.setenv("ASSAY_TOKEN", "asy_operator")
    r = client("researcher").post("/api/objectives", json={
        "name": "o", "project": "p", "train": "examples.toy:train", "metric": "score",
        "space": {"x": {"uniform": [0, 1]}}})
    assert r.status_code == 202, r.text
    (env,) = started
    assert "ASSAY_SERVER" not in env and "ASSAY_TOKEN" not in env
    assert env["PATH"] == os.environ["PATH"]


def test_an_override_to_an_agent_silent_for_minutes_warns_that_it_may_be_dead(
        server, client, agent, monkeypatch):
    """helper-61: overrides to a killed agent were accepted (202) and stayed pending with no
    word; the answer now says the agent has not reported for a while."""
    body = {"action": "pause", "reason": "check"}
    fresh = client("supervisor").post("/api/agents/agtoy00001/overrides", json=body)
    assert fresh.status_code == 202 and "warning" not in fresh.json()
    later = time.time() + 600
    monkeypatch.setattr(time, "time", lambda: later)
    r = client("supervisor").post("/api/agents/agtoy00001/overrides", json=body)
    assert r.status_code == 202 and r.json()["status"] == "pending"
    assert re.search(r"has not reported for 6\d\d s", r.json()["warning"]), r.json()


def test_an_agent_shows_the_space_it_searches_now_beside_the_declared_spec(server, client,
                                                                          agent):
    """helper-61: after a space override, GET /api/agents/{id} still showed only the
    declared space (in ``spec``)."""
    a = agent.get_agent("agtoy00001")
    declared = {"x": {"uniform": [0.0, 1.0]}}
    now = {"x": {"uniform": [0.0, 0.5]}}
    agent.save_agent(AgentRow(a.agent_id, a.objective, a.project, {**a.spec, "space": declared},
                              state={**a.state, "space": now}, hlc="4"))
    got = client("viewer").get("/api/agents/agtoy00001").json()
    assert got["spec"]["space"] == declared and got["space"] == now


def test_an_agent_declared_but_not_started_yet_is_readable_and_steerable(server, client,
                                                                        data_dir):
    """helper-61: right after POST /api/objectives answered, the agent's routes said 404
    "no agent" for 10-25 s (its process had not saved a row yet)."""
    import json

    spec = {"name": "toy", "project": "p", "train": "examples.toy:train", "metric": "score",
            "mode": "max", "space": {"x": {"uniform": [0, 1]}}, "budget": {"trials": 4},
            "owner": "researcher"}
    (data_dir / "objectives").mkdir(exist_ok=True)
    (data_dir / "objectives" / "agstart0001.json").write_text(json.dumps(spec))
    got = client("viewer").get("/api/agents/agstart0001")
    assert got.status_code == 200, got.text
    assert got.json()["status"] == "starting" and got.json()["owner"] == "researcher"
    body = {"action": "pause", "reason": "wait for the data"}
    assert client("researcher2").post("/api/agents/agstart0001/overrides",
                                      json=body).status_code == 403  # not its owner
    r = client("researcher").post("/api/agents/agstart0001/overrides", json=body)
    assert r.status_code == 202 and "warning" not in r.json()
    ov = client("viewer").get("/api/agents/agstart0001/overrides").json()["overrides"]
    assert [(o["action"], o["status"]) for o in ov] == [("pause", "pending")]
    assert client("viewer").get("/api/agents/agnone00001").status_code == 404


def test_an_override_retried_with_its_idempotency_key_is_stored_once(server, client, agent):
    """helper-61: a retried request (a lost answer) stored a second override, and a
    /runs/{id}/stop sent twice was applied twice. With an ``Idempotency-Key`` the retry
    answers the first override and stores nothing; the key is the caller's own."""
    body = {"action": "concurrency", "params": {"concurrency": 1}, "reason": "fewer"}
    key = {"Idempotency-Key": "ci-run-42:concurrency"}
    first = client("supervisor").post("/api/agents/agtoy00001/overrides", json=body,
                                      headers=key)
    again = client("supervisor").post("/api/agents/agtoy00001/overrides", json=body,
                                      headers=key)
    assert first.status_code == 202 and again.status_code == 200, again.text
    assert again.json()["override_id"] == first.json()["override_id"]
    assert again.json()["replayed"] and again.json()["status"] == "pending"
    other = client("supervisor").post("/api/agents/agtoy00001/overrides", headers=key,
                                      json={**body, "params": {"concurrency": 2}})
    assert other.status_code == 409 and "new key" in other.json()["hint"]
    mine = client("researcher").post("/api/agents/agtoy00001/overrides", json=body,
                                     headers=key)  # another caller's key space
    assert mine.status_code == 202 and mine.json()["override_id"] != first.json()["override_id"]
    stop = {"reason": "diverged"}
    skey = {"Idempotency-Key": "stop-t2"}
    s1 = client("supervisor").post("/api/runs/t2/stop", json=stop, headers=skey)
    s2 = client("supervisor").post("/api/runs/t2/stop", json=stop, headers=skey)
    assert (s1.status_code, s2.status_code) == (202, 200)
    assert [o.action for o in agent.overrides("agtoy00001")] == [
        "concurrency", "concurrency", "stop_run"]
    bad = client("supervisor").post("/api/agents/agtoy00001/overrides", json=body,
                                    headers={"Idempotency-Key": "not ok!"})
    assert bad.status_code in (400, 422)
