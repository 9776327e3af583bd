"""Sweep reports: sections with real numbers, one self-contained HTML file, the Markdown
summary, the stored artifact and its lineage; a real sweep on Ray and the page in Chromium."""

from __future__ import annotations

import re
import time
from pathlib import Path

import assay
import assay.agents.overrides as overrides_mod
import assay.sdk.run as run_mod
import pytest
from assay.agents.agent import Agent
from assay.agents.objective import Objective
from assay.agents.report import (
    TrialRow,
    best_so_far,
    build_report,
    render_markdown,
    report_command,
    savings,
    write_report,
)
from assay.agents.report_html import fmt_num, line_chart, render_html
from assay.errors import NotFoundError
from assay.scheduler.base import SimClock
from assay.scheduler.sim_backend import CurveSimulatorSource, SimBackend
from assay.simulations.curves import CurveSimulator
from assay.store.control import (
    AgentRow,
    AgentStatus,
    Decision,
    LanceControlStore,
    MemoryControlStore,
    Override,
)
from assay.store.ingest import IngestLock
from assay.store.lance import LanceStore

SIM = CurveSimulator(seed=3, max_steps=20, metric="loss", crash_rate=0.05)
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"


def _lance(root: Path) -> LanceControlStore:
    return LanceControlStore(LanceStore(root), IngestLock(root))


def _hlc(n: int) -> str:
    return f"{n:013d}.000000.t"


def _simulate(root: Path) -> tuple[Agent, list[Override]]:
    """The real agent on simulated curves (a fraction of a second), with a supervisor who
    lowers concurrency and stops one run; then its state, decisions and overrides go to the
    data directory's graph, and each trial's curve becomes a run there."""
    obj = Objective.from_dict({
        "name": "sim", "project": "simproj", "train": "examples.digits:train", "metric": "loss",
        "mode": "min", "space": SIM.space.to_dict(), "budget": {"trials": 14}, "concurrency": 3,
        "searcher": "random", "stoppers": [{"median": {"warmup_steps": 4}}],
        "seed": 1})
    clock = SimClock()
    backend = SimBackend(clock, CurveSimulatorSource(SIM), cpus=3)
    mem = MemoryControlStore()
    agent = Agent(obj, backend, backend, mem, ahead=False)
    mem.add_override(Override(agent.agent_id, "concurrency", {"concurrency": 2}, "alice",
                              "share the machine", hlc=_hlc(1), time=clock.now()))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(overrides_mod, "OVERRIDE_POLL_S", 0.0)  # every step reads overrides
        for n in range(10_000):
            agent.step()
            if n == 4:
                mem.add_override(Override(agent.agent_id, "stop_run",
                                          {"trial_id": agent.active[0].trial_id}, "bob",
                                          "its loss looks off", hlc=str(agent.hlc.now()),
                                          time=clock.now()))
            if agent.status is not AgentStatus.RUNNING:
                break
            t = backend.next_event_time()
            clock.advance_to(t if t is not None else clock.now() + 1.0)
    ctl = _lance(root)
    ctl.save_agent(mem.get_agent(agent.agent_id))
    ctl.add_decisions(mem.decisions(agent_id=agent.agent_id))
    overrides = mem.overrides(agent.agent_id)
    for o in overrides:
        ctl.add_override(o)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_mod, "INGEST_MODE", "inprocess")  # ingest at finish(): no daemon waits
        for t in agent.trials.values():
            run = assay.init("simproj", id=t.trial_id, dir=root, config=t.config,
                             system_metrics_interval=0, capture=False)
            for step, value in t.curve:
                run.log({"loss": value}, step=int(step))
            run.finish(str(t.status))
    return agent, overrides


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "assay-data"
    root.mkdir()
    agent, overrides = _simulate(root)
    html = write_report(root, agent.agent_id)
    return {"root": root, "agent": agent, "overrides": overrides, "html": html,
            "report": build_report(root, agent.agent_id)}


def test_report_files_are_written_where_promised(sweep):
    html, aid = sweep["html"], sweep["agent"].agent_id
    assert html == sweep["root"] / "reports" / f"sim-{aid}.html"
    assert html.exists() and html.with_suffix(".md").exists()


def test_the_html_has_every_section_with_real_numbers(sweep):
    page = sweep["html"].read_text()
    agent, r = sweep["agent"], sweep["report"]
    for heading in ("Objective", "Best configurations", "Progress: best so far and regret",
                    "Parameter importance", f"Launches ({len(agent.trials)})", "Early stops (",
                    "Supervisor overrides (2)", "Compute used",
                    "Compute saved by early stopping"):
        assert heading in page, heading
    best = agent.best
    assert r.best[0].trial_id == best.trial_id and r.best[0].final == pytest.approx(best.final)
    assert fmt_num(best.final) in page and best.trial_id in page
    assert all(a.final <= b.final for a, b in zip(r.best, r.best[1:]))  # min: best first
    assert len(r.best) == min(5, sum(t.final is not None for t in r.trials))
    # best so far and regret, over trial index and over time (4 charts + curves + importance)
    assert page.count('<svg class="chart"') == 6
    assert r.progress["by_index"][-1]["best"] == pytest.approx(best.final)
    assert r.progress["by_index"][-1]["regret"] == pytest.approx(0.0)
    assert [p["trial"] for p in r.progress["by_index"]] == list(range(1, 15))
    ends = [p["t"] for p in r.progress["by_time"]]
    assert ends == sorted(ends) and len(ends) == 14
    # fANOVA importance over the completed trials
    assert set(r.importance) == set(r.tunable) and sum(r.importance.values()) == \
        pytest.approx(1.0)
    # every launch and stop with its evidence
    stops = [d for d in agent.control.decisions(agent_id=agent.agent_id) if d.kind == "stop"]
    assert len([s for s in r.stops if s["by"] == "stopper"]) == len(stops)
    median = [s for s in r.stops if s["rule"] == "median"]
    assert median and all(s["step"] >= 4 and s["reference"] is not None and s["value"] is not None
                          for s in median)
    assert any(s["rule"] == "person (bob)" and s["message"] == "its loss looks off"
               for s in r.stops)
    assert "percentile" in page and "evidence" in page
    # overrides: actor, reason, result
    assert [(o["actor"], o["action"], o["status"]) for o in r.overrides] == [
        ("alice", "concurrency", "applied"), ("bob", "stop_run", "applied")]
    assert "share the machine" in page and "concurrency now 2" in page
    # compute from the agent's ledger
    ledger = agent.ledger.usage()
    assert r.compute["cpu_hours"] == pytest.approx(ledger.cpu_s / 3600)
    assert r.compute["trials"] == 14 and sum(r.compute["by_status"].values()) == 14
    # compute saved: every stopped trial run to the longest completed trial's length
    full = max(len(t.curve) for t in agent.trials.values() if str(t.status) == "completed")
    cut = [t for t in agent.trials.values() if str(t.status) == "stopped"]
    assert cut and r.saved["full_points"] == full
    assert r.saved["saved_points"] == sum(full - len(t.curve) for t in cut)
    assert r.saved["used_points"] == sum(len(t.curve) for t in agent.trials.values())
    assert f"{r.saved['saved_fraction']:.0%}" in page
    assert r.saved["regret_note"].startswith("Estimated regret cost")
    assert r.saved["replay"] is not None and "Replay of the" in r.saved["replay_note"]


def test_the_html_is_one_self_contained_file(sweep):
    page = sweep["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for external in ("http://", "https://", "<script", "src=", "<link", "@import", "url(",
                     "<iframe", "<img"):
        assert external not in page, external
    assert "<style>" in page and "<svg" in page


def test_the_markdown_lists_the_best_config(sweep):
    md = sweep["html"].with_suffix(".md").read_text()
    best, r = sweep["agent"].best, sweep["report"]
    assert f"**Best loss: {fmt_num(best.final)}**" in md and best.trial_id in md
    line = next(x for x in md.splitlines() if x.startswith("**Best loss"))
    for k in r.tunable:
        assert f"{k}={fmt_num(best.config[k])}" in line
    for heading in ("## Objective", "## Best configurations", "## Progress",
                    "## Parameter importance", "## Launches", "## Early stops",
                    "## Supervisor overrides", "## Compute used",
                    "## Compute saved by early stopping"):
        assert heading in md
    assert "| alice | concurrency |" in md and "| bob | stop_run |" in md


def test_the_report_is_an_artifact_beside_its_runs_with_lineage(sweep):
    root, aid = sweep["root"], sweep["agent"].agent_id
    api = assay.Api(root)
    arts = api.artifacts(name="report-sim")
    assert arts.height >= 1 and set(arts["type"].to_list()) == {"report"}
    art = api.artifact("report-sim:latest")
    assert sorted(f.path for f in art.files()) == [f"sim-{aid}.html", f"sim-{aid}.md"]
    assert art.metadata["agent_id"] == aid
    assert sorted(art.metadata["trial_runs"]) == sorted(sweep["agent"].trials)
    assert art.metadata["best_run"] == sweep["agent"].best.trial_id
    runs = api.runs(project="simproj")
    report_runs = runs.filter(runs["name"] == f"report-{aid}")
    assert report_runs.height >= 1 and report_runs["status"].to_list()[0] == "completed"
    nodes, _edges = api.lineage("report-sim:latest", direction="up")
    assert f"run:{art.created_by}" in nodes["id"].to_list()
    assert art.created_by in report_runs["run_id"].to_list()
    assert sorted(api.run(art.created_by).config["trial_runs"]) == sorted(sweep["agent"].trials)
    checked, problems = api.verify()
    assert not problems and checked >= 15  # 14 trials and the report run, all intact
    downloaded = art.download(root / "dl")
    assert aid in (downloaded / f"sim-{aid}.html").read_text()


def test_trial_runs_can_be_linked_to_the_report_in_lineage(sweep):
    root, agent = sweep["root"], sweep["agent"]
    write_report(root, agent.agent_id, link_trials=True)
    api = assay.Api(root)
    art = api.artifact("report-sim:latest")
    trial = next(iter(agent.trials))
    nodes, edges = api.lineage(f"run:{trial}", direction="down")
    assert f"artifact:report-sim:v{art.version}" in nodes["id"].to_list()
    assert "summarized_in" in edges["kind"].to_list()


def test_report_command_finds_the_objective_and_copies_out(sweep, tmp_path):
    root, aid = sweep["root"], sweep["agent"].agent_id
    out = report_command("sim", dir=root, out=tmp_path / "out" / "r.html")
    assert out == tmp_path / "out" / "r.html" and out.exists()
    assert out.with_suffix(".md").exists() and aid in out.read_text()
    by_id = report_command(aid, dir=root, out=tmp_path / "folder")
    assert by_id == tmp_path / "folder" / f"sim-{aid}.html" and by_id.exists()
    with pytest.raises(NotFoundError) as e:
        report_command("nosuch", dir=root)
    assert "sim" in (e.value.hint or "")


# -- small sweeps and the figures, without a store ------------------------------------------
def _row(tid, i, status, final=None, curve=(), ended=None, wall=0.0):
    curve = list(curve)
    return TrialRow(tid, i, {"x": i / 10}, status, final,
                    curve[-1][1] if curve else None, curve, "random", None, ended, wall,
                    wall, 0.0)


def test_best_so_far_and_regret_over_index_and_time():
    rows = [_row("a", 1, "completed", 0.2, ended=40.0), _row("b", 2, "completed", 0.5,
                                                             ended=10.0),
            _row("c", 3, "stopped", None, [(0, 0.95)], ended=5.0),
            _row("d", 4, "completed", 0.9, ended=30.0)]
    p = best_so_far(rows, "max")
    assert [x["best"] for x in p["by_index"]] == [0.2, 0.5, 0.5, 0.9]
    assert [x["regret"] for x in p["by_index"]] == pytest.approx([0.7, 0.4, 0.4, 0.0])
    # a stopped trial's last value (0.95) is not its result: it never becomes the best
    assert [x["trial_id"] for x in p["by_time"]] == ["c", "b", "d", "a"]
    assert [x["best"] for x in p["by_time"]] == [None, 0.5, 0.9, 0.9]


def test_savings_count_points_and_estimate_regret_from_projections():
    full = [(s, 1.0 - 0.05 * s) for s in range(10)]
    rows = [_row("a", 1, "completed", 0.55, full, wall=10.0),
            _row("b", 2, "completed", 0.6, [(s, v + 0.05) for s, v in full], wall=10.0),
            _row("c", 3, "stopped", None, [(s, 1.2) for s in range(3)], wall=3.0),
            _row("d", 4, "stopped", None, [(s, 0.9) for s in range(4)], wall=4.0)]
    stop = Decision("ag", "p", "d", "stop", "learned: ...",
                    {"rule": "learned", "message": "m",
                     "evidence": {"predicted_final": 0.5, "interval": [0.45, 0.7]}}, _hlc(1), 1.0)
    spec = {"space": {"x": {"uniform": [0, 1]}}, "stoppers": [], "concurrency": 1}
    v = savings(rows, spec, "min", [stop])
    assert v["full_points"] == 10 and v["saved_points"] == 7 + 6
    assert v["used_points"] == 10 + 10 + 3 + 4
    assert v["saved_fraction"] == pytest.approx(13 / 40)
    assert v["saved_wall_s"] == pytest.approx(7 * 1.0 + 6 * 1.0)
    by = {s["trial_id"]: s for s in v["stopped"]}
    # c: value when stopped + the completed trials' gains from point 3 (both -0.35)
    assert by["c"]["projected"] == pytest.approx(1.2 - 0.35)
    assert not by["c"]["beats_best"]
    # d: the learned stopper's own prediction, which beats the best (0.55) in a min sweep
    assert by["d"]["projected"] == 0.5 and by["d"]["beats_best"]
    assert v["regret_cost"] == pytest.approx(0.05)
    assert "nothing to replay" in v["replay_note"]


def test_a_sweep_with_too_few_trials_still_reports(data_dir):
    mem = MemoryControlStore()
    spec = {"name": "tiny", "project": "tinyproj", "train": "examples.toy:train",
            "metric": "score", "mode": "max", "space": {"x": {"uniform": [0, 1]}, "steps": 8},
            "budget": {"trials": 4}, "concurrency": 1, "stoppers": ["median"]}
    mem.save_agent(AgentRow("agtiny", "tiny", "tinyproj", spec, AgentStatus.RUNNING,
                            {"trials": {"t1": {"config": {"x": 0.5, "steps": 8},
                                               "status": "running", "final": None,
                                               "curve": [[0, 0.1], [1, 0.2]]}}}))
    mem.add_decisions([Decision("agtiny", "tinyproj", "t1", "launch", "launch (random)",
                                {"method": "random", "config": {"x": 0.5}}, _hlc(1),
                                time.time())])
    r = build_report(data_dir, "agtiny", control=mem)
    assert r.best == [] and "at least 3 completed" in r.importance_note
    assert r.saved["headline"].startswith("No trial was stopped")
    page = render_html(r)
    assert "no data yet" in page and "No trial has completed yet" in page
    assert "Nobody overrode" in page and "No trial was stopped early" in page
    assert "No trial has completed" in render_markdown(r)
    with pytest.raises(NotFoundError):
        build_report(data_dir, "nosuch", control=mem)


def test_charts_skip_non_finite_points_and_size_themselves():
    svg = line_chart([{"name": "a", "color": "#000", "kind": "line",
                       "points": [(0, 1.0), (1, float("nan")), (2, float("inf")), (3, 2.0)]}],
                     title="t", xlabel="x", ylabel="y")
    assert 'width="520"' in svg and "nan" not in svg.lower().replace("anchor", "")
    assert svg.count("<path") == 1


# -- real components -------------------------------------------------------------------------
@pytest.mark.integration
def test_a_real_sweep_on_ray_ends_with_its_report(ray_local, data_dir):
    from assay.agents.runner import run_objective

    aid = "agreportray1"
    _lance(data_dir).add_override(Override(
        aid, "pin", {"config": {"x": 0.3, "y": 0.7, "steps": 8, "step_s": 0.05}}, "carol",
        "try the known good point", hlc=_hlc(1), time=time.time()))
    obj = Objective.from_dict({
        "name": "toyrep", "project": "toyrep", "train": "examples.toy:train", "metric": "score",
        "mode": "max", "space": {"x": {"uniform": [0, 1]}, "y": {"uniform": [0, 1]},
                                 "steps": 8, "step_s": 0.05},
        "budget": {"trials": 5}, "concurrency": 2, "searcher": "random",
        "stoppers": ["median"], "seed": 3})
    res = run_objective(obj, dir=data_dir, agent_id=aid, poll_interval=0.2)
    assert res.status == "finished" and res.report is not None and res.report.exists()
    page = res.report.read_text()
    r = build_report(data_dir, aid)
    assert r.best[0].trial_id == res.best_run and r.best[0].config["x"] == 0.3  # the pin won
    assert "carol" in page and "try the known good point" in page and "pinned" in page
    assert len(r.trials) == 5 and all(len(t.curve) >= 1 for t in r.trials)
    assert all(t.run_name for t in r.trials)  # full curves and names from the runs
    assert r.compute["cpu_hours"] > 0 and r.duration_s and r.duration_s > 0
    assert r.progress["by_time"] and all(p["t"] is not None for p in r.progress["by_time"])
    api = assay.Api(data_dir)
    assert api.artifact("report-toyrep:latest").metadata["agent_id"] == aid
    assert not api.verify()[1]


@pytest.mark.integration
def test_the_report_opens_in_chromium_with_its_charts_drawn(sweep, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        requests: list[str] = []
        page.on("request", lambda req: requests.append(req.url))
        page.goto(sweep["html"].as_uri())
        charts = page.eval_on_selector_all("svg.chart", """els => els.map(e => {
            const b = e.getBoundingClientRect();
            return [b.width, b.height, e.querySelectorAll('path, circle, rect').length];
        })""")
        marks = page.eval_on_selector_all(
            "svg.chart path, svg.chart circle",
            "els => els.filter(e => { const b = e.getBBox(); "
            "return b.width > 0 || b.height > 0; }).length")
        page.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)
    finally:
        page.close()
    assert len(charts) == 6
    assert all(w > 200 and h > 100 and n > 3 for w, h, n in charts), charts
    assert marks > 50
    assert requests == [sweep["html"].as_uri()]  # nothing else was fetched


def test_long_curves_are_thinned_in_the_page():
    from assay.agents.report import SweepReport

    curve = [(float(s), 1.0 / (s + 1)) for s in range(50_000)]
    rows = [_row("a", 1, "completed", curve[-1][1], curve), _row("b", 2, "completed", 0.5,
                                                                   curve[:10])]
    r = SweepReport("ag", "o", "p", "finished", {"space": {"x": {"uniform": [0, 1]}}}, "loss",
                    "min", time.time(), 0.0, 10.0, False, rows, rows[:1], None,
                    best_so_far(rows, "min"), {}, "", [], [], [], [],
                    {"trials": 2, "by_status": {"completed": 2}, "sweep_wall_s": 10.0,
                     "trial_wall_s": 0.0, "cpu_hours": 0.0, "gpu_hours": 0.0,
                     "utilization": None, "budget": {}, "source": "runs"},
                    savings(rows, {"space": {}}, "min", []), ["x"])
    assert len(render_html(r)) < 200_000


def test_an_outlier_does_not_flatten_a_chart():
    pts = [(float(i), 1.0 - i / 100) for i in range(50)] + [(50.0, 250.0)]
    svg = line_chart([{"name": "loss", "color": "#000", "kind": "dots", "points": pts}],
                     title="t", xlabel="x", ylabel="y")
    assert "outliers drawn at the edge" in svg and ">250<" not in svg
    ticks = [float(t) for t in re.findall(r'text-anchor="end">([-\d.e]+)</text>', svg)]
    assert max(ticks) < 5


def test_a_launch_reason_shows_the_interval_in_user_units_and_its_clipping():
    """The GP's interval is asymmetric once the objective is warped, and a quantile past
    every observation is reported at the observed extreme: the report said "± sd" and
    hid the clipping."""
    from assay.agents.report_html import _why_launch

    text = _why_launch({"method": "qLogNEI", "acquisition_value": 0.5, "predicted_mean": 0.12,
                        "predicted_std": 0.1, "predicted_interval": [0.05, 0.25],
                        "predicted_at_observed_bound": ["lower"]})
    assert "predicted 0.12 (68% 0.05 to 0.25)" in text and "±" not in text
    assert "lower clipped to the observed range" in text
    plain = _why_launch({"method": "qLogNEI", "predicted_mean": 1.0, "predicted_std": 0.5})
    assert "predicted 1 ± 0.5" in plain and "clipped" not in plain


def test_an_objective_of_the_same_name_in_another_project_gets_its_own_report_artifact(
        sweep, tmp_path):
    """Artifact names are shared by a data directory's projects, and report-<objective>
    belongs to the first project that stored one: another project's objective of the same
    name would have been refused (regression review)."""
    import dataclasses

    from assay.agents.report import _store_artifact

    root = sweep["root"]
    other = dataclasses.replace(sweep["report"], project="otherproj")
    html, md = tmp_path / sweep["html"].name, tmp_path / sweep["html"].with_suffix(".md").name
    html.write_text(sweep["html"].read_text() + "<!-- otherproj -->")
    md.write_text("otherproj's report\n")
    art = _store_artifact(root, other, html, md, link_trials=False)
    assert art.name == "report-otherproj-sim"
    assert assay.Api(root).artifact("report-sim:latest").metadata["agent_id"] \
        == sweep["agent"].agent_id
