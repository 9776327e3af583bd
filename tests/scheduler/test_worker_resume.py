"""When a resumed Ray attempt may reuse its run's stored result instead of running again
(``scheduler._ray_worker._finished_run``), on real runs in a data directory, without Ray."""

from __future__ import annotations

import pytest
from assay.scheduler import TrialSpec
from assay.scheduler._ray_worker import TRIAL_RESULT_KEY, _finished_run, _run_function

pytestmark = pytest.mark.integration

CONFIG = {"lr": 0.1, "depth": 3}


def _run(data_dir, run_id, *, project="p", config=CONFIG, result=None, status="completed"):
    import assay

    run = assay.init(project, id=run_id, config=dict(config), dir=data_dir,
                     system_metrics_interval=None, capture=False)
    run.log({"loss": 0.5}, step=0)
    if result is not None:
        run.summary[TRIAL_RESULT_KEY] = result
    run.finish(status)


def _spec(run_id, *, project="p", config=CONFIG, target="pkg.mod:train"):
    return TrialSpec(run_id, project, dict(config), target, resume=True)


def test_a_completed_run_with_its_stored_result_is_reused(data_dir):
    _run(data_dir, "trial1", result={"loss": 0.5, "returned": 7.0})
    out = _finished_run(data_dir, _spec("trial1"))
    assert out is not None and out["result"] == {"loss": 0.5, "returned": 7.0}
    assert "already completed" in out["reason"]


def test_a_run_completed_without_the_result_its_attempt_stores_last_runs_again(data_dir):
    # What the interpreter's exit handler leaves when Ray ends a worker outside the trial.
    _run(data_dir, "trial2")
    assert _finished_run(data_dir, _spec("trial2")) is None


@pytest.mark.parametrize("project, config, reused", [
    ("other", CONFIG, False),  # a caller-chosen id that another project's run has
    ("p", {**CONFIG, "lr": 0.2}, False),
    ("p", {"lr": 0.1}, True),  # the trial's own keys match; its run may hold more
])
def test_only_a_run_of_the_same_project_and_config_is_reused(data_dir, project, config, reused):
    _run(data_dir, "trial3", result={"loss": 0.5})
    out = _finished_run(data_dir, _spec("trial3", project=project, config=config))
    assert (out is not None) is reused


def test_a_failed_or_missing_run_runs_again(data_dir):
    _run(data_dir, "trial4", result={"loss": 0.5}, status="failed")
    assert _finished_run(data_dir, _spec("trial4")) is None
    assert _finished_run(data_dir, _spec("nope")) is None


def test_a_command_trial_reuses_its_run_summary(data_dir):
    _run(data_dir, "trial5")
    out = _finished_run(data_dir, _spec("trial5", target=["python", "train.py"]))
    assert out is not None and out["result"] == {"loss": 0.5}


class _NoWatcher:
    """What ``_run_function`` needs of the watcher thread, without a Ray control actor."""

    request = None

    def __init__(self):
        self.on_stop = lambda reason: None

    def start(self):
        pass

    def close(self):
        pass


def _implicit(config, run):
    for i in range(int(config["steps"])):
        run.log({"loss": 10.0 * run.attach + i})  # implicit steps, telling attempts apart
    return {"loss": 10.0 * run.attach}


def test_a_retried_function_trial_supersedes_the_dead_attempts_points(data_dir):
    """A retry (or a relaunch) starts the target from the top, resuming its run rewound to
    step 0: the run's history and summary hold the new attempt's two points, not the first
    attempt's four (its tail at steps 2-3 is not mixed in)."""
    import assay

    spec = TrialSpec("trial6", "p", {"steps": 2}, _implicit, resume=True)
    died = assay.init("p", id="trial6", config={"steps": 2}, dir=data_dir,
                      system_metrics_interval=None, capture=False)
    for i in range(4):
        died.log({"loss": 9.0}, step=i)
    died.finish("crashed")  # what recovery marks a run whose worker was killed
    out = _run_function(spec, True, data_dir, _NoWatcher())
    assert out["status"] == "completed"
    api = assay.Api(data_dir)
    h = api.history("trial6", "loss")
    assert list(zip(h["step"], h["value"])) == [(0, 10.0), (1, 11.0)]
    rec = api.run("trial6")
    assert rec.attach == 1 and rec.last_step == 1
    assert rec.summary["loss"] == {"last": 11.0, "step": 1, "min": 10.0, "max": 11.0}


# -- a retried function trial that restores its own checkpoint keeps the points below it --
def _ckpt_train(config, run):
    start = 5 if run.attach > 0 else 0  # "loads its checkpoint" saved at epoch 5
    for epoch in range(start, 8):
        run.log({"loss": 1.0 / (epoch + 1)}, step=epoch)
    return {"loss": 1.0 / 8}


def test_retry_of_checkpointing_function_trial_keeps_pre_checkpoint_points(data_dir):
    import assay

    died = assay.init("p", id="trial7", config={}, dir=data_dir,
                      system_metrics_interval=None, capture=False)
    for epoch in range(6):  # epochs 0-5 logged, checkpoint at 5, then the worker died
        died.log({"loss": 1.0 / (epoch + 1)}, step=epoch)
    died.finish("crashed")
    spec = TrialSpec("trial7", "p", {}, _ckpt_train, resume=True)
    out = _run_function(spec, True, data_dir, _NoWatcher())
    assert out["status"] == "completed"
    steps = assay.Api(data_dir).history("trial7", "loss")["step"].to_list()
    assert steps == list(range(8)), f"curve after the retry: {steps}"


def _fresh_train(config, run):
    for epoch in range(3):  # starts again from the top, implicit steps
        run.log({"loss": 10.0 + epoch})
    return {"loss": 12.0}


def test_retry_of_a_function_trial_from_the_top_holds_only_the_new_attempt(data_dir):
    import assay

    died = assay.init("p", id="trial8", config={}, dir=data_dir,
                      system_metrics_interval=None, capture=False)
    for epoch in range(6):
        died.log({"loss": 1.0 / (epoch + 1)}, step=epoch)
    died.finish("crashed")
    spec = TrialSpec("trial8", "p", {}, _fresh_train, resume=True)
    assert _run_function(spec, True, data_dir, _NoWatcher())["status"] == "completed"
    h = assay.Api(data_dir).history("trial8", "loss")
    assert list(zip(h["step"], h["value"])) == [(0, 10.0), (1, 11.0), (2, 12.0)]
