"""``assay.Api``'s agents, decisions and overrides: on a data directory and against a real
uvicorn server (the same calls, the same frames; the server's roles apply)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import polars as pl
import pytest
from assay import Api
from assay.errors import (
    AssayError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    UserInputError,
)
from assay.store.control import AgentRow, AgentStatus, Decision, LanceControlStore
from assay.store.ingest import IngestLock
from assay.store.lance import LanceStore
from loopback_server import free_port

AGENT = "agtoy00001"


@pytest.fixture
def agent(data_dir: Path) -> LanceControlStore:
    ctl = LanceControlStore(LanceStore(data_dir), IngestLock(data_dir))
    spec = {"name": "toy", "project": "p", "metric": "score", "mode": "max",
            "owner": "researcher", "budget": {"trials": 4},
            "space": {"x": {"uniform": [0, 1]}, "steps": 3}}
    state = {"trials": {"t1": {"config": {"x": 0.1, "steps": 3}, "status": "completed",
                               "final": 0.9, "origin": "searcher", "reason": "",
                               "curve": [[0, 0.5]]},
                        "t2": {"config": {"x": 0.7, "steps": 3}, "status": "running",
                               "final": None, "origin": "searcher", "reason": "", "curve": []}},
             "best": "t1", "concurrency": 2}
    ctl.save_agent(AgentRow(AGENT, "toy", "p", spec, state=state, hlc="1", updated_at=1.7e9))
    ctl.add_decisions([
        Decision(AGENT, "p", "t1", "launch", "launch (sobol)", {"method": "sobol"}, "2", 1.7e9),
        Decision(AGENT, "p", "t2", "launch", "launch (gp)", {"acquisition_value": 0.25,
                                                             "nested": {"a": [1, 2]}},
                 "3", 1.7e9 + 5),
        Decision(AGENT, "p", "t1", "complete", "completed with score 0.9", {}, "4", 1.7e9 + 9)])
    return ctl


def test_agents_and_decisions_as_frames_from_a_data_directory(data_dir, agent):
    api = Api(data_dir)
    df = api.agents()
    assert df.height == 1 and df["agent_id"].to_list() == [AGENT]
    row = df.row(0, named=True)
    assert (row["status"], row["owner"], row["metric"], row["mode"]) == (
        "running", "researcher", "score", "max")
    assert (row["trials_total"], row["trials.completed"], row["trials.running"]) == (2, 1, 1)
    assert (row["best_trial_id"], row["best_value"], row["concurrency"]) == ("t1", 0.9, 2)
    assert df.schema["updated_at"] == pl.Datetime("us", "UTC")
    assert api.agents(project="other").height == 0
    one = api.agent(AGENT)
    assert {t["trial_id"] for t in one["trials"]} == {"t1", "t2"} and one["spec"]["owner"]
    ds = api.decisions(AGENT)
    assert ds["trial_id"].to_list() == ["t1", "t2", "t1"]
    assert json.loads(ds["explanation"][1]) == {"acquisition_value": 0.25,
                                                "nested": {"a": [1, 2]}}
    assert api.decisions(AGENT, kind="launch").height == 2
    assert api.decisions(trial_id="t1")["kind"].to_list() == ["launch", "complete"]
    assert api.decisions(AGENT, limit=1)["kind"].to_list() == ["complete"]
    assert api.overrides(AGENT).height == 0


def test_bad_arguments_get_clear_errors_and_store_nothing(data_dir, agent):
    api = Api(data_dir)
    with pytest.raises(UserInputError, match="unknown decision kind 'lanch'") as e:
        api.decisions(AGENT, kind="lanch")
    assert "launch" in e.value.hint
    with pytest.raises(NotFoundError, match="no agent 'agnope0000'"):
        api.decisions("agnope0000")
    with pytest.raises(NotFoundError, match="no agent '../x'") as e:
        api.agent("../x")
    assert "assay agents" in e.value.hint
    with pytest.raises(UserInputError, match="needs a reason"):
        api.pause(AGENT, reason="   ")
    with pytest.raises(UserInputError, match="unknown override action 'explode'"):
        api.override(AGENT, "explode", reason="x")
    with pytest.raises(UserInputError, match="concurrency must be an int from 1 to"):
        api.set_concurrency(AGENT, 0, reason="x")
    with pytest.raises(UserInputError, match="duplicates this agent's trial t1"):
        api.pin(AGENT, {"x": 0.1, "steps": 3}, reason="again")
    with pytest.raises(UserInputError, match="limit must be an int"):
        api.decisions(AGENT, limit=0)
    with pytest.raises(ConflictError, match="completed, not running"):
        api.stop_run("t1", reason="x")
    with pytest.raises(NotFoundError, match="no run 'zzz'"):
        api.stop_run("zzz", reason="x")
    assert agent.overrides(AGENT) == []  # nothing stored by any of them
    assert api.audit_log() == []


def test_overrides_from_python_are_stored_audited_and_refused_once_the_agent_ended(
        data_dir, agent):
    api = Api(data_dir)
    sent = api.pause(AGENT, reason="GPU maintenance")
    assert sent["status"] == "pending" and sent["action"] == "pause"
    api.set_budget(AGENT, {"trials": 10}, reason="promising")
    api.stop_run("t2", reason="diverging")
    ov = api.overrides(AGENT)
    assert ov["action"].to_list() == ["pause", "budget", "stop_run"]
    assert ov["override_id"][0] == sent["override_id"]
    assert ov["reason"].to_list() == ["GPU maintenance", "promising", "diverging"]
    assert json.loads(ov["params"][2]) == {"trial_id": "t2"}
    assert set(ov["status"]) == {"pending"}
    stored = agent.overrides(AGENT)
    assert stored[1].params == {"budget": {"trials": 10}}
    trail = api.audit_log()
    assert [e["action"] for e in trail] == ["override.pause", "override.budget",
                                            "override.stop_run"]
    assert trail[0]["reason"] == "GPU maintenance" and trail[0]["target"] == f"agent:{AGENT}"
    row = agent.get_agent(AGENT)
    agent.save_agent(AgentRow(row.agent_id, row.objective, row.project, row.spec,
                              status=AgentStatus.FINISHED, state=row.state, hlc="9"))
    with pytest.raises(ConflictError, match="finished") as e:
        api.resume(AGENT, reason="go on")
    assert "assay run" in e.value.hint
    assert len(agent.overrides(AGENT)) == 3


def test_decision_kinds_cover_every_kind_an_agent_records():
    """A kind an agent records but DECISION_KINDS lacks would be refused as a filter."""
    from assay.sdk.control_api import DECISION_KINDS

    root = Path(__file__).resolve().parents[2] / "agents"
    found = set()
    for path in root.glob("*.py"):
        found |= set(re.findall(r'_decide\([^,]+,\s*"([a-z_]+)"', path.read_text()))
    assert found and "override" in DECISION_KINDS
    assert found <= set(DECISION_KINDS), found - set(DECISION_KINDS)


def test_server_and_dir_choice(data_dir, monkeypatch):
    with pytest.raises(UserInputError, match="not both"):
        Api(data_dir, server="http://127.0.0.1:1")
    with pytest.raises(UserInputError, match="http"):
        Api(server="ftp://x")
    with pytest.raises(UserInputError, match="token= is for server="):
        Api(data_dir, token="t")
    monkeypatch.setenv("ASSAY_SERVER", "http://127.0.0.1:9/")
    # $ASSAY_SERVER alone redirects nothing: a data directory stays the default.
    assert not Api().is_remote and Api().dir == data_dir
    assert Api(server="http://127.0.0.1:9/").server == "http://127.0.0.1:9"
    api = Api(server="http://127.0.0.1:9")
    for call in (api.verify, api.checkpoint, lambda: api.gc()):
        with pytest.raises(UserInputError, match="asks the server") as e:
            call()
        assert "Api(dir=DATA_DIR)" in e.value.hint


# -- against a real server ------------------------------------------------------------------
pytestmark_remote = pytest.mark.integration


@pytestmark_remote
def test_a_servers_agents_read_the_same_as_the_directorys(server, tokens, data_dir, agent):
    local = Api(data_dir)
    with Api(server=server.url, token=tokens["viewer"]) as remote:
        assert remote.is_remote
        assert remote.agents().equals(local.agents())
        assert remote.decisions(AGENT).equals(local.decisions(AGENT))
        assert remote.decisions(trial_id="t1", kind="complete").equals(
            local.decisions(trial_id="t1", kind="complete"))
        assert remote.agent(AGENT)["trials"] == local.agent(AGENT)["trials"]
        assert remote.agent(AGENT)["budget_limits"] == {"trials": 4}
        with pytest.raises(NotFoundError):
            remote.agent("agnope0000")
        with pytest.raises(NotFoundError):
            remote.decisions("agnope0000")
        with pytest.raises(PermissionDeniedError):
            remote.pause(AGENT, reason="viewers cannot")
    assert agent.overrides(AGENT) == []


@pytestmark_remote
def test_overrides_through_a_server_follow_its_roles_and_checks(server, tokens, data_dir,
                                                                  agent):
    with Api(server=server.url, token=tokens["researcher2"]) as other:
        with pytest.raises(PermissionDeniedError, match="may not override") as e:
            other.pause(AGENT, reason="not mine")
        assert "only the ones they declared" in e.value.hint
    with Api(server=server.url, token=tokens["researcher"]) as owner:
        sent = owner.pause(AGENT, reason="GPU maintenance")
        assert sent["status"] == "pending" and sent["agent_id"] == AGENT
        with pytest.raises(UserInputError, match="duplicates this agent's trial t1"):
            owner.pin(AGENT, {"x": 0.1, "steps": 3}, reason="again")
        with pytest.raises(ConflictError, match="completed"):
            owner.stop_run("t1", reason="x")
        owner.stop_run("t2", reason="diverging")
        ov = owner.overrides(AGENT)
    assert ov["actor"].to_list() == ["researcher", "researcher"]  # the token's name
    assert ov["action"].to_list() == ["pause", "stop_run"]
    assert [o.reason for o in agent.overrides(AGENT)] == ["GPU maintenance", "diverging"]
    assert Api(data_dir).overrides(AGENT).drop("time").equals(ov.drop("time"))


@pytestmark_remote
def test_a_server_that_does_not_answer_or_refuses_the_token_says_so(server, agent):
    with Api(server=f"http://127.0.0.1:{free_port()}") as api:
        with pytest.raises(AssayError, match="cannot reach the assay server") as e:
            api.agents()
        assert "assay server" in e.value.hint
    with Api(server=server.url, token="not-a-token") as api, \
            pytest.raises(PermissionDeniedError):
        api.agents()


@pytestmark_remote
def test_the_command_line_overrides_and_lists_through_a_server(server, tokens, data_dir, agent,
                                                                monkeypatch):
    from assay.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    monkeypatch.delenv("ASSAY_DIR")  # the server's directory is not this machine's
    url = ["--server", server.url, "--token", tokens["researcher"]]
    out = runner.invoke(app, ["agents", *url])
    assert out.exit_code == 0 and AGENT in out.output and "0.9" in out.output, out.output
    out = runner.invoke(app, ["decisions", AGENT, *url])
    assert out.exit_code == 0 and "launch (gp)" in out.output, out.output
    # helper-67: raw epoch-ms times, no header, no --kind or --json.
    assert "time (UTC)" in out.output and "2023-11-14 22:13:" in out.output, out.output
    out = runner.invoke(app, ["decisions", AGENT, "--kind", "complete", *url])
    assert "completed with score 0.9" in out.output and "launch" not in out.output
    out = runner.invoke(app, ["decisions", AGENT, "--json", "-k", "launch", *url])
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["kind"] for r in rows] == ["launch", "launch"]
    assert rows[1]["explanation"]["acquisition_value"] == 0.25
    out = runner.invoke(app, ["pause", AGENT, *url])
    assert out.exit_code == 2 and "needs a reason" in out.output and "-r" in out.output
    out = runner.invoke(app, ["pause", AGENT, "-r", "GPU maintenance", *url])
    assert out.exit_code == 0 and "pause sent to agent" in out.output, out.output
    monkeypatch.setenv("ASSAY_TOKEN", tokens["researcher"])  # the token's default
    out = runner.invoke(app, ["stop-run", "t2", "-r", "diverging", "--server", server.url])
    assert out.exit_code == 0 and f"stop_run sent to agent {AGENT}" in out.output, out.output
    out = runner.invoke(app, ["stop", AGENT, "-r", "x", "--server", server.url,
                              "--token", tokens["viewer"]])
    assert out.exit_code == 2 and "viewer" in out.output, out.output
    out = runner.invoke(app, ["agents", "--dir", str(data_dir), "--server", server.url])
    assert out.exit_code == 2 and "not both" in out.output
    assert [(o.action, o.actor) for o in agent.overrides(AGENT)] == [
        ("pause", "researcher"), ("stop_run", "researcher")]


def test_an_agent_applies_what_python_sent_and_the_api_shows_the_outcome(data_dir,
                                                                         monkeypatch):
    """End to end on a real control store: an agent stepping on simulated curves picks up
    the overrides Api sent, and Api reads back their outcome and the agent's decisions."""
    import assay.agents.overrides as overrides_mod
    from assay.agents.agent import Agent
    from assay.agents.objective import Objective
    from assay.scheduler.base import SimClock
    from assay.scheduler.sim_backend import CurveSimulatorSource, SimBackend
    from assay.simulations.curves import CurveSimulator

    monkeypatch.setattr(overrides_mod, "OVERRIDE_POLL_S", 0.0)
    sim = CurveSimulator(seed=3, max_steps=20, metric="loss")
    obj = Objective.from_dict({
        "name": "sim", "project": "simproj", "train": "examples.digits:train",
        "metric": "loss", "mode": "min", "space": sim.space.to_dict(),
        "budget": {"trials": 12}, "concurrency": 3, "searcher": "random", "seed": 1})
    clock = SimClock()
    backend = SimBackend(clock, CurveSimulatorSource(sim), cpus=4)
    control = LanceControlStore(LanceStore(data_dir), IngestLock(data_dir))
    agent = Agent(obj, backend, backend, control, ahead=False)
    agent.step()
    api = Api(data_dir)
    aid = agent.agent_id
    assert api.agents()["status"].to_list() == ["running"]
    running = api.agent(aid)["trials"][0]["trial_id"]
    api.set_concurrency(aid, 1, reason="share the GPUs")
    api.stop_run(running, reason="looks diverged")
    with pytest.raises(UserInputError):
        api.set_budget(aid, {"trails": 5}, reason="typo")  # refused at once, not later
    api.pause(aid, reason="maintenance")
    agent.step()
    clock.advance(1)
    agent.step()
    ov = api.overrides(aid)
    assert ov["action"].to_list() == ["concurrency", "stop_run", "pause"]
    assert set(ov["status"]) == {"applied"}, ov
    assert api.agents()["status"].to_list() == ["paused"]
    assert api.agent(aid)["concurrency"] == 1
    stopped = {t["trial_id"]: t["status"] for t in api.agent(aid)["trials"]}
    assert stopped[running] == "stopped"
    said = api.decisions(aid, kind="override")
    why = [json.loads(e) for e in said["explanation"]]
    assert [(e["action"], e["reason"], e["status"]) for e in why] == [
        ("concurrency", "share the GPUs", "applied"), ("stop_run", "looks diverged", "applied"),
        ("pause", "maintenance", "applied")]
    assert said["summary"][0].startswith("concurrency by user:")
    assert api.decisions(aid, kind="launch").height >= 3


@pytestmark_remote
def test_non_finite_evidence_reads_the_same_here_and_from_a_server(server, tokens, data_dir,
                                                                  agent):
    row = agent.get_agent(AGENT)
    state = {**row.state, "trials": {**row.state["trials"], "t1": {
        **row.state["trials"]["t1"], "final": float("nan"), "curve": [[0, float("inf")]]}}}
    agent.save_agent(AgentRow(AGENT, row.objective, row.project, row.spec, state=state,
                              hlc="5", updated_at=row.updated_at))
    agent.add_decisions([Decision(AGENT, "p", "t2", "stop", "diverged",
                                  {"last": float("nan"), "slope": float("inf")}, "6", 1.7e9)])
    local = Api(data_dir)
    with Api(server=server.url, token=tokens["viewer"]) as remote:
        for api in (local, remote):
            ds = api.decisions(AGENT, kind="stop")
            assert ds["explanation"].str.json_decode().to_list() == [
                {"last": "NaN", "slope": "Infinity"}]  # strict JSON, as the server writes it
            t1 = next(t for t in api.agent(AGENT)["trials"] if t["trial_id"] == "t1")
            assert math.isnan(t1["final"]) and t1["curve"] == [[0, math.inf]]
        assert remote.decisions(AGENT).equals(local.decisions(AGENT))
        assert remote.agents().drop("updated_at").equals(local.agents().drop("updated_at"))


@pytestmark_remote
def test_override_params_are_sent_as_json_numbers_on_both_paths(server, tokens, data_dir,
                                                                agent):
    import numpy as np

    local = Api(data_dir)
    with Api(server=server.url, token=tokens["supervisor"]) as remote:
        for api in (local, remote):
            api.set_concurrency(AGENT, np.int64(3), reason="numpy int")
            api.pin(AGENT, {"x": np.float32(0.25), "steps": np.int64(3)}, reason="numpy")
            with pytest.raises(UserInputError, match="not a number the agent can use"):
                api.pin(AGENT, {"x": float("nan"), "steps": 3}, reason="nan")
    stored = agent.overrides(AGENT)
    assert [o.params for o in stored] == [{"concurrency": 3},
                                          {"config": {"x": 0.25, "steps": 3}}] * 2
    assert all(type(o.params.get("concurrency", 0)) is int for o in stored)
    assert stored[2].actor == "supervisor" and stored[0].actor.startswith("user:")


@pytestmark_remote
def test_wrong_urls_closed_apis_and_big_decision_logs_say_what_to_do(server, tokens, data_dir,
                                                                     agent, monkeypatch):
    with Api(server=server.url + "/api", token=tokens["viewer"]) as api:
        with pytest.raises(NotFoundError) as e:
            api.agents()
        assert "without /api" in e.value.hint
    api = Api(server=server.url, token=tokens["viewer"])
    api.close()
    assert api.agents().height == 1  # a closed Api opens new connections when used again
    api.close()
    agent.add_decisions([Decision(AGENT, "p", "t1", "stop", f"d{i}", {}, f"7{i:05d}", 1.8e9)
                         for i in range(5001)])
    local = Api(data_dir)
    with Api(server=server.url, token=tokens["viewer"]) as remote:
        assert remote.decisions(AGENT, limit=10).equals(local.decisions(AGENT, limit=10))
        for limit in (None, 6000, 5001):  # past one page of 5000: paged from the oldest
            got = remote.decisions(AGENT, limit=limit)
            assert got.equals(local.decisions(AGENT, limit=limit)), limit
        assert got.height == 5001 and remote.decisions(AGENT).height == 5004
    from assay.api import admin

    monkeypatch.setattr(admin, "SERVER_FEATURES", ("rewind",))  # a server without offset
    with Api(server=server.url, token=tokens["viewer"]) as old:
        with pytest.raises(AssayError, match="serves the newest 5000") as e:
            old.decisions(AGENT)
        assert "limit=5000" in e.value.hint
        assert old.decisions(AGENT, limit=5000).height == 5000


@pytestmark_remote
def test_assay_server_in_the_environment_does_not_redirect_the_command_line(
        server, tokens, data_dir, agent, monkeypatch):
    """A person's $ASSAY_SERVER is for their own runs: `assay agents`, `decisions` and the
    overrides keep reading the data directory, where `assay run` keeps its agents."""
    from assay.cli import app
    from typer.testing import CliRunner

    monkeypatch.setenv("ASSAY_SERVER", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("ASSAY_TOKEN", tokens["supervisor"])
    runner = CliRunner()
    out = runner.invoke(app, ["agents"])
    assert out.exit_code == 0 and AGENT in out.output, out.output
    out = runner.invoke(app, ["pause", AGENT, "-r", "x"])
    assert out.exit_code == 0, out.output
    assert agent.overrides(AGENT)[-1].actor.startswith("cli")


def test_an_agent_with_a_custom_id_is_read_and_overridden_locally(data_dir, agent):
    """`assay run --agent-id my-sweep` takes any name; the local paths look it up."""
    row = agent.get_agent(AGENT)
    agent.save_agent(AgentRow("my-sweep", row.objective, row.project, row.spec,
                              state=row.state, hlc="1"))
    api = Api(data_dir)
    assert api.agent("my-sweep")["agent_id"] == "my-sweep"
    assert api.pause("my-sweep", reason="custom ids work")["agent_id"] == "my-sweep"
    assert api.overrides("my-sweep")["action"].to_list() == ["pause"]
    with pytest.raises(NotFoundError, match="no agent 'my-swep'"):
        api.decisions("my-swep")
    with pytest.raises(UserInputError, match="non-empty string"):
        api.agent("")


def test_an_override_whose_audit_trail_cannot_be_opened_stores_nothing(data_dir, agent,
                                                                       monkeypatch):
    import assay.store.audit as audit_mod

    def refuse(*a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(audit_mod.AuditTrail, "__init__", refuse)
    with pytest.raises(AssayError, match="cannot open the audit trail") as e:
        Api(data_dir).pause(AGENT, reason="x")
    assert "--server" in e.value.hint
    assert agent.overrides(AGENT) == []


def test_an_override_sent_again_with_its_idempotency_key_is_stored_once_locally(data_dir, agent):
    api = Api(data_dir)
    first = api.set_concurrency(AGENT, 1, reason="fewer")  # no key: a new override each time
    keyed = api.override(AGENT, "concurrency", {"concurrency": 3}, reason="more",
                         idempotency_key="nightly-42")
    again = api.override(AGENT, "concurrency", {"concurrency": 3}, reason="more",
                         idempotency_key="nightly-42")
    assert again["override_id"] == keyed["override_id"] != first["override_id"]
    assert again["replayed"] and again["status"] == "pending" and "replayed" not in keyed
    with pytest.raises(ConflictError, match="nightly-42") as e:
        api.override(AGENT, "concurrency", {"concurrency": 4}, reason="more",
                     idempotency_key="nightly-42")
    assert "new key" in e.value.hint
    s1 = api.stop_run("t2", reason="diverged", idempotency_key="stop-t2")
    s2 = api.stop_run("t2", reason="diverged", idempotency_key="stop-t2")
    assert s1["override_id"] == s2["override_id"]
    with pytest.raises(UserInputError, match="invalid idempotency key"):
        api.override(AGENT, "pause", reason="x", idempotency_key="not ok!")
    assert [o.action for o in agent.overrides(AGENT)] == [
        "concurrency", "concurrency", "stop_run"]
    assert [e["action"] for e in api.audit_log()].count("override.concurrency") == 2


class _Flaky:
    """An httpx transport in front of the real one: the first ``n`` override POSTs are
    answered 503 without reaching the server (``mode="503"``), or reach it and have their
    answer lost (``mode="lost"``)."""

    def __init__(self, inner, mode: str, n: int = 1) -> None:
        self.inner, self.mode, self.left, self.keys = inner, mode, n, []

    def handle_request(self, request):
        import httpx

        if request.method == "POST":
            self.keys.append(request.headers.get("Idempotency-Key"))
            if self.left > 0:
                self.left -= 1
                if self.mode == "503":
                    return httpx.Response(503, json={"error": "busy"})
                self.inner.handle_request(request).read()  # stored; the answer is lost
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytestmark_remote
def test_an_override_whose_answer_is_lost_is_retried_and_stored_once(server, tokens, agent):
    """An engineer's script sends an override; the network drops the answer (or a proxy says
    503). The SDK sends it again with the same Idempotency-Key, the server stores it once."""
    with Api(server=server.url, token=tokens["supervisor"]) as api:
        api.agents()  # opens the client
        flaky = api._http._transport = _Flaky(api._http._transport, "lost")
        sent = api.set_concurrency(AGENT, 1, reason="fewer")
        assert sent["replayed"] and sent["status"] == "pending"
        assert len(flaky.keys) == 2 and flaky.keys[0] == flaky.keys[1] and flaky.keys[0]
        flaky.mode, flaky.left = "503", 2
        stop = api.stop_run("t2", reason="diverged")
        assert stop["status"] == "pending" and "replayed" not in stop
        assert len(set(flaky.keys[2:])) == 1 and len(flaky.keys) == 5
        flaky.mode, flaky.left = "lost", 100  # never answered: say so, name the key to reuse
        from assay.sdk import control_api

        control_api.OVERRIDE_RETRY_S, saved = 1.0, control_api.OVERRIDE_RETRY_S
        try:
            with pytest.raises(AssayError, match="may or may not be stored") as e:
                api.pause(AGENT, reason="maintenance")
        finally:
            control_api.OVERRIDE_RETRY_S = saved
        key = flaky.keys[-1]
        assert f"idempotency_key={key!r}" in e.value.hint
        flaky.left = 0
        again = api.override(AGENT, "pause", reason="maintenance", idempotency_key=key)
        assert again["replayed"]
    assert [o.action for o in agent.overrides(AGENT)] == ["concurrency", "stop_run", "pause"]


def test_a_resume_for_an_agent_that_is_not_paused_is_refused_when_sent(server, tokens,
                                                                       data_dir, agent):
    """helper-61: a resume sent to a running agent got a 202 and was rejected at the
    agent's next step. It is refused at once now, unless a pause comes first (even one the
    agent has not applied yet)."""
    api = Api(data_dir)
    with pytest.raises(ConflictError, match="not paused: it is running") as e:
        api.resume(AGENT, reason="go on")
    assert "pause it first" in e.value.hint and agent.overrides(AGENT) == []
    with Api(server=server.url, token=tokens["supervisor"]) as remote, \
            pytest.raises(ConflictError, match="nothing to resume"):
        remote.resume(AGENT, reason="go on")
    api.pause(AGENT, reason="maintenance")  # pending: the resume is taken
    assert api.resume(AGENT, reason="done")["status"] == "pending"
    with pytest.raises(ConflictError, match="a resume is pending already"):
        api.resume(AGENT, reason="again")
    # The agent applied both: its saved row may lag, the overrides do not.
    for o in agent.overrides(AGENT):
        agent.resolve_override(o.override_id, "applied", "ok")
    with pytest.raises(ConflictError, match="not paused"):
        api.resume(AGENT, reason="again")
    assert [o.action for o in agent.overrides(AGENT)] == ["pause", "resume"]
    # helper-66: an agent that restarted from a state saved before it applied that resume is
    # paused again: a new resume is taken, not refused as "not paused: it is paused".
    row = agent.get_agent(AGENT)
    agent.save_agent(AgentRow(row.agent_id, row.objective, row.project, row.spec,
                              status=AgentStatus.PAUSED, state=row.state, hlc="8"))
    assert api.resume(AGENT, reason="after the restart")["status"] == "pending"
    # The saved status counts when no pause or resume was ever sent (an older agent's).
    row = agent.get_agent(AGENT)
    ctl = LanceControlStore(LanceStore(data_dir), IngestLock(data_dir))
    ctl.save_agent(AgentRow("agtoy00002", row.objective, row.project, row.spec,
                            status=AgentStatus.PAUSED, state=row.state, hlc="9"))
    assert api.resume("agtoy00002", reason="go on")["status"] == "pending"


def test_an_agents_budget_reads_as_written_and_as_numbers(data_dir, agent):
    """helper-61: budget.wall_clock read "30m" (as the objective wrote it), so a script had
    to parse durations to compare; budget_limits has the numbers the agent enforces."""
    api = Api(data_dir)
    api.set_budget(AGENT, {"wall_clock": "30m", "gpu_hours": "90m"}, reason="cap it")
    row = agent.get_agent(AGENT)
    state = {**row.state, "budget": {"trials": 4, "wall_clock": "30m", "gpu_hours": "90m"}}
    agent.save_agent(AgentRow(row.agent_id, row.objective, row.project, row.spec,
                              state=state, hlc="9"))
    got = api.agent(AGENT)
    assert got["budget"]["wall_clock"] == "30m"
    assert got["budget_limits"] == {"trials": 4, "wall_clock_s": 1800.0, "gpu_hours": 1.5}
    agent.save_agent(AgentRow(row.agent_id, row.objective, row.project, row.spec,
                              state={**row.state, "budget": {"wall_clock": "soon"}}, hlc="10"))
    assert api.agent(AGENT)["budget_limits"] is None  # unreadable: not guessed


@pytestmark_remote
def test_a_servers_audit_trail_reads_as_the_directorys(server, tokens, data_dir, agent,
                                                       monkeypatch):
    """Api(server=...).audit_log() was "local only": a supervisor had to page GET
    /api/audit by hand. It pages (an entry appended meanwhile is listed once) and filters."""
    from assay.sdk import remote_api

    monkeypatch.setattr(remote_api, "_AUDIT_PAGE", 2)
    with Api(server=server.url, token=tokens["supervisor"]) as sup:
        for n in (1, 2, 3):
            sup.set_concurrency(AGENT, n, reason=f"try {n}")
        got = sup.audit_log()
        assert [e["reason"] for e in got if e["action"] == "override.concurrency"] == [
            "try 1", "try 2", "try 3"]
        assert got == Api(data_dir).audit_log(), "the same entries, oldest first"
        mine = sup.audit_log(target=f"agent:{AGENT}", actor="supervisor")
        assert len(mine) == 3 and mine == Api(data_dir).audit_log(target=f"agent:{AGENT}")
    with Api(server=server.url, token=tokens["viewer"]) as viewer, \
            pytest.raises(PermissionDeniedError) as e:
        viewer.audit_log()
    assert "supervisor's token" in e.value.hint
