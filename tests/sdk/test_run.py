from __future__ import annotations

import math
import os

import assay
import numpy as np
import pytest
from assay.errors import ConflictError, NotFoundError, UserInputError


def _init(**kw):
    kw.setdefault("system_metrics_interval", None)
    kw.setdefault("capture", False)
    return assay.init(**kw)


def test_logged_points_come_back_from_history_with_config_and_summary(data_dir):
    run = _init(project="digits", config={"lr": 3e-4, "depth": 2}, tags=["baseline"])
    for step in range(100):
        run.log({"train/loss": 1.0 / (step + 1), "val/acc": step / 100}, step=step)
    run.config["batch"] = 64
    run.finish()
    api = assay.Api()
    df = api.runs(project="digits")
    assert df.height == 1
    row = df.row(0, named=True)
    assert row["config.lr"] == 3e-4 and row["config.batch"] == 64
    assert row["summary.val/acc"] == 0.99 and row["summary_min.train/loss"] == 0.01
    assert row["status"] == "completed" and row["tags"] == ["baseline"]
    h = api.history(run.id)
    assert h.columns == ["run_id", "key", "step", "value", "time"]
    assert h.height == 200
    loss = h.filter(h["key"] == "train/loss")
    assert loss["step"].to_list() == list(range(100))
    assert api.history(run.id, keys=["val/acc"]).height == 100


def test_step_auto_increments_and_follows_explicit_steps(data_dir):
    run = _init(project="p")
    run.log({"a": 1})
    run.log({"a": 2})
    run.log({"a": 3}, step=10)
    run.log({"a": 4})
    run.finish()
    h = assay.Api().history(run.id)
    assert h["step"].to_list() == [0, 1, 10, 11]


def test_going_back_to_an_earlier_step_is_stored_and_said_once(data_dir, caplog):
    """A lower step than the last is kept (a late evaluation fills its step), but it replaces
    what that step held: a mistaken step argument used to overwrite history silently."""
    run = _init(project="p")
    with caplog.at_level("WARNING", logger="assay"):
        run.log({"loss": 1.0}, step=0)
        run.log({"loss": 0.5, "acc": 0.1}, step=10)
        run.log({"acc": 0.2}, step=10)  # the same step again: several calls per step is normal
        assert "logged step" not in caplog.text
        run.log({"loss": 9.0}, step=0)  # back to step 0: replaces 1.0
        run.log({"val": 0.7}, step=5)
        run.log({"loss": 0.4})  # no step: one past the last one logged
    run.finish()
    said = [r.getMessage() for r in caplog.records if "logged step" in r.getMessage()]
    assert len(said) == 1, said
    assert f"run {run.id} logged step 0 after step 10" in said[0] and "replaced" in said[0]
    h = assay.Api().history(run.id, "loss")
    assert list(zip(h["step"].to_list(), h["value"].to_list())) == [(0, 9.0), (6, 0.4), (10, 0.5)]


def test_numpy_torch_scalars_nan_inf_and_nested_dicts_are_stored(data_dir):
    torch = pytest.importorskip("torch")
    run = _init(project="p")
    run.log({"np": np.float32(0.5), "i": np.int64(3), "t": torch.tensor(2.5), "b": True,
             "nan": math.nan, "inf": -math.inf, "nested": {"x": 1.0}})
    run.finish()
    h = assay.Api().history(run.id)
    vals = dict(zip(h["key"].to_list(), h["value"].to_list()))
    assert vals["np"] == 0.5 and vals["i"] == 3 and vals["t"] == 2.5 and vals["b"] == 1.0
    assert math.isnan(vals["nan"]) and vals["inf"] == -math.inf and vals["nested/x"] == 1.0


def test_summary_is_last_value_with_min_max_and_explicit_overrides(data_dir):
    run = _init(project="p")
    for v in [3.0, 1.0, 2.0]:
        run.log({"loss": v})
    assert run.summary["loss"] == 2.0
    assert run.summary.min("loss") == 1.0 and run.summary.max("loss") == 3.0
    run.summary["loss"] = 0.5
    assert run.summary["loss"] == 0.5
    run.finish()
    rec = assay.Api().run(run.id)
    assert rec.summary_values()["loss"] == 0.5 and rec.summary["loss"]["min"] == 1.0


@pytest.mark.parametrize("bad", ["has space", "", "../x", "a" * 200, 7])
def test_invalid_project_names_are_rejected_with_a_hint(data_dir, bad):
    with pytest.raises(UserInputError) as e:
        _init(project=bad)
    assert "project name" in str(e.value) and "hint" in str(e.value)


def test_a_url_as_the_data_directory_is_refused_not_made_a_local_folder(tmp_path, monkeypatch):
    """dir="s3://team-bucket/assay" wrote a local folder ./s3:/team-bucket/assay (review)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserInputError, match="must be a local folder") as e:
        assay.init(project="p", dir="s3://team-bucket/assay")
    assert "server=" in e.value.hint
    monkeypatch.setenv("ASSAY_DIR", "gs://bucket/x")
    with pytest.raises(UserInputError, match="gs://bucket/x"):
        assay.Api()
    assert not list(tmp_path.iterdir())  # nothing was created
    from assay.sdk.settings import data_dir

    assert data_dir(f"file://{tmp_path}/d") == tmp_path / "d"


def test_bad_metric_values_and_reserved_keys_are_rejected_and_nothing_is_lost(data_dir):
    run = _init(project="p")
    run.log({"ok": 1.0})
    with pytest.raises(UserInputError, match="not a number"):
        run.log({"ok": 2.0, "text": "hello"})
    with pytest.raises(UserInputError, match="reserved prefix"):
        run.log({"sys/cpu": 1.0})
    with pytest.raises(UserInputError, match="step must be"):
        run.log({"ok": 1.0}, step=-1)
    with pytest.raises(UserInputError, match="mapping"):
        run.log([1, 2])  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="not a number"):
        run.log({"arr": np.ones(3)})
    with pytest.raises(UserInputError, match="given twice"):
        run.log({"a/b": 1.0, "a": {"b": 2.0}})  # one would silently win
    run.log({"ok": 3.0})
    run.finish()
    h = assay.Api().history(run.id)
    assert h["value"].to_list() == [1.0, 3.0]


def test_huge_integers_and_steps_are_stored_as_floats_or_refused_not_left_to_stall_ingest(
        data_dir):
    # An int past int64 used to be accepted, then failed every ingest pass of the directory.
    run = _init(project="p")
    run.log({"count": 2**64, "small": 7})
    run.log({"count": np.uint64(2**64 - 1)})
    with pytest.raises(UserInputError, match="too large for a float64"):
        run.log({"count": 10**400})
    with pytest.raises(UserInputError, match="too large"):
        run.log({"count": 1.0}, step=2**63)
    run.log({"count": 3})
    run.finish()
    later = _init(project="p")  # the directory still ingests
    later.log({"x": 1.0})
    later.finish()
    h = assay.Api().history(run.id)
    assert h.filter(h["key"] == "count")["value"].to_list() == [2.0**64, 2.0**64, 3.0]
    assert assay.Api().run(later.id).status == "completed"


def test_non_json_config_is_rejected_with_the_entry_named(data_dir):
    with pytest.raises(UserInputError, match="'opt'"):
        _init(project="p", config={"opt": object()})
    run = _init(project="p", config={"a": np.float64(1.5), "t": (1, 2)})
    assert run.config["a"] == 1.5 and run.config["t"] == [1, 2]
    with pytest.raises(UserInputError):
        run.config["f"] = lambda x: x
    run.finish()


def test_config_may_be_a_namespace_or_dataclass_and_one_tag_may_be_a_string(data_dir):
    import argparse
    import dataclasses

    @dataclasses.dataclass
    class Hp:
        lr: float = 0.1
        depth: int = 2

    assert _init(project="p", config=argparse.Namespace(lr=0.5)).config == {"lr": 0.5}
    run = _init(project="p", config=Hp(), tags="baseline")  # not the tags b, a, s, e, ...
    assert run.config == {"lr": 0.1, "depth": 2}
    # helper-64: init took them, config.update and summary refused them as values.
    run.config.update({"opt": Hp(lr=0.01), "args": argparse.Namespace(seed=3)})
    run.summary["best_hp"] = Hp(depth=4)
    assert run.config["opt"] == {"lr": 0.01, "depth": 2} and run.config["args"] == {"seed": 3}
    run.finish()
    assert assay.Api(data_dir).run(run.id).tags == ("baseline",)
    assert assay.Api(data_dir).run(run.id).summary_set["best_hp"] == {"lr": 0.1, "depth": 4}
    for bad in ([1, 2], "lr=0.1", Hp):
        with pytest.raises(UserInputError, match="config must be a mapping") as err:
            _init(project="p", config=bad)
        assert "config={" in err.value.hint


def test_a_run_still_being_logged_cannot_be_resumed_until_it_finishes(data_dir):
    # Two writers of one run: the ingester would keep only the newer attach's records.
    run = _init(project="p")
    run.log({"loss": 1.0})
    run.flush()
    with pytest.raises(ConflictError, match=f"process {os.getpid()} .* still logging"):
        _init(project="p", resume=run.id)
    run.log({"loss": 0.5})
    run.finish()
    again = _init(project="p", resume=run.id)
    again.log({"loss": 0.25})
    again.finish()
    h = assay.Api().history(run.id)
    assert h["value"].to_list() == [1.0, 0.5, 0.25]


def test_unknown_resume_id_is_not_found(data_dir):
    with pytest.raises(NotFoundError, match="cannot resume"):
        _init(project="p", resume="doesnotexist")


def test_resume_continues_steps_config_and_summary(data_dir):
    run = _init(project="p", config={"lr": 0.1})
    for i in range(5):
        run.log({"loss": float(5 - i)})
    run.finish()
    again = _init(project="p", resume=run.id, config={"epochs": 10})
    assert again.id == run.id and dict(again.config) == {"lr": 0.1, "epochs": 10}
    again.log({"loss": 0.5})
    assert again.summary.min("loss") == 0.5 and again.summary.max("loss") == 5.0
    again.finish()
    h = assay.Api().history(run.id)
    assert h["step"].to_list() == [0, 1, 2, 3, 4, 5]
    assert assay.Api().run(run.id).attach == 1


def test_a_resume_adds_its_tags_and_replaces_notes_and_group(data_dir):
    run = _init(project="p", tags=["a"], notes="first try", group="g1")
    run.finish()
    again = _init(project="p", resume=run.id, tags=["b", "a"], notes="after the fix")
    again.finish()
    stored = assay.Api().run(run.id)
    assert (stored.tags, stored.notes, stored.group) == (("a", "b"), "after the fix", "g1")


def test_relogging_a_step_after_resume_keeps_the_last_value_once(data_dir):
    run = _init(project="p")
    run.log({"loss": 1.0}, step=0)
    run.log({"loss": 2.0}, step=1)
    run.finish()
    again = _init(project="p", resume=run.id)
    again.log({"loss": 9.0}, step=1)
    again.finish()
    h = assay.Api().history(run.id)
    assert h["step"].to_list() == [0, 1] and h["value"].to_list() == [1.0, 9.0]


def test_exception_in_context_marks_run_failed_with_traceback(data_dir):
    with pytest.raises(RuntimeError), _init(project="p") as run:
        run.log({"x": 1})
        raise RuntimeError("boom in training")
    rec = assay.Api().run(run.id)
    assert rec.status == "failed" and "boom in training" in rec.error


def test_log_after_finish_is_a_conflict(data_dir):
    run = _init(project="p")
    run.finish()
    run.finish()  # idempotent
    with pytest.raises(ConflictError):
        run.log({"x": 1})


def test_config_and_summary_changes_after_finish_are_refused_not_silently_dropped(data_dir):
    run = _init(project="p", config={"lr": 0.1})
    run.summary["best"] = 0.5
    run.finish()
    with pytest.raises(ConflictError, match="config changes are closed"):
        run.config["late"] = 1
    with pytest.raises(ConflictError, match="(?s)summary changes are closed.*resume="):
        run.summary["best"] = 0.9
    stored = assay.Api().run(run.id)
    assert stored.config == {"lr": 0.1} and stored.summary_values()["best"] == 0.5
    assert "late" not in run.config and run.summary["best"] == 0.5  # the local view agrees


def test_api_run_unknown_id_and_filters(data_dir):
    api = assay.Api()
    with pytest.raises(NotFoundError):
        api.run("nope")
    a = _init(project="p", config={"lr": 0.1})
    a.finish()
    b = _init(project="p", config={"lr": 0.2})
    b.finish(status="failed")
    import polars as pl

    assert api.runs(filters={"status": "failed"})["run_id"].to_list() == [b.id]
    assert api.runs(filters=pl.col("config.lr") < 0.15)["run_id"].to_list() == [a.id]
    with pytest.raises(UserInputError, match="unknown column"):
        api.runs(filters={"nope": 1})


def test_system_metrics_are_logged_under_sys(data_dir):
    run = _init(project="p", system_metrics_interval=0.05)
    import time

    time.sleep(0.4)
    run.finish()
    keys = set(assay.Api().history(run.id)["key"].to_list())
    assert {"sys/cpu.process_percent", "sys/memory.process_rss_mb"} <= keys
    assert not any(k.startswith("sys/gpu") for k in keys)  # no NVML on this machine


def test_system_samples_neither_advance_the_training_step_nor_overwrite_on_resume(data_dir):
    import time

    key = "sys/cpu.process_percent"
    run = _init(project="p", system_metrics_interval=0.05)
    for epoch in range(3):
        run.log({"val/acc": 0.1 * epoch})
        time.sleep(0.2)  # several system samples per epoch
    run.finish()
    api = assay.Api()
    assert api.run(run.id).last_step == 2
    first = api.history(run.id, key)
    again = _init(project="p", resume=run.id, system_metrics_interval=0.05)
    again.log({"val/acc": 0.3})
    time.sleep(0.2)
    again.finish()
    assert api.history(run.id, "val/acc")["step"].to_list() == [0, 1, 2, 3]
    after = api.history(run.id, key)
    assert after.height > first.height
    assert after.head(first.height)["time"].to_list() == first["time"].to_list()


def test_capture_records_env_and_seed(data_dir):
    assay.seed(123)
    run = assay.init(project="p", system_metrics_interval=None)
    import time

    time.sleep(0.5)
    run.finish()
    env = assay.Api().run(run.id).env
    assert env["seed"] == 123 and env["python"].startswith("3.11")
    assert any(p.lower().startswith("polars==") for p in env["packages"])


def test_preassigned_ids_are_unique_and_resume_continues_them(data_dir, monkeypatch):
    run = _init(project="p", id="trial0001")
    assert run.id == "trial0001"
    run.log({"x": 1.0})
    run.finish()
    with pytest.raises(ConflictError, match="already taken"):
        _init(project="p", id="trial0001")
    with pytest.raises(UserInputError, match="invalid run id"):
        _init(project="p", id="no spaces!")
    monkeypatch.setenv("ASSAY_RESUME_ID", "trial0001")
    again = _init(project="p")  # a backend relaunched the command: it starts from the top
    assert again.id == "trial0001" and again.attach == 1
    again.log({"x": 2.0})  # its implicit steps start again at 0: the curve is rewritten
    again.finish()
    monkeypatch.delenv("ASSAY_RESUME_ID")
    explicit = _init(project="p", resume="trial0001")  # a person continuing the run
    explicit.log({"x": 3.0})  # steps carry on
    explicit.finish()
    import assay

    hist = assay.Api(data_dir).history("trial0001", "x").sort("step")
    assert hist["step"].to_list() == [0, 1] and hist["value"].to_list() == [2.0, 3.0]


def test_should_stop_follows_request_and_stop_file(data_dir):
    run = _init(project="p")
    assert not run.should_stop()
    (data_dir / "control").mkdir()
    (data_dir / "control" / f"{run.id}.stop").write_text("median rule: below median at step 5")
    run._stop_checked = 0.0
    assert run.should_stop() and run.stop_reason.startswith("median rule")
    run.finish(status="stopped")
    other = _init(project="p")
    other.request_stop("budget exhausted")
    assert other.should_stop() and other.stop_reason == "budget exhausted"
    other.finish()


def test_a_run_asked_to_stop_finishes_as_stopped_with_the_reason(data_dir, monkeypatch):
    monkeypatch.setenv("ASSAY_PROJECT", "fromenv")
    with _init() as run:  # project from ASSAY_PROJECT
        run.log({"x": 1.0})
        run.request_stop("asha: below the rung cut at step 3")
        assert run.should_stop()
    rec = assay.Api().run(run.id)
    assert rec.project == "fromenv" and rec.status == "stopped"
    assert rec.error.startswith("asha")
    monkeypatch.delenv("ASSAY_PROJECT")
    with pytest.raises(UserInputError, match="needs a project"):
        _init(project=None)


def test_api_on_a_mistyped_directory_is_an_error_that_creates_nothing(tmp_path):
    typo = tmp_path / "assay-dta"
    with pytest.raises(NotFoundError, match="no assay data directory") as err:
        assay.Api(typo)
    assert "dir=" in err.value.hint and not typo.exists()
    (tmp_path / "fresh").mkdir()  # an existing, empty directory reads as empty
    assert assay.Api(tmp_path / "fresh").runs().height == 0


def test_a_step_logged_again_counts_only_its_last_value_in_min_and_max(data_dir):
    """The history keeps the last write of a step; the summary's min and max counted every
    write, so a value written over could stay the run's min (found by a user review).
    Going back to an earlier step rebuilds them; logging the last step again does not
    (MLflow's step-less log_metric logs step 0 every time: a rebuild per point would read
    the run's whole history on every ingest pass)."""
    run = _init(project="dup")
    run.log({"loss": 0.1, "acc": 0.5}, step=5)  # a bad value...
    run.log({"loss": 0.8}, step=6)
    run.log({"loss": 0.9}, step=5)  # ...written over, going back to step 5
    run.finish()
    api = assay.Api(data_dir)
    assert api.history(run.id, "loss")["value"].to_list() == [0.9, 0.8]
    row = api.runs(project="dup").row(0, named=True)
    assert (row["summary_min.loss"], row["summary_max.loss"], row["summary.loss"]) == (0.8, 0.9, 0.9)
    assert row["summary_min.acc"] == 0.5
    assert (run.summary.min("loss"), run.summary.max("loss")) == (0.8, 0.9)  # as stored
    # A resume without a rewind that logs an earlier step again: its old value is gone too.
    again = _init(project="dup", resume=run.id)
    again.log({"loss": 5.0}, step=5)
    again.finish()
    rec = api.run(run.id)
    assert rec.summary["loss"] == {"last": 5.0, "step": 5, "min": 0.8, "max": 5.0}
    # The last step logged again keeps the earlier semantics: every write counts.
    same = _init(project="dup")
    same.log({"loss": 0.1}, step=0)
    same.log({"loss": 0.9}, step=0)
    same.finish()
    assert api.run(same.id).summary["loss"]["min"] == 0.1




def test_file_urls_with_a_host_are_refused_and_localhost_is_local(tmp_path):
    from assay.sdk.settings import resolve_data_dir

    assert resolve_data_dir(f"file://localhost{tmp_path}/d") == tmp_path / "d"
    with pytest.raises(UserInputError, match="names another host"):
        resolve_data_dir("file://nas01/share")


def test_a_diff_the_blob_store_cannot_take_costs_the_diff_not_the_environment(
        data_dir, tmp_path, monkeypatch):
    """An object store away (or a conflicting ASSAY_BLOB_STORE) made capture drop the whole
    environment and git record (regression review)."""
    from assay.store import blob_config
    from gitrepo import dirty_checkout  # tests/ is on sys.path (rootdir conftest)

    def away(_dir):
        raise OSError("the object store does not answer")

    monkeypatch.setattr(blob_config, "blob_store_for", away)
    monkeypatch.chdir(dirty_checkout(tmp_path / "code", "a = 1\n", "a = 2\n"))
    with assay.init(project="p", system_metrics_interval=None) as run:
        run.log({"x": 1.0})
    rec = assay.Api().run(run.id)
    assert rec.git["dirty"] is True and rec.git["commit"]
    assert rec.git["diff_blob"] is None and rec.git["diff_stored"] is False
    assert rec.env and rec.env.get("python")


def test_reading_a_logged_metrics_summary_does_not_wait_on_the_writer(data_dir, monkeypatch):
    """helper-64: `if run.summary["acc"] > best` fsynced the WAL at every read (about 2 ms a
    step). The last value logged is read from memory; min/max and other keys still flush."""
    run = _init(project="p")
    run.log({"acc": 0.5, "n": 3})
    run.log({"acc": 0.7})
    flushes = []
    real = run.flush
    monkeypatch.setattr(run, "flush", lambda *a, **k: (flushes.append(1), real(*a, **k)))
    assert run.summary["acc"] == 0.7 and run.summary["n"] == 3.0
    assert type(run.summary["n"]) is float  # as stored
    assert "acc" in run.summary and flushes == []
    run.summary["acc"] = "set by hand"  # explicit values win, as before
    assert run.summary["acc"] == "set by hand"
    assert "nope" not in run.summary and flushes, "a key not logged here looks further"
    assert run.summary.max("n") == 3.0
    run.finish()
    assert run.summary["n"] == 3.0 and dict(run.summary)["acc"] == "set by hand"


def test_a_data_directory_that_cannot_be_written_is_said_plainly(data_dir, monkeypatch):
    """helper-64: init on a read-only mount raised a bare OSError naming runs/<id>."""
    import errno

    from assay.errors import AssayError

    _init(project="p").finish()  # the directory exists and holds a run
    real = os.mkdir

    def refuse(path, *a, **k):
        if "runs" in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "mkdir", refuse)
    with pytest.raises(AssayError, match="cannot start a run in .*: Read-only file system") as e:
        _init(project="p")
    assert "writable data directory" in e.value.hint and "assay.Api(dir)" in e.value.hint
    monkeypatch.setattr(os, "mkdir", real)
    assert assay.Api().runs().height == 1, "what was stored stays readable"


def test_a_typo_in_a_project_or_a_metric_key_is_said_not_read_as_no_data(data_dir, caplog):
    """helper-64: Api().runs(project="digits-dmeo") and history(keys=["train/los"]) returned
    empty frames silently (the CLI already said "did you mean")."""
    run = _init(project="digits-demo")
    run.log({"train/loss": 0.5, "val/acc": 0.9})
    run.finish()
    api = assay.Api(data_dir)
    assert api.projects() == ["digits-demo"]
    with caplog.at_level("WARNING", logger="assay"):
        assert api.runs(project="digits-dmeo").height == 0
        assert api.history(run.id, ["train/los", "val/acc"])["key"].unique().to_list() == [
            "val/acc"]
    said = caplog.text
    assert "no runs in project 'digits-dmeo'; did you mean 'digits-demo'?" in said
    assert f"run {run.id} has no points of 'train/los' (did you mean 'train/loss'?)" in said
    caplog.clear()
    with caplog.at_level("WARNING", logger="assay"):
        api.history(run.id, "val/acc")
        assert api.runs(project="digits-demo").height == 1
    assert caplog.text == ""


def test_a_command_trial_run_stores_the_config_its_agent_chose(data_dir, monkeypatch):
    """helper-63: a command trial's run said "No config." (init ignored $ASSAY_CONFIG, which
    the agent sets), so the dashboard, filters and Compare could not show its parameters. The
    agent's values win over the script's defaults (argparse strings included), as in W&B."""
    monkeypatch.setenv("ASSAY_RUN_ID", "trialx0001")
    monkeypatch.setenv("ASSAY_CONFIG", '{"x": 0.89, "depth": 3}')
    run = _init(project="p", config={"x": "0.5", "batch": 64})
    assert dict(run.config) == {"x": 0.89, "depth": 3, "batch": 64}
    run.finish()
    assert assay.Api(data_dir).run("trialx0001").config == {"x": 0.89, "depth": 3, "batch": 64}
    monkeypatch.setenv("ASSAY_RUN_ID", "trialx0002")
    monkeypatch.setenv("ASSAY_CONFIG", "[1, 2]")
    with pytest.raises(assay.errors.UserInputError, match="ASSAY_CONFIG is not a JSON object"):
        _init(project="p")
    monkeypatch.delenv("ASSAY_RUN_ID")  # not a trial: a stray variable changes nothing
    plain = _init(project="p", config={"x": 1})
    assert dict(plain.config) == {"x": 1}
    plain.finish()
