"""The failure predictor and the learned stopper."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from assay.errors import UserInputError
from assay.policies import FailurePredictor, LearnedStopper, TrialResult
from assay.policies.base import Mode
from assay.policies.stoppers.features import (
    FEATURES,
    Context,
    Curve,
    curve_features,
    sweep_examples,
)


def _trial(tid, values, status="running", final=None):
    return TrialResult(tid, {"x": 0}, status, list(enumerate(values, start=1)), final)


def _finished(n=6, steps=10):
    out = []
    for i in range(n):
        end = 0.3 + 0.1 * i
        curve = [end + (2.0 - end) * math.exp(-s / 2.5) for s in range(1, steps + 1)]
        out.append(_trial(f"done{i}", curve, "completed", curve[-1]))
    return out


def test_features_are_scale_free():
    ctx = Context(np.array([1.0, 1.2, 1.5, 2.0]), reference=0.9, top_k=1)
    curve = _trial("a", [2.0, 1.6, 1.4, 1.3])
    f1, _, s1 = curve_features(Curve.of(curve, Mode.MIN), 4, 10, ctx)
    scaled = _trial("a", [v * 1000 + 7 for v in [2.0, 1.6, 1.4, 1.3]])
    ctx2 = Context(ctx.population * 1000 + 7, reference=0.9 * 1000 + 7, top_k=1)
    f2, _, s2 = curve_features(Curve.of(scaled, Mode.MIN), 4, 10, ctx2)
    np.testing.assert_allclose(f1, f2, rtol=1e-6, atol=1e-9)
    assert s2 == pytest.approx(1000 * s1)


def test_features_ignore_one_exploding_trial():
    pop = np.array([1.0, 1.1, 1.2, 1.3, 1e27])
    f, _, spread = curve_features(Curve.of(_trial("a", [2.0, 1.5, 1.25]), Mode.MIN), 3, 10,
                                  Context(pop, 1.0, 1))
    assert spread < 1.0
    assert f[FEATURES.index("z_gap_ref")] > 0.5


def test_sweep_examples_label_against_earlier_finishers(sim_sweeps):
    X, rel, fail = sweep_examples(sim_sweeps[0], Mode.MIN, 10, np.random.default_rng(0))
    assert X.shape[1] == len(FEATURES) and len(X) == len(rel) == len(fail)
    assert set(np.unique(fail[np.isfinite(fail)])) <= {0.0, 1.0}
    assert np.isnan(fail).any()  # the first trials have no reference yet


def test_pretrained_predictor_ships_and_predicts_ordered_intervals():
    fp = FailurePredictor.pretrained()
    assert fp.is_fitted and "pretrained" in fp.source and fp.n_examples > 10_000
    ctx = Context(np.array([0.5, 0.6, 0.8, 1.5]), reference=0.4, top_k=1)
    rows = [curve_features(Curve.of(_trial("a", v), Mode.MIN), len(v), 20, ctx)[0]
            for v in ([2.0, 1.9, 1.9, 1.9], [1.0, 0.6, 0.45, 0.4], [0.9, 0.5, 0.3, 0.2])]
    pred = fp.predict(np.vstack(rows))
    assert np.all(pred.lower <= pred.median) and np.all(pred.median <= pred.upper)
    p = pred.probability_worse
    assert np.all((p >= 0) & (p <= 1))
    assert p[0] > 0.9 > p[2]  # flat and far behind vs already past the reference


def test_pretrained_returns_independent_copies():
    a, b = FailurePredictor.pretrained(), FailurePredictor.pretrained()
    a.add_examples(np.zeros((3, len(FEATURES))), np.zeros(3), np.zeros(3), np.zeros(3))
    assert a.n_examples == b.n_examples + 3


def test_partial_fit_adds_project_sweeps_and_refits(small_predictor, sim_sweeps):
    import copy

    fp = copy.deepcopy(small_predictor)
    before = fp.n_examples
    X = np.random.default_rng(0).normal(size=(4, len(FEATURES)))
    old = fp.predict(X).median
    fp.partial_fit(sim_sweeps[:3], mode="min", max_step=10)
    assert fp.n_examples > before and "project examples" in fp.source
    assert not np.allclose(fp.predict(X).median, old)
    assert fp.partial_fit([], mode="min") is fp  # nothing new: nothing to do


def test_predictor_is_calibrated_on_unseen_simulated_sweeps(small_predictor):
    from assay.simulations import CurveSimulator, simulate_sweep

    rng = np.random.default_rng(1)
    X, fail = [], []
    for seed in range(6):
        sweep = [r.to_result() for r in simulate_sweep(CurveSimulator(900 + seed, max_steps=10),
                                                       20, seed=seed)]
        x, _, f = sweep_examples(sweep, Mode.MIN, 10, rng)
        X.append(x)
        fail.append(f)
    X, fail = np.vstack(X), np.concatenate(fail)
    keep = np.isfinite(fail)
    p = small_predictor.predict(X[keep]).probability_worse
    brier = np.mean((p - fail[keep]) ** 2)
    base = np.mean((fail[keep].mean() - fail[keep]) ** 2)
    assert brier < 0.75 * base  # far better than the base rate
    confident = p > 0.9
    assert fail[keep][confident].mean() > 0.85  # confident calls are right


def test_predictor_save_load_round_trip(small_predictor, tmp_path):
    path = tmp_path / "fp.bin"
    small_predictor.save(path)
    loaded = FailurePredictor.load(path)
    X = np.random.default_rng(0).normal(size=(5, len(FEATURES)))
    np.testing.assert_allclose(loaded.predict(X).median, small_predictor.predict(X).median)
    with pytest.raises(UserInputError):
        FailurePredictor.from_bytes(__import__("pickle").dumps({"not": "a predictor"}))


def test_predictor_refuses_to_fit_on_too_little_data():
    with pytest.raises(UserInputError, match="too few examples"):
        FailurePredictor().fit(_finished(3), mode="min")
    with pytest.raises(UserInputError):
        FailurePredictor().predict(np.zeros((1, len(FEATURES))))
    with pytest.raises(UserInputError):
        FailurePredictor().fit("sweep")  # type: ignore[arg-type]


def test_learned_stopper_starts_warm_from_the_pretrained_model():
    stopper = LearnedStopper(max_step=10)
    assert "pretrained" in stopper.predictor.source


def test_learned_stopper_stops_a_hopeless_run_with_evidence(small_predictor):
    history = _finished() + [_trial("hopeless", [2.1, 2.1, 2.1, 2.1]),
                             _trial("leader", [1.0, 0.5, 0.3, 0.2])]
    decided = LearnedStopper(small_predictor, threshold=0.8, max_step=10,
                             top_k=2).should_stop(history)
    assert "hopeless" in decided and "leader" not in decided
    ev = decided["hopeless"].evidence
    assert ev["probability_worse"] >= 0.8 and ev["top_k"] == 2
    lo, hi = ev["interval"]
    # top-2 reference: the leader's best so far (running) and the best finished trial.
    assert lo <= hi and ev["reference"] == pytest.approx(_finished()[0].value)
    assert set(ev["features"]) == set(FEATURES)
    json.dumps(decided["hopeless"].to_dict(), allow_nan=False)


def test_learned_stopper_needs_minimum_evidence(small_predictor):
    history = _finished() + [_trial("young", [2.1]), _trial("early", [2.1, 2.1, 2.1])]
    stopper = LearnedStopper(small_predictor, threshold=0.5, max_step=10, min_points=2,
                             min_fraction=0.5)
    assert stopper.should_stop(history) == {}
    assert LearnedStopper(small_predictor, threshold=0.5, max_step=10, min_points=5,
                          min_fraction=0.0).should_stop(history) == {}


def test_learned_stopper_waits_for_enough_trials_to_compare(small_predictor):
    history = [_trial("a", [2.1, 2.1, 2.1, 2.1]), _trial("b", [1.0, 0.9, 0.8, 0.7])]
    stopper = LearnedStopper(small_predictor, threshold=0.5, max_step=10, top_k=2)
    assert stopper.should_stop(history) == {}


def test_learned_stopper_can_use_running_trials_as_the_reference(small_predictor):
    running = [_trial(f"r{i}", [1.0, 0.6, 0.4, 0.3]) for i in range(3)]
    history = running + [_trial("hopeless", [2.1, 2.1, 2.1, 2.1])]
    on = LearnedStopper(small_predictor, threshold=0.8, max_step=10, count_running=True)
    off = LearnedStopper(small_predictor, threshold=0.8, max_step=10, count_running=False)
    assert "hopeless" in on.should_stop(history)
    assert off.should_stop(history) == {}


@pytest.mark.parametrize("bad", [{"threshold": 0}, {"threshold": 1.5}, {"min_fraction": 1.0},
                                 {"top_k": 0}, {"predictor": "model"}])
def test_learned_stopper_rejects_bad_settings(bad, small_predictor):
    with pytest.raises(UserInputError):
        LearnedStopper(**({"predictor": small_predictor} | bad))


def test_learned_stopper_never_stops_a_leader_at_its_step(small_predictor):
    history = _finished() + [_trial("leader", [1.5, 1.2, 1.0, 0.9])] + [
        _trial(f"r{i}", [2.0, 1.9, 1.8, 1.7]) for i in range(3)
    ]
    eager = {"threshold": 0.01, "max_step": 10, "min_fraction": 0.0, "confirm": 1,
             "leader_threshold": None}
    assert "leader" in LearnedStopper(small_predictor, protect_top=0.0, **eager).should_stop(
        history
    )
    guarded = LearnedStopper(small_predictor, protect_top=0.5, **eager).should_stop(history)
    assert "leader" not in guarded and {"r0", "r1", "r2"} <= set(guarded)


def test_learned_stopper_holds_leaders_to_the_leader_threshold(small_predictor):
    history = _finished() + [_trial("leader", [1.5, 1.2, 1.0, 0.9])] + [
        _trial(f"r{i}", [2.0, 1.9, 1.8, 1.7]) for i in range(3)
    ]  # the leader is at step 4 of 10: 40% of the budget
    eager = {"threshold": 0.01, "max_step": 10, "min_fraction": 0.0, "confirm": 1}
    unguarded = LearnedStopper(small_predictor, protect_top=0.0, **eager).should_stop(history)
    p = unguarded["leader"].evidence["probability_worse"]
    assert unguarded["leader"].evidence["leader"] is False
    guard = {**eager, "protect_top": 0.5}
    stop = LearnedStopper(small_predictor, leader_threshold=(0.3, p * 0.999), **guard)
    reason = stop.should_stop(history)["leader"]
    assert reason.evidence["leader"] is True
    assert reason.evidence["threshold"] == pytest.approx(p * 0.999)
    assert "leader threshold" in reason.message
    # Too early in the budget, a bar above its probability, or None: the leader runs on.
    for lt in [(0.5, 0.01), None] + ([(0.3, min(1.0, p + 1e-6))] if p < 1 else []):
        out = LearnedStopper(small_predictor, leader_threshold=lt, **guard).should_stop(history)
        assert "leader" not in out and {"r0", "r1", "r2"} <= set(out)
    assert LearnedStopper(max_step=10).leader_threshold == (0.3, 0.995)


@pytest.mark.parametrize("bad", [(0.3,), (1.5, 0.99), (0.3, 0.0), (0.3, 1.2), "high", (True, 0.9),
                                 (0.3, float("nan"))])
def test_learned_stopper_rejects_bad_leader_thresholds(bad, small_predictor):
    with pytest.raises(UserInputError, match="leader_threshold"):
        LearnedStopper(small_predictor, leader_threshold=bad)


def test_learned_stopper_confirms_on_earlier_points(small_predictor):
    history = _finished() + [_trial("short", [2.1, 2.1])]
    eager = {"threshold": 0.01, "max_step": 10, "min_fraction": 0.0, "min_points": 2, "protect_top": 0.0}
    assert "short" in LearnedStopper(small_predictor, confirm=2, **eager).should_stop(history)
    assert LearnedStopper(small_predictor, confirm=3, **eager).should_stop(history) == {}


def test_learned_stopper_defaults_are_budget_schedules():
    from assay.policies.stoppers.learned import DEFAULT_PROTECT_TOP, DEFAULT_THRESHOLD

    stopper = LearnedStopper(max_step=10)
    assert stopper.threshold == DEFAULT_THRESHOLD and stopper.protect_top == DEFAULT_PROTECT_TOP
    # Stricter early, looser once the curve has more to say; flat past the ends.
    assert stopper._threshold(0.0) == stopper._threshold(0.1) > stopper._threshold(0.3)
    assert stopper._threshold(0.2) == pytest.approx(0.85)
    assert stopper._protect(0.0) == stopper._protect(1.0) == DEFAULT_PROTECT_TOP
    # Numbers keep working as before: a constant over the budget.
    old = LearnedStopper(threshold=0.9, protect_top=0.33, max_step=10)
    assert old.threshold == 0.9 and old._threshold(0.05) == old._threshold(0.95) == 0.9
    assert old._protect(0.7) == 0.33


def test_learned_stopper_threshold_schedule_decides_by_budget_fraction(small_predictor):
    history = _finished() + [_trial("hopeless", [2.1, 2.1, 2.1, 2.1])]
    p = float(small_predictor.predict_probability(
        curve_features(Curve.of(history[-1], Mode.MIN), 4, 10,
                       Context(np.array([_finished()[0].curve[3][1]]), 0.3, 1))[0]
    )[0])
    assert p > 0.5
    eager = {"max_step": 10, "min_fraction": 0.0, "protect_top": 0.0, "confirm": 1}
    # At 40% of the budget: impossible threshold there -> kept; reachable one -> stopped.
    keep = LearnedStopper(small_predictor, threshold=[(0.0, 0.01), (0.4, 1.0)], **eager)
    assert keep.should_stop(history) == {}
    stop = LearnedStopper(small_predictor, threshold=[(0.0, 1.0), (0.4, 0.01)], **eager)
    reason = stop.should_stop(history)["hopeless"]
    assert reason.evidence["threshold"] == pytest.approx(0.01)


def test_learned_stopper_leader_guard_schedule(small_predictor):
    history = _finished() + [_trial("leader", [1.5, 1.2, 1.0, 0.9])] + [
        _trial(f"r{i}", [2.0, 1.9, 1.8, 1.7]) for i in range(3)
    ]
    eager = {"threshold": 0.01, "max_step": 10, "min_fraction": 0.0, "confirm": 1}
    wide_now = LearnedStopper(small_predictor, protect_top=[(0.0, 0.5), (0.5, 0.5), (0.6, 0.0)],
                              **eager)
    assert "leader" not in wide_now.should_stop(history)
    off_now = LearnedStopper(small_predictor, protect_top=[(0.0, 0.5), (0.3, 0.0)], **eager)
    assert "leader" in off_now.should_stop(history)


@pytest.mark.parametrize("bad", [
    {"threshold": []}, {"threshold": "high"}, {"threshold": [(0.1, 0.9), (0.1, 0.8)]},
    {"threshold": [(0.5, 0.9), (0.2, 0.8)]}, {"threshold": [(0.1, 1.5)]},
    {"threshold": [(-0.1, 0.9)]}, {"threshold": [(0.1, 0.0)]}, {"threshold": [(0.1,)]},
    {"threshold": [0.9]}, {"threshold": float("nan")}, {"threshold": True},
    {"protect_top": [(0.0, 1.0)]}, {"protect_top": [(0.0, -0.1)]}, {"protect_top": 1.0},
    {"protect_top": [(2.0, 0.3)]}, {"protect_top": [("a", 0.3)]},
])
def test_learned_stopper_rejects_bad_schedules(bad, small_predictor):
    with pytest.raises(UserInputError, match="threshold|protect_top"):
        LearnedStopper(**({"predictor": small_predictor} | bad))
