from __future__ import annotations

import json

import assay
from assay.cli import app
from assay.store.wal import WalWriter, segment_path
from typer.testing import CliRunner

runner = CliRunner()


def _run(data_dir, **kw):
    r = assay.init(project="cli", system_metrics_interval=None, capture=False, **kw)
    for i in range(3):
        r.log({"loss": 1.0 / (i + 1)})
    r.finish()
    return r


def test_runs_and_show_print_the_run(data_dir):
    r = _run(data_dir, config={"lr": 0.1})
    out = runner.invoke(app, ["runs", "--dir", str(data_dir)])
    assert out.exit_code == 0 and r.id in out.stdout and "completed" in out.stdout
    out = runner.invoke(app, ["show", r.id, "--dir", str(data_dir), "--json"])
    assert out.exit_code == 0
    rec = json.loads(out.stdout)
    assert rec["config"] == {"lr": 0.1} and abs(rec["summary"]["loss"] - 1 / 3) < 1e-12
    # helper-64: the text form left out tags, group, notes and how long it ran.
    assay.Api(data_dir).update_run(r.id, tags=["baseline", "fp16"], notes="first try")
    out = runner.invoke(app, ["show", r.id, "--dir", str(data_dir)])
    text = " ".join(out.stdout.split())
    assert "step 2, 0:00:0" in text and "tags baseline, fp16" in text and "notes: first try" in text
    # Values and errors are text, not markup: a list config or a traceback's "[...]" stays.
    r2 = _run(data_dir, config={"widths": [64, 32], "tag": "[bold]x"})
    out = runner.invoke(app, ["show", r2.id, "--dir", str(data_dir)])
    assert "widths: [64, 32]" in out.stdout and "tag: [bold]x" in out.stdout, out.stdout
    # A mistyped project names the known ones (helper-60: "no runs yet", and nothing else).
    out = runner.invoke(app, ["runs", "-p", "clj", "--dir", str(data_dir)])
    assert out.exit_code == 0, out.output
    text = " ".join(out.stdout.split())
    assert "no runs in project 'clj'; did you mean 'cli'? projects: cli" in text


def test_show_unknown_run_exits_2_with_hint(data_dir):
    _run(data_dir)  # a data directory with runs (an empty folder is refused: not one)
    out = runner.invoke(app, ["show", "nope", "--dir", str(data_dir)])
    assert out.exit_code == 2
    assert "no run 'nope'" in out.output and "hint" in out.output


def test_sync_ingests_an_orphaned_wal_and_compact_keeps_data(data_dir):
    w = WalWriter(segment_path(data_dir / "wal", "orphan01", 0))
    w.append([{"k": "run", "seq": 1, "time": 1.0, "run_id": "orphan01", "project": "cli",
               "name": "o", "attach": 0},
              {"k": "metrics", "seq": 2, "chunks": [{"keys": ["x"], "step": [0, 1],
                                                      "time": [1.0, 2.0], "vals": [[1.0, 2.0]]}]}])
    w.close()
    out = runner.invoke(app, ["sync", "--dir", str(data_dir)])
    assert out.exit_code == 0 and "synced 1 WAL segment(s): 2 records, 2 points" in out.stdout
    assert assay.Api(data_dir).run("orphan01").status == "crashed"
    out = runner.invoke(app, ["compact", "--dir", str(data_dir)])
    assert out.exit_code == 0 and "metrics: 1 rows" in out.stdout
    assert assay.Api(data_dir).history("orphan01")["value"].to_list() == [1.0, 2.0]


def _finished_agent(data_dir):
    from assay.store.control import AgentRow, AgentStatus, LanceControlStore
    from assay.store.ingest import IngestLock
    from assay.store.lance import LanceStore

    ctl = LanceControlStore(LanceStore(data_dir), IngestLock(data_dir))
    ctl.save_agent(AgentRow("agdone00001", "toy", "p", {"name": "toy", "project": "p",
                                                        "metric": "score"},
                            status=AgentStatus.FINISHED, state={"trials": {}}, hlc="1"))
    return ctl


def test_overrides_to_a_finished_agent_are_refused_and_nothing_is_stored(data_dir):
    ctl = _finished_agent(data_dir)
    for cmd in (["stop", "agdone00001"], ["pause", "agdone00001"]):
        out = runner.invoke(app, [*cmd, "-r", "x", "--dir", str(data_dir)])
        assert out.exit_code == 2 and "is finished" in out.output, out.output
        assert "next step" not in out.output
    assert ctl.overrides("agdone00001") == []


def test_stop_run_of_a_run_that_does_not_exist_says_so(data_dir):
    r = _run(data_dir)
    out = runner.invoke(app, ["stop-run", "nope1234", "-r", "x", "--dir", str(data_dir)])
    assert out.exit_code == 2 and "no run 'nope1234'" in out.output, out.output
    out = runner.invoke(app, ["stop-run", r.id, "-r", "x", "--dir", str(data_dir)])
    assert out.exit_code == 2 and "was not launched by an agent" in out.output


def test_run_refuses_a_wrong_duration_unit_and_resources_this_machine_lacks(
        data_dir, tmp_path, monkeypatch):
    import assay.scheduler.ray_backend as rb

    yaml = ("name: g\nproject: p\ntrain: examples.toy:train\nmetric: score\n"
            "space: {x: {uniform: [0, 1]}}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml + "budget: {trials: 2, wall_clock: 10 minutes}\n")
    out = runner.invoke(app, ["run", str(bad), "--dir", str(data_dir)])
    assert out.exit_code == 2 and "budget.wall_clock" in out.output, out.output
    assert "wall_clock_s" not in out.output and "45s" in out.output
    gpu = tmp_path / "gpu.yaml"
    gpu.write_text(yaml + "budget: {trials: 2, wall_clock: 45s}\nresources: {cpus: 1, gpus: 1}\n")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(rb, "local_resources", lambda: {"CPU": 2.0, "GPU": 0.0})
    out = runner.invoke(app, ["run", str(gpu), "--detach", "--dir", str(data_dir)])
    assert out.exit_code == 2 and "1 GPU" in out.output and "started" not in out.output
    assert not (data_dir / "logs").exists()


def test_run_refuses_bad_searcher_options_before_detaching(data_dir, tmp_path):
    spec = tmp_path / "typo.yaml"
    spec.write_text("name: typo\nproject: p\ntrain: examples.toy:train\nmetric: score\n"
                    "space: {x: {uniform: [0.0, 1.0]}}\nbudget: {trials: 2}\n"
                    "searcher: {botorch: {n_inital: 3}}\n")
    out = runner.invoke(app, ["run", str(spec), "--dir", str(data_dir), "--detach"])
    assert out.exit_code == 2, out.output
    assert "unknown option 'n_inital'" in out.output and "did you mean 'n_initial'" in out.output
    assert "started" not in out.output
    assert not (data_dir / "logs").exists()  # no background agent was started


def test_decisions_of_an_unknown_agent_exits_2_with_hint(data_dir):
    _finished_agent(data_dir)  # a data directory with an agent, not an empty folder
    out = runner.invoke(app, ["decisions", "no-such-agent", "--dir", str(data_dir)])
    assert out.exit_code == 2
    assert "no agent 'no-such-agent'" in out.output and "assay agents" in out.output


def test_run_with_an_agent_id_says_whether_it_resumes_one_or_names_a_new_one(data_dir,
                                                                              capsys):
    """helper-60: `assay run --agent-id bogus123` started a whole new sweep without a word
    (a typo of a resumed id, or an agent kept on a server while $ASSAY_SERVER is unset)."""
    from assay.cli import _say_which_agent
    from assay.store.control import AgentRow, LanceControlStore
    from assay.store.ingest import IngestLock
    from assay.store.lance import LanceStore

    LanceControlStore(LanceStore(data_dir), IngestLock(data_dir)).save_agent(AgentRow(
        "agsaved001", "obj", "p", {}, state={"trials": {"t1": {}, "t2": {}}}, hlc="1"))
    _say_which_agent(data_dir, "agsaved001")
    _say_which_agent(data_dir, "agsaved01")
    out = " ".join(capsys.readouterr().out.split())
    assert "resuming agent agsaved001 (running, 2 trial(s) so far)" in out
    assert f"no agent agsaved01 in {data_dir}: starting a new agent with that id" in out
    assert "`assay agents`" in out


def test_runs_filter_by_status_tag_and_group_and_sort_by_a_metric(data_dir):
    """helper-64: `assay runs` had no tag, group or status filter and no sort."""
    ids = []
    for i, (acc, tags, group) in enumerate(((0.7, ["base"], "a"), (0.9, ["base", "fp16"], "a"),
                                            (0.8, ["fp16"], "b"))):
        r = assay.init(project="cli", system_metrics_interval=None, capture=False, tags=tags,
                       group=group)
        r.log({"val/acc": acc})
        r.finish("failed" if i == 2 else None)
        ids.append(r.id)

    def listed(*args):
        out = runner.invoke(app, ["runs", "--dir", str(data_dir), *args])
        assert out.exit_code == 0, out.output
        return [i for i in sorted(ids, key=out.stdout.find) if i in out.stdout]

    assert listed("-s", "failed") == [ids[2]]
    assert listed("-t", "base", "-t", "fp16") == [ids[1]]
    assert listed("-g", "a") == ids[:2]
    assert listed("--sort", "-val/acc") == [ids[1], ids[2], ids[0]]  # best first
    assert listed("--sort", "-val/acc", "--limit", "1") == [ids[1]]
    assert listed("--sort", "val/acc", "-s", "completed") == [ids[0], ids[1]]
    out = runner.invoke(app, ["runs", "--dir", str(data_dir), "--sort", "val/ac"])
    assert out.exit_code == 2 and "did you mean 'val/acc'?" in " ".join(out.output.split())
    out = runner.invoke(app, ["runs", "--dir", str(data_dir), "-t", "nope"])
    assert out.exit_code == 0 and "no runs match" in out.stdout


def test_an_error_with_brackets_is_printed_whole(tmp_path):
    """helper-67: rich read "[low, high]" in an error as markup and dropped it ("uniform takes
    , got [0.0]"), and the parameter was named twice."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nproject: p\ntrain: assay.examples.digits:train\nmetric: loss\n"
                   "mode: min\nspace: {x: {uniform: [0.0]}}\n")
    out = runner.invoke(app, ["run", str(bad), "--dir", str(tmp_path / "d")])
    text = " ".join(out.output.split())
    assert out.exit_code == 2, out.output
    assert "error: parameter 'x': uniform takes [low, high], got [0.0]" in text
    assert "hint: write {uniform: [low, high]}" in text


def test_ctrl_c_during_assay_run_says_how_to_resume(tmp_path, monkeypatch):
    """helper-67: Ctrl-C ended `assay run` silently; the agent's id, needed to resume it with
    --agent-id, was nowhere on the screen."""
    from assay.agents import runner as runner_mod

    good = tmp_path / "ok.yaml"
    good.write_text("name: ok\nproject: p\ntrain: assay.examples.digits:train\nmetric: val/acc\n"
                    "mode: max\nspace: {lr: {loguniform: [0.001, 0.1]}}\nbudget: {trials: 2}\n")

    def interrupted(obj, **kw):
        kw["on_progress"]({"agent_id": "agctrlc0001", "status": "running", "counts": {},
                           "best": None})
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod, "run_objective", interrupted)
    out = runner.invoke(app, ["run", str(good), "--dir", str(tmp_path / "d")])
    text = " ".join(out.output.split())
    assert out.exit_code == 130, out.output
    assert "interrupted: agent agctrlc0001 keeps its trials and budget" in text
    assert f"assay run {good} --dir {tmp_path / 'd'} --agent-id agctrlc0001" in text
