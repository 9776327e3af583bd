"""Agents whose trials log to an ``assay server`` (``$ASSAY_SERVER`` set where they run): the
agent reads their curves, warm-start runs, results and report curves from that server.

Before, such an agent read its own data directory: its stoppers never saw a point, its report
had no curves, and the sweep ran every trial to the end.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import assay
import pytest
from assay.agents.objective import Objective

pytestmark = pytest.mark.integration

KW: dict[str, Any] = {"system_metrics_interval": 0, "capture": False}


def _toy(**kw: Any) -> Objective:
    base: dict[str, Any] = {
        "name": "toy-srv", "project": "toysrv", "train": "examples.toy:train",
        "metric": "score", "mode": "max",
        "space": {"x": {"uniform": [0, 1]}, "y": {"uniform": [0, 1]}, "steps": 20,
                  "step_s": 0.1},
        "budget": {"trials": 6}, "concurrency": 2, "searcher": "random",
        # From step 5 on a trial's best must reach 0.2: only a curve read in time stops it.
        "stoppers": [{"threshold": {"thresholds": {5: 0.2}}}]}
    base.update(kw)
    return Objective.from_dict(base)


def test_warm_start_runs_come_from_the_server_the_trials_log_to(tmp_path, data_dir,
                                                                 served_dir, monkeypatch):
    from assay.agents.runner import prior_trials

    for x, status, score in ((0.2, "completed", 0.5), (0.4, "completed", math.nan),
                             (5.0, "completed", 0.9), (0.6, "failed", 0.7),
                             (0.8, "completed", 0.3), ("wide", "completed", 0.8)):
        run = assay.init("toysrv", config={"x": x, "y": 0.5, "steps": 20, "step_s": 0.1},
                         dir=data_dir, **KW)
        run.log({"score": score})
        run.finish(status)
    obj = _toy()
    here = prior_trials(data_dir, obj)
    monkeypatch.setenv("ASSAY_TOKEN", served_dir["viewer"])
    there = prior_trials(tmp_path, obj, served_dir["server"].url)  # nothing local
    assert prior_trials(tmp_path, obj) == []
    # Completed, finite, inside the space: x=0.2 and x=0.8, the same from both places (a
    # run whose x is a string is not evidence, and does not make the others' x strings).
    assert sorted((t.config["x"], t.final) for t in there) == [(0.2, 0.5), (0.8, 0.3)]
    assert sorted((t.trial_id, t.config["x"], t.final) for t in there) == sorted(
        (t.trial_id, t.config["x"], t.final) for t in here)


def test_a_command_trials_result_and_mark_are_read_where_it_logged(tmp_path, data_dir,
                                                                   served_dir, monkeypatch):
    """A command trial's result is its run's summary: read on the server its run logged to
    (``$ASSAY_SERVER`` in the worker), not in the agent's directory, which has no such run."""
    from assay.scheduler._ray_worker import _command_result, _finished_run, mark_run
    from assay.scheduler.base import TrialSpec
    from assay.store.records import RunStatus

    with assay.init("toysrv", id="cmdrun0001", config={"x": 0.1}, dir=data_dir, **KW) as run:
        run.log({"score": 0.25})
        run.summary["extra"] = 3
    monkeypatch.setenv("ASSAY_SERVER", served_dir["server"].url)
    monkeypatch.setenv("ASSAY_TOKEN", served_dir["researcher"])
    assert _command_result(tmp_path, "cmdrun0001") == {"score": 0.25, "extra": 3.0}
    assert _command_result(tmp_path, "notthere01") == {}
    # Completed on the server: marking it again changes nothing, and a resumed attempt of
    # the trial reports it instead of running again.
    assert not mark_run(tmp_path, "toysrv", "cmdrun0001", RunStatus.STOPPED, "late",
                        only_unfinished=True)
    spec = TrialSpec("cmdrun0001", "toysrv", {"x": 0.1}, "python train.py")
    done = _finished_run(tmp_path, spec)
    assert done is not None and done["result"] == {"score": 0.25, "extra": 3.0}
    assert assay.Api(data_dir).run("cmdrun0001").attach == 0  # nothing was resumed
    monkeypatch.delenv("ASSAY_SERVER")
    assert _command_result(tmp_path, "cmdrun0001") == {}  # the local directory has none


def test_an_agent_reads_its_trials_curves_from_the_server(ray_local, data_dir, served_dir,
                                                          monkeypatch):
    """A real agent on the session's Ray. Its trials log into the directory the server
    serves, and the agent, told that its trials log to the server, reads them there and lives
    there: its stopper stops the poor ones, the server lists it with its decisions, an
    override sent to the server reaches it, and the report shows every trial's whole curve."""
    from assay.agents.report import build_report
    from assay.agents.runner import _build_agent
    from assay.store.control import AgentStatus
    from assay.store.control_remote import RemoteControlStore

    url = served_dir["server"].url
    monkeypatch.setenv("ASSAY_SERVER", url)  # this process's; Ray's workers log to data_dir
    monkeypatch.setenv("ASSAY_TOKEN", served_dir["researcher"])
    obj = _toy(budget={"trials": 8})
    agent = _build_agent(obj.to_dict(), str(data_dir), "agsrv00001", ahead=False)
    remote = assay.Api(server=url, token=served_dir["viewer"])
    try:
        assert agent.metrics.server == url and agent.metrics.api is None
        assert isinstance(agent.control, RemoteControlStore)
        assert remote.agents()["agent_id"].to_list() == ["agsrv00001"]
        # The owner lowers the budget through the server; the agent applies it.
        assay.Api(server=url, token=served_dir["researcher"]).set_budget(
            "agsrv00001", {"trials": 6}, reason="enough to see")
        agent.run(poll_interval=0.2, max_steps=2000)
    finally:
        agent.close()
        agent.backend.shutdown()
    assert agent.status is AgentStatus.FINISHED and len(agent.trials) == 6
    stops = remote.decisions("agsrv00001", kind="stop")
    assert stops.height, "no trial was stopped: the agent saw no curve"
    assert all("threshold" in str(x).lower() for x in stops["summary"].to_list())
    overrides = remote.overrides("agsrv00001")
    assert overrides["status"].to_list() == ["applied"]
    assert remote.agent("agsrv00001")["status"] == "finished"
    assert agent.control.get_agent("agsrv00001").state["runs_server"] == url
    report = build_report(data_dir, "agsrv00001", control=agent.control)
    assert not report.notes
    completed = [t for t in report.trials if t.status == "completed"]
    assert completed and all(len(t.curve) == 20 for t in completed)  # whole, not tails
    refused = build_report(data_dir, "agsrv00001", control=agent.control,
                           token="asy_not_a_token")  # the report still comes, saying why
    assert any(url in n and "could not be read" in n and "ASSAY_TOKEN" in n
               for n in refused.notes)
    assert refused.partial and not report.partial
    # Written, but not stored: it would replace the full one as latest (helper-60).
    from assay.agents import report as report_mod

    stored: list[str] = []
    monkeypatch.setattr(report_mod, "_store_artifact",
                        lambda root, r, *a: stored.append("partial" if r.partial else "full"))
    html = report_mod.write_report(data_dir, "agsrv00001", control=agent.control,
                                   token="asy_not_a_token")
    assert html.exists() and "could not be read" in html.read_text() and stored == []
    report_mod.write_report(data_dir, "agsrv00001", control=agent.control)
    assert stored == ["full"]


def test_the_watcher_counts_reports_of_runs_that_log_to_a_server(tmp_path, served_dir,
                                                                 monkeypatch):
    """A trial's heartbeat carries how many metric records its run wrote; with
    ``trial_timeout`` a trial whose count stays still is stopped as silent. A run that logs
    to a server writes them to ``<dir>/outbox/``, not ``<dir>/wal/``."""
    from assay.scheduler._ray_worker import _Watcher
    from assay.scheduler.base import TrialSpec

    monkeypatch.setenv("ASSAY_SERVER", served_dir["server"].url)
    monkeypatch.setenv("ASSAY_TOKEN", served_dir["researcher"])
    run = assay.init("toysrv", id="watch00001", config={"x": 1}, dir=tmp_path, **KW)
    watcher = _Watcher(None, TrialSpec("watch00001", "toysrv", {"x": 1}, "m:f"), 1, tmp_path,
                       1.0)
    for step in range(5):
        run.log({"score": float(step)}, step=step)
        run.flush()
        watcher._count_reports()
        assert watcher._reports == step + 1
    assert list((tmp_path / "outbox").rglob("*.wal")) and not (tmp_path / "wal").exists() \
        or not list((tmp_path / "wal").rglob("*.wal"))
    run.finish()


def test_a_resumed_attempt_waits_for_the_server_to_ingest_before_deciding(tmp_path, served_dir,
                                                                          monkeypatch):
    """An attempt that completed its run while the server was away left it in the outbox;
    the retry ships it, and must wait for the server to ingest it before it reads the run's
    status: read at once it is still "running", and the trial would run again."""
    from assay.scheduler._ray_worker import _finished_run
    from assay.scheduler.base import TrialSpec
    from loopback_server import free_port

    monkeypatch.setenv("ASSAY_INGEST_INTERVAL", "1.0")  # the default lag
    code = ("import assay\n"
            f"r = assay.init('toysrv', id='fin0000001', config={{'x': 1}}, dir={str(tmp_path)!r},"
            " system_metrics_interval=0, capture=False)\n"
            "for s in range(5): r.log({'score': float(s)}, step=s)\n"
            "r.finish()\n")
    env = {**os.environ, "ASSAY_SERVER": f"http://127.0.0.1:{free_port()}",  # nobody there
           "ASSAY_TOKEN": served_dir["researcher"], "ASSAY_REMOTE_FINISH_TIMEOUT": "1"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                   timeout=120)
    assert list((tmp_path / "outbox").rglob("*.wal"))
    monkeypatch.setenv("ASSAY_SERVER", served_dir["server"].url)
    monkeypatch.setenv("ASSAY_TOKEN", served_dir["researcher"])
    done = _finished_run(tmp_path, TrialSpec("fin0000001", "toysrv", {"x": 1}, "python t.py"))
    assert done is not None and done["status"] == "completed"
    assert done["result"] == {"score": 4.0}


def test_an_agent_is_resumed_only_where_its_trials_logged(tmp_path, served_dir, monkeypatch):
    """``assay run --agent-id`` from a shell without the $ASSAY_SERVER its trials logged to
    (or with one they did not) would poll the wrong place for the trials it relaunches, or
    start a new agent of that id on the server."""
    from assay.agents.runner import check_trials_server
    from assay.errors import UserInputError
    from assay.store.control import AgentRow, LanceControlStore
    from assay.store.control_remote import RemoteControlStore
    from assay.store.ingest import IngestLock
    from assay.store.lance import LanceStore

    url = served_dir["server"].url
    with RemoteControlStore(url, served_dir["researcher"]) as there:
        there.save_agent(AgentRow("agremote01", "toy", "toysrv", {}, state={"runs_server": url}))
    here = LanceControlStore(LanceStore(tmp_path), IngestLock(tmp_path))
    here.save_agent(AgentRow("aglocal001", "toy", "toysrv", {}, state={}))
    here.save_agent(AgentRow("agolder001", "toy", "toysrv", {}, state={"runs_server": url}))
    monkeypatch.delenv("ASSAY_SERVER", raising=False)
    monkeypatch.delenv("ASSAY_TOKEN", raising=False)
    with pytest.raises(UserInputError, match=url) as e:
        check_trials_server(tmp_path, "agolder001")  # kept here, its trials on the server
    assert f"export ASSAY_SERVER={url}" in e.value.hint
    check_trials_server(tmp_path, "aglocal001")
    check_trials_server(tmp_path, "agnew00001")  # a new agent: nothing to compare
    check_trials_server(tmp_path, None)
    user = url.replace("http://", "http://bob:pw@") + "/"
    monkeypatch.setenv("ASSAY_SERVER", user)
    with pytest.raises(UserInputError, match="ASSAY_TOKEN is not set") as e:
        check_trials_server(tmp_path, None)
    assert "pw" not in str(e.value)
    monkeypatch.setenv("ASSAY_SERVER", url + "/")
    monkeypatch.setenv("ASSAY_TOKEN", served_dir["researcher"])
    check_trials_server(tmp_path, "agremote01")  # the same server, however spelled
    check_trials_server(tmp_path, "agolder001")
    with pytest.raises(UserInputError, match="unset ASSAY_SERVER|data directory") as e:
        check_trials_server(tmp_path, "aglocal001")
    # A token the server refuses, or a viewer's, fails here with a hint (helper-60: it
    # failed in the agent's Ray actor, a traceback saying "fix the objective").
    from assay.errors import PermissionDeniedError

    monkeypatch.setenv("ASSAY_TOKEN", "asy_not_a_token")
    with pytest.raises(PermissionDeniedError) as e:
        check_trials_server(tmp_path, None)
    assert "researcher" in e.value.hint
    monkeypatch.setenv("ASSAY_TOKEN", served_dir["viewer"])
    with pytest.raises(UserInputError, match="a viewer's token") as e:
        check_trials_server(tmp_path, None)
    assert "--role researcher" in e.value.hint
    from loopback_server import free_port

    monkeypatch.setenv("ASSAY_SERVER", f"http://127.0.0.1:{free_port()}")  # nobody there
    from assay.errors import ServerUnreachableError

    with pytest.raises(ServerUnreachableError):
        check_trials_server(tmp_path, None)


@pytest.mark.slow
def test_assay_run_with_assay_server_set_stops_trials_that_log_there(tmp_path, data_dir,
                                                                    served_dir):
    """``assay run`` as a person runs it with ``$ASSAY_SERVER``/``$ASSAY_TOKEN`` exported:
    the trials' runs are on the server (none in the agent's directory), the agent still stops
    the poor ones, and the command points at the server for the runs."""
    url = served_dir["server"].url
    objective = tmp_path / "toy.yaml"
    objective.write_text(
        "name: toy-srv\nproject: toysrv\ntrain: assay.examples.toy:train\nmetric: score\n"
        "mode: max\nspace:\n  x: {uniform: [0, 1]}\n  y: {uniform: [0, 1]}\n  steps: 20\n"
        "  step_s: 0.15\nbudget: {trials: 6}\nconcurrency: 2\nresources: {cpus: 1}\n"
        "searcher: random\nstoppers: [{threshold: {thresholds: {5: 0.2}}}]\n")
    agent_dir = tmp_path / "agent"
    env = {**os.environ, "ASSAY_SERVER": url, "ASSAY_TOKEN": served_dir["researcher"],
           "COLUMNS": "200", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("ASSAY_DIR", None)
    out = subprocess.run([sys.executable, "-m", "assay.cli", "run", str(objective), "--dir",
                          str(agent_dir)], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    flat = " ".join(out.stdout.split())  # rich may wrap the lines
    assert f"`assay runs -p toysrv --server {url}`" in flat
    assert "`assay decisions ag" in flat and f"--server {url}`; runs" in flat
    api = assay.Api(server=url, token=served_dir["viewer"])
    (agent_id,) = api.agents()["agent_id"].to_list()  # the agent lives on the server
    assert api.agent(agent_id)["status"] == "finished"
    assert api.decisions(agent_id, kind="stop").height
    assert assay.Api(agent_dir).agents().height == 0
    remote = api.runs("toysrv")
    trials = remote.filter(~remote["name"].str.starts_with("report-"))
    assert trials.height == 6
    assert "stopped" in trials["status"].to_list()
    assert assay.Api(agent_dir).runs("toysrv").filter(
        ~assay.Api(agent_dir).runs("toysrv")["name"].str.starts_with("report-")).height == 0
    md = next(Path(agent_dir, "reports").glob("*.md")).read_text()
    assert "tails" not in md
