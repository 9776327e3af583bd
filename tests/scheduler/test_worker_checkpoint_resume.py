"""A function trial that restores its own checkpoint at step k after a retry keeps the points
below k (the run rewinds to the step it logs first), and one that starts again from the top
rewinds to 0."""
from __future__ import annotations

from assay.scheduler import TrialSpec
from assay.scheduler._ray_worker import _run_function


class _NoWatcher:
    request = None

    def __init__(self):
        self.on_stop = lambda reason: None

    def start(self):
        pass

    def close(self):
        pass


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
