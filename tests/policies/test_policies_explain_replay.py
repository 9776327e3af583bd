"""Explanations over a sweep (importance, regret, Pareto front) and stopper replays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from assay.errors import UserInputError
from assay.policies import (
    ASHAStopper,
    MedianStopper,
    NonFiniteStopper,
    SearchSpace,
    TrialResult,
    choice,
    param_importance,
    pareto_front,
    regret_curve,
    replay,
    uniform,
)


def test_param_importance_finds_the_parameter_that_matters():
    space = SearchSpace({"lr": uniform(0, 1), "noise": uniform(0, 1),
                         "act": choice(["a", "b"]), "epochs": 5})
    rng = np.random.default_rng(0)
    history = []
    for i in range(60):
        c = space.sample(rng)
        y = 10 * (c["lr"] - 0.3) ** 2 + 0.01 * c["noise"] + (0.05 if c["act"] == "a" else 0.0)
        history.append(TrialResult(f"t{i}", c, "completed", [(1, y)], y))
    history.append(TrialResult("running", space.sample(rng), "running"))
    for evaluator in ("fanova", "mean_decrease_impurity"):
        imp = param_importance(history, space, evaluator=evaluator)
        assert set(imp) == {"lr", "noise", "act"}
        assert max(imp, key=imp.get) == "lr" and imp["lr"] > 0.6
        assert sum(imp.values()) == pytest.approx(1.0)


def test_param_importance_needs_finished_trials():
    space = {"x": uniform(0, 1)}
    with pytest.raises(UserInputError, match="at least 2"):
        param_importance([TrialResult("a", {"x": 0.5}, "completed", [], 1.0)], space)
    with pytest.raises(UserInputError, match="unknown importance evaluator"):
        param_importance([], space, evaluator="shap")


def test_regret_curve_tracks_the_best_so_far():
    history = [
        TrialResult("a", {}, "completed", [], 3.0),
        TrialResult("b", {}, "failed", [(1, math.nan)]),
        TrialResult("c", {}, "completed", [], 1.0),
        TrialResult("d", {}, "stopped", [(1, 2.0)]),
    ]
    rows = regret_curve(history, mode="min", optimum=0.5)
    assert [r["best"] for r in rows] == [3.0, 3.0, 1.0, 1.0]
    assert rows[1]["value"] is None and rows[-1]["regret"] == pytest.approx(0.5)
    assert [r["best"] for r in regret_curve(history, mode="max")] == [3.0, 3.0, 3.0, 3.0]


def test_pareto_front_keeps_only_non_dominated_trials():
    pts = {"a": (1, 5), "b": (2, 2), "c": (5, 1), "d": (3, 3), "e": (1, 6)}
    history = [TrialResult(k, {}, "completed", [], 0.0, metrics={"x": x, "y": y})
               for k, (x, y) in pts.items()]
    front = {t.trial_id for t in pareto_front(history, {"x": "min", "y": "min"})}
    assert front == {"a", "b", "c"}
    front_max = {t.trial_id for t in pareto_front(history, {"x": "max", "y": "max"})}
    assert front_max == {"c", "d", "e"}


def _sweep():
    """Five finished trials of 10 steps; t3 is the best; t4 diverged at step 3."""
    out = []
    for i, end in enumerate([0.9, 0.7, 0.8, 0.2, None]):
        if end is None:
            out.append(TrialResult("t4", {}, "failed", [(1, 1.0), (2, 1.5), (3, math.nan)]))
            continue
        curve = [(s, end + (1.0 - end) * (10 - s) / 9) for s in range(1, 11)]
        out.append(TrialResult(f"t{i}", {}, "completed", curve, end))
    return out


def test_replay_without_stopping_uses_every_step():
    report = replay(NonFiniteStopper(), _sweep(), concurrency=2)
    assert report.total_steps == 4 * 10 + 3 == report.used_steps
    assert report.saved_fraction == 0.0 and report.best_trial_kept
    assert report.best_trial_id == "t3" and report.regret == 0.0


def test_replay_counts_saved_steps_and_regret_when_the_best_is_lost():
    # One worker: trials run in order; the median rule judges t3 against the earlier three.
    sweep = _sweep()
    sweep[3] = TrialResult("t3", {}, "completed",
                           [(s, 1.0 if s < 8 else 0.2) for s in range(1, 11)], 0.2)  # late bloomer
    report = replay(MedianStopper(warmup_steps=2, min_trials=2), sweep, concurrency=1)
    assert "t3" in report.stopped and not report.best_trial_kept
    assert report.kept_value == pytest.approx(0.7) and report.regret == pytest.approx(0.5)
    assert 0 < report.saved_fraction < 1
    lengths = {t.trial_id: len(t.curve) for t in sweep}  # steps are 1, 2, ... here
    assert report.used_steps == report.total_steps - sum(
        lengths[t] - report.stop_steps[t] for t in report.stopped
    )
    assert report.summary()["n_stopped"] == len(report.stopped)


def test_replay_with_asha_saves_compute_on_a_larger_sweep():
    rng = np.random.default_rng(0)
    sweep = []
    for i in range(20):
        end = rng.uniform(0.1, 1.0)
        sweep.append(TrialResult(f"t{i}", {}, "completed",
                                 [(s, end + (2 - end) * math.exp(-s / 3)) for s in range(1, 28)],
                                 None))
    report = replay(ASHAStopper(27, reduction_factor=3), sweep, concurrency=4)
    assert report.saved_fraction > 0.4


def test_replay_rejects_unfinished_trials_and_bad_arguments():
    with pytest.raises(UserInputError, match="finished"):
        replay(NonFiniteStopper(), [TrialResult("a", {}, "running", [(1, 1.0)])])
    with pytest.raises(UserInputError):
        replay(NonFiniteStopper(), _sweep(), concurrency=0)
    with pytest.raises(UserInputError):
        replay(NonFiniteStopper(), _sweep(), check_every=0)
    # Not a stopper at all: said so, not an AttributeError about "mode".
    with pytest.raises(UserInputError, match="needs a stopper"):
        replay(object(), _sweep())  # type: ignore[arg-type]
