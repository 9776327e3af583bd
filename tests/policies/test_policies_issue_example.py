"""The issue's "what a user gets" snippet, end to end on simulated trials."""

from __future__ import annotations

from assay.policies import (
    ASHAStopper,
    BoTorchSearcher,
    FailurePredictor,
    GridSearcher,
    LearnedStopper,
    MedianStopper,
    RandomSearcher,
    SobolSearcher,
    TPESearcher,
    TrialResult,
    choice,
    integer,
    loguniform,
)
from assay.simulations import CurveSimulator, simulate_sweep


def test_the_issue_snippet_runs_and_explains_itself():
    space = {"lr": loguniform(1e-5, 1e-1), "depth": integer(1, 8), "act": choice(["relu", "gelu"])}
    history = [
        TrialResult(f"h{i}", {"lr": 10 ** -(1 + i % 4), "depth": 1 + i % 8,
                              "act": "relu" if i % 2 else "gelu"},
                    "completed", [(1, 0.5), (2, 0.6 + 0.01 * i)], 0.6 + 0.01 * i)
        for i in range(12)
    ]
    searcher = BoTorchSearcher(space, mode="max", seed=0, raw_samples=64, num_restarts=2)
    configs = searcher.suggest(history, n=4)
    assert len(configs) == 4 and all("acquisition_value" in c.explanation for c in configs)

    sim = CurveSimulator(7, max_steps=12)
    past_results = [r.to_result() for r in simulate_sweep(sim, 30, seed=1)]
    stopper = LearnedStopper(FailurePredictor().fit(past_results), threshold=0.9)
    now = [r.to_result(upto=u) for r, u in zip(simulate_sweep(sim, 12, seed=2), [12] * 8 + [4] * 4)]
    running = [t.trial_id for t in now if t.status == "running"]
    decided = stopper.should_stop(now, running)
    assert set(decided) <= set(running)
    for reason in decided.values():
        assert {"predicted_final", "interval", "probability_worse", "features"} <= set(
            reason.evidence
        )


def test_every_named_policy_is_importable_from_the_package():
    for cls in (GridSearcher, RandomSearcher, SobolSearcher, TPESearcher, BoTorchSearcher,
                MedianStopper, ASHAStopper, LearnedStopper, FailurePredictor, TrialResult):
        assert cls.__module__.startswith("assay.policies")
