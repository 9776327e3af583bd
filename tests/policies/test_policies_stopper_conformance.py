"""The contract every early stopper honours, run against every stopper (cf. Syne Tune's
scheduler API test): decisions only for running trials, a reason with JSON evidence for
each, no mutation, no hidden state, and min/max symmetry."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from assay.errors import UserInputError
from assay.policies import (
    AllOf,
    AnyOf,
    ASHAStopper,
    DivergenceStopper,
    EarlyStopper,
    HyperbandStopper,
    LearnedStopper,
    MedianStopper,
    NonFiniteStopper,
    PatienceStopper,
    StopReason,
    ThresholdStopper,
    TrialResult,
)


def _factories(predictor):
    sign = {"min": 1.0, "max": -1.0}
    return {
        "median": lambda mode: MedianStopper(mode=mode, warmup_steps=2),
        "asha": lambda mode: ASHAStopper(10, mode=mode, min_step=1, reduction_factor=2),
        "hyperband": lambda mode: HyperbandStopper(10, mode=mode, reduction_factor=2),
        "non_finite": lambda mode: NonFiniteStopper(mode=mode),
        "divergence": lambda mode: DivergenceStopper(mode=mode, ratio=0.5, patience=1),
        "threshold": lambda mode: ThresholdStopper({3: 1.2 * sign.get(mode, 1.0)}, mode=mode),
        "patience": lambda mode: PatienceStopper(mode=mode, patience=3),
        "any_of": lambda mode: AnyOf(NonFiniteStopper(mode=mode), MedianStopper(mode=mode)),
        "all_of": lambda mode: AllOf(MedianStopper(mode=mode), ASHAStopper(10, mode=mode)),
        "learned": lambda mode: LearnedStopper(predictor, threshold=0.5, mode=mode, max_step=10,
                                               min_points=2, min_fraction=0.2),
    }


NAMES = ["median", "asha", "hyperband", "non_finite", "divergence", "threshold", "patience",
         "any_of", "all_of", "learned"]


@pytest.fixture(params=NAMES)
def make_stopper(request, small_predictor):
    return _factories(small_predictor)[request.param]


def _sweep(sign: float = 1.0) -> list[TrialResult]:
    """Finished trials of several qualities, running ones good, bad, diverging, flat."""
    rng = np.random.default_rng(0)
    steps = np.arange(1, 11)
    out = []
    for i in range(8):
        final = 0.3 + 0.1 * i
        curve = final + (2.0 - final) * np.exp(-steps / 3) + rng.normal(0, 0.01, 10)
        out.append(TrialResult(f"done{i}", {"x": i}, "completed",
                               list(zip(steps, curve * sign)), float(curve[-1] * sign)))
    running = {
        "good": [1.0, 0.5, 0.3, 0.2, 0.15],
        "bad": [2.0, 1.98, 1.97, 1.97, 1.96, 1.96],
        "nan": [1.5, 1.3, math.nan],
        "diverging": [1.5, 0.9, 1.8, 2.5, 4.0],
        "flat": [2.2, 2.2, 2.2, 2.2, 2.2, 2.2],
        "one_point": [1.0],
        "empty": [],
    }
    for tid, values in running.items():
        out.append(TrialResult(tid, {"x": -1}, "running",
                               [(s + 1, v * sign) for s, v in enumerate(values)]))
    return out


def _check_reasons(decided: dict, running: list[str]) -> None:
    assert set(decided) <= set(running)
    for tid, reason in decided.items():
        assert isinstance(reason, StopReason)
        assert reason.trial_id == tid
        assert reason.rule and reason.message
        json.dumps(reason.to_dict(), allow_nan=False)


def test_stopper_only_decides_about_running_trials_with_explained_reasons(make_stopper):
    history = _sweep()
    running = [t.trial_id for t in history if t.status == "running"]
    decided = make_stopper("min").should_stop(history, running)
    _check_reasons(decided, running)
    assert "good" not in decided


def test_stopper_defaults_to_every_running_trial(make_stopper):
    history = _sweep()
    stopper = make_stopper("min")
    running = [t.trial_id for t in history if t.status == "running"]
    assert stopper.should_stop(history) == stopper.should_stop(history, running)


def test_stopper_leaves_trials_not_listed_as_running_alone(make_stopper):
    history = _sweep()
    decided = make_stopper("min").should_stop(history, ["good"])
    assert set(decided) <= {"good"}


def test_stopper_answers_nothing_for_an_empty_history(make_stopper):
    assert make_stopper("min").should_stop([], []) == {}
    assert make_stopper("min").should_stop([]) == {}


def test_stopper_is_a_pure_function_of_the_history(make_stopper):
    history = _sweep()
    before = copy.deepcopy([t.to_dict() for t in history])
    stopper = make_stopper("min")
    first = stopper.should_stop(history)
    again = stopper.should_stop(list(reversed(history)))
    assert {k: v.rule for k, v in first.items()} == {k: v.rule for k, v in again.items()}
    assert [t.to_dict() for t in history] == before


def test_stopper_decides_alike_for_min_and_for_max_of_the_negated_metric(make_stopper):
    low = make_stopper("min").should_stop(_sweep(1.0))
    high = make_stopper("max").should_stop(_sweep(-1.0))
    assert set(low) == set(high)


def test_stopper_accepts_running_trials_passed_as_results(make_stopper):
    history = _sweep()
    finished = [t for t in history if t.status == "completed"]
    running = [t for t in history if t.status == "running"]
    stopper = make_stopper("min")
    by_result = stopper.should_stop(finished, running)
    by_id = stopper.should_stop(history, [t.trial_id for t in running])
    assert set(by_result) == set(by_id)


def test_stopper_rejects_a_running_id_missing_from_the_history(make_stopper):
    with pytest.raises(UserInputError):
        make_stopper("min").should_stop(_sweep(), ["nobody"])


def test_stopper_rejects_an_unknown_mode(make_stopper):
    with pytest.raises(UserInputError):
        make_stopper("minimum")


def test_stopper_is_an_early_stopper(make_stopper):
    assert isinstance(make_stopper("max"), EarlyStopper)
