"""Behaviour of each searcher beyond the shared contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from assay.errors import UserInputError
from assay.policies import (
    BoTorchSearcher,
    CMAESSearcher,
    GridSearcher,
    OptunaSearcher,
    RandomSearcher,
    SobolSearcher,
    TPESearcher,
    TrialResult,
    choice,
    integer,
    uniform,
)
from assay.policies.searchers._gp import parse_constraints, select_training_set, warp_outcomes

FAST = {"raw_samples": 64, "num_restarts": 2, "mc_samples": 32, "fit_maxiter": 40,
        "optimize_maxiter": 40}


def _done(i: int, config: dict, value: float, **metrics: float) -> TrialResult:
    return TrialResult(f"t{i}", config, "completed", [(1, value)], value, metrics=metrics)


def _run(searcher, f, n_trials: int, batch: int = 1) -> list[TrialResult]:
    history: list[TrialResult] = []
    while len(history) < n_trials:
        for s in searcher.suggest(history, n=batch):
            history.append(_done(len(history), dict(s.config), f(s.config)))
    return history


def test_grid_searcher_walks_the_grid_then_runs_dry():
    space = {"a": choice(["x", "y"]), "b": integer(1, 3)}
    searcher = GridSearcher(space)
    history: list[TrialResult] = []
    sizes = []
    for _ in range(3):
        out = searcher.suggest(history, n=4)
        sizes.append(len(out))
        history += [_done(len(history) + i, dict(s.config), 0.0) for i, s in enumerate(out)]
    assert sizes == [4, 2, 0]
    assert len({(t.config["a"], t.config["b"]) for t in history}) == 6


def test_grid_searcher_walks_huge_grids_lazily():
    space = {f"x{i}": uniform(0, 1) for i in range(12)}  # 5**12 points
    out = GridSearcher(space).suggest([], n=2)
    assert out[0].explanation["grid_size"] == 5**12 and out[1].explanation["grid_index"] == 1


def test_grid_searcher_shuffles_with_its_seed():
    space = {"a": uniform(0, 1), "b": uniform(0, 1)}
    a = [s.config for s in GridSearcher(space, shuffle=True, seed=1).suggest([], n=5)]
    b = [s.config for s in GridSearcher(space, shuffle=True, seed=2).suggest([], n=5)]
    plain = [s.config for s in GridSearcher(space).suggest([], n=5)]
    assert a != b and plain[0] == {"a": 0.0, "b": 0.0}


def test_random_searcher_draws_anew_as_the_history_grows(mixed_space, make_history):
    s = RandomSearcher(mixed_space, seed=0)
    assert s.suggest(make_history(2), n=1)[0].config != s.suggest(make_history(3), n=1)[0].config


def test_sobol_searcher_fills_the_space_evenly():
    out = SobolSearcher({"x": uniform(0.0, 1.0)}, seed=0).suggest([], n=8)
    bins = sorted(int(s.config["x"] * 8) for s in out)
    assert bins == list(range(8))


def test_tpe_searcher_concentrates_near_the_optimum():
    f = lambda c: (c["x"] - 0.7) ** 2
    history = _run(TPESearcher({"x": uniform(0.0, 1.0)}, n_startup_trials=8, seed=0), f, 30)
    late = [t.config["x"] for t in history[-10:]]
    assert np.median(np.abs(np.array(late) - 0.7)) < 0.1


def test_tpe_searcher_handles_several_objectives():
    s = TPESearcher({"x": uniform(0, 1)}, objectives={"a": "min", "b": "max"},
                    n_startup_trials=2, seed=0)
    history = [_done(i, {"x": x}, 0.0, a=x, b=x * x) for i, x in enumerate([0.1, 0.5, 0.9])]
    assert len(s.suggest(history, n=2)) == 2


def test_optuna_searcher_wraps_any_sampler():
    import optuna

    s = OptunaSearcher({"x": uniform(0, 1)},
                       lambda seed: optuna.samplers.RandomSampler(seed=seed), method="rs")
    out = s.suggest([], n=2)
    assert out[0].explanation["method"] == "rs"
    assert out[0].explanation["sampler"] == "RandomSampler"


def test_cmaes_searcher_says_how_to_install_cmaes(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "cmaes", None)  # as if not installed
    with pytest.raises(UserInputError) as err:
        CMAESSearcher({"x": uniform(0, 1)})
    assert "pip install cmaes" in err.value.hint


def test_cmaes_searcher_carries_its_evolution_state_across_calls():
    space = {"x": uniform(-3, 3), "y": uniform(-3, 3)}
    f = lambda c: (c["x"] - 1) ** 2 + (c["y"] + 1) ** 2
    s = CMAESSearcher(space, seed=0, popsize=6)
    history = _run(s, f, 60)
    values = [t.value for t in history]
    assert np.mean(values[-12:]) < 0.2 * np.mean(values[:12])
    state = json.loads(json.dumps(s.state_dict()))
    generations = [a.get("cma:generation", -1) for a in state["system_attrs"].values()]
    assert max(generations) >= 5  # the evolution advanced across calls


@pytest.mark.parametrize("design", ["random", "sobol"])
def test_botorch_searcher_starts_with_an_initial_design(mixed_space, design):
    s = BoTorchSearcher(mixed_space, n_initial=5, seed=0, initial_design=design, **FAST)
    out = s.suggest([], n=3)
    assert {x.explanation["method"] for x in out} == {f"{design} initial design"}
    assert len({mixed_space.key(x.config) for x in out}) == 3


def test_botorch_searcher_explains_each_candidate(mixed_space, make_history):
    s = BoTorchSearcher(mixed_space, n_initial=5, seed=0, **FAST)
    out = s.suggest(make_history(12, pending=2), n=3)
    assert len(out) == 3
    for sug in out:
        e = sug.explanation
        assert e["method"] == "botorch qLogNEI"
        assert math.isfinite(e["acquisition_value"]) and e["predicted_std"] >= 0
        assert math.isfinite(e["predicted_mean"])
        assert e["incumbent"]["trial_id"].startswith("t") and e["n_pending"] == 2
    best = min(make_history(12), key=lambda t: t.value)
    assert out[0].explanation["incumbent"]["value"] == pytest.approx(best.value)


def test_botorch_searcher_batch_avoids_pending_points():
    space = {"x": uniform(0.0, 1.0)}
    history = [_done(i, {"x": x}, (x - 0.5) ** 2) for i, x in enumerate([0.0, 0.2, 0.4, 0.8, 1.0, 0.6])]
    pending = [TrialResult("p", {"x": 0.5}, "running", [(1, 0.1)])]
    out = BoTorchSearcher(space, n_initial=3, seed=0, **FAST).suggest(history + pending, n=3)
    xs = sorted(s.config["x"] for s in out)
    assert len(set(xs)) == 3
    assert all(abs(x - 0.5) > 1e-3 for x in xs)


def test_botorch_searcher_finds_the_minimum_of_a_smooth_function():
    f = lambda c: (c["x"] - 0.3) ** 2 + (c["y"] - 0.8) ** 2
    space = {"x": uniform(0.0, 1.0), "y": uniform(0.0, 1.0)}
    history = _run(BoTorchSearcher(space, n_initial=5, seed=0, **FAST), f, 16)
    assert min(t.value for t in history) < 2e-3


def test_botorch_searcher_learns_which_choice_is_better():
    space = {"act": choice(["a", "b", "c"]), "x": uniform(0.0, 1.0)}
    f = lambda c: {"a": 1.0, "b": 0.0, "c": 2.0}[c["act"]] + 0.1 * c["x"]
    history = _run(BoTorchSearcher(space, n_initial=6, seed=1, **FAST), f, 16)
    chosen = [t.config["act"] for t in history[6:]]
    assert chosen.count("b") > max(chosen.count("a"), chosen.count("c")), chosen


def test_botorch_searcher_imputes_failed_trials_at_the_worst_outcome():
    space = {"x": uniform(0.0, 1.0)}
    history = [_done(i, {"x": x}, x) for i, x in enumerate([0.1, 0.3, 0.5, 0.7])]
    history += [TrialResult(f"f{i}", {"x": x}, "failed", [(1, math.nan)])
                for i, x in enumerate([0.02, 0.05, 0.08])]
    s = BoTorchSearcher(space, n_initial=3, seed=0, mode="min", **FAST)
    out = s.suggest(history, n=1)
    assert out[0].explanation["n_failed_imputed"] == 3
    assert out[0].config["x"] > 0.1  # the failed region near 0 is avoided
    ignoring = BoTorchSearcher(space, n_initial=3, seed=0, failed="ignore", **FAST)
    assert ignoring.suggest(history, n=1)[0].explanation["n_failed_imputed"] == 0


def test_botorch_searcher_warm_starts_from_earlier_trials():
    space = {"x": uniform(0.0, 1.0)}
    earlier = [_done(i, {"x": x}, (x - 0.4) ** 2) for i, x in enumerate(np.linspace(0, 1, 8))]
    s = BoTorchSearcher(space, n_initial=5, seed=0, warm_start=earlier, **FAST)
    out = s.suggest([], n=1)
    assert out[0].explanation["method"] == "botorch LogEI"
    assert out[0].explanation["n_observations"] == 8


def test_botorch_searcher_reuses_hyperparameters_and_persists_them(mixed_space, make_history):
    s = BoTorchSearcher(mixed_space, n_initial=5, seed=0, **FAST)
    first = s.suggest(make_history(10), n=1)[0].explanation
    second = s.suggest(make_history(11), n=1)[0].explanation
    assert not first["warm_start"] and second["warm_start"]
    state = json.loads(json.dumps(s.state_dict()))
    fresh = BoTorchSearcher(mixed_space, n_initial=5, seed=0, **FAST)
    fresh.load_state_dict(state)
    assert fresh.suggest(make_history(12), n=1)[0].explanation["warm_start"]


def test_botorch_searcher_falls_back_to_its_design_when_the_model_fails(mixed_space, make_history,
                                                                   monkeypatch):
    from assay.policies.searchers import _gp
    from botorch.exceptions.errors import ModelFittingError

    def broken(*args, **kwargs):
        raise ModelFittingError("all attempts failed")

    monkeypatch.setattr(_gp, "fit_model", broken)
    out = BoTorchSearcher(mixed_space, n_initial=5, seed=0, **FAST).suggest(make_history(8), n=2)
    assert len(out) == 2
    assert out[0].explanation["method"] == "random fallback (model failed)"
    assert "ModelFittingError" in out[0].explanation["error"]


def test_botorch_searcher_fits_a_bounded_subset_of_large_histories(mixed_space, make_history):
    s = BoTorchSearcher(mixed_space, n_initial=5, seed=0, max_observations=40, **FAST)
    e = s.suggest(make_history(150), n=1)[0].explanation
    assert e["n_observations"] == 150 and e["n_observations_used"] == 40


def test_training_subset_keeps_the_best_and_spreads_the_rest():
    rng = np.random.default_rng(0)
    X = rng.random((300, 2))
    score = -np.abs(X[:, 0] - 0.5)
    idx = select_training_set(X, score, 40, rng)
    assert len(idx) == 40 and len(set(idx)) == 40
    assert set(np.argsort(-score)[:10]) <= set(idx)
    spread = X[idx]
    assert spread[:, 1].min() < 0.1 and spread[:, 1].max() > 0.9


def test_botorch_searcher_multi_objective_front_and_hypervolume():
    space = {"x": uniform(0.0, 1.0)}
    xs = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    history = [_done(i, {"x": x}, 0.0, a=x, b=(1 - x) ** 2 + 0.1 * (i == 2)) for i, x in enumerate(xs)]
    history.append(_done(9, {"x": 0.5}, 0.0, a=0.9, b=0.9))  # dominated
    s = BoTorchSearcher(space, objectives={"a": "min", "b": "min"}, ref_point=[1.5, 1.5],
                        n_initial=4, seed=0, **FAST)
    front = {t.trial_id for t in s.pareto_front(history)}
    assert "t9" not in front and {"t0", "t5"} <= front
    assert s.hypervolume(history) > 0
    out = s.suggest(history, n=2)
    e = out[0].explanation
    assert e["method"] == "botorch qLogNEHVI"
    assert set(e["predicted_mean"]) == {"a", "b"}
    assert e["incumbent"]["pareto_size"] == len(front)


def test_botorch_searcher_respects_outcome_constraints():
    space = {"x": uniform(0.0, 1.0)}
    # The objective improves with x, but memory grows with it and must stay <= 0.5.
    history = [_done(i, {"x": x}, 0.0, score=x, mem=x) for i, x in enumerate(np.linspace(0, 1, 9))]
    s = BoTorchSearcher(space, mode="max", metric="score", constraints=["mem <= 0.5"],
                        n_initial=4, seed=0, **FAST)
    e = s.suggest(history, n=1)[0].explanation
    assert e["incumbent"]["value"] == pytest.approx(0.5)
    assert 0.0 <= e["probability_feasible"] <= 1.0 and "mem <= 0.5" in e["constraints"]
    xs = [t.config["x"] for t in _run_constrained(s, 6, history)]
    assert np.median(xs) < 0.65


def _run_constrained(searcher, n, history):
    history = list(history)
    out = []
    for _ in range(n):
        config = dict(searcher.suggest(history, n=1)[0].config)
        out.append(_done(len(history), config, 0.0, score=config["x"], mem=config["x"]))
        history.append(out[-1])
    return out


@pytest.mark.parametrize("bad", [["mem < 3"], ["mem <= x"], "mem <= 3", {"mem": ("==", 3)},
                                 {"mem": 3}])
def test_constraint_parsing_rejects_bad_forms(bad):
    with pytest.raises(UserInputError):
        parse_constraints(bad)


def test_constraint_parsing_accepts_both_forms():
    a = parse_constraints(["mem <= 8", "acc >= 0.9"])
    b = parse_constraints({"mem": ("<=", 8), "acc": {">=": 0.9}})
    assert a == b and str(a[0]) == "mem <= 8"


@pytest.mark.parametrize("bad", [{"n_initial": 0}, {"max_observations": 2}, {"failed": "drop"},
                                 {"kernel": "rbf"}, {"objectives": {}}, {"initial_design": "lhs"},
                                 {"objectives": {"a": "min", "b": "min"}, "ref_point": [1.0]}])
def test_botorch_searcher_rejects_bad_settings(bad):
    with pytest.raises(UserInputError):
        BoTorchSearcher({"x": uniform(0, 1)}, **bad)


@pytest.mark.parametrize("ref", [[float("nan"), 1.0], [1.0, float("inf")], {"a": -math.inf, "b": 1},
                                 ["x", 1.0]])
def test_botorch_searcher_rejects_a_non_finite_ref_point(ref):
    # NaN crashed suggest() with a NaN-gradient error; inf made every hypervolume 0 or inf.
    with pytest.raises(UserInputError, match="ref_point must be"):
        BoTorchSearcher({"x": uniform(0, 1)}, objectives={"a": "max", "b": "max"}, ref_point=ref)


def test_seen_configs_are_memoised_per_trial_but_follow_a_changed_config():
    space = {"a": choice([1, 2, 3])}
    s = RandomSearcher(space, seed=0)
    first = [TrialResult("t0", {"a": 1}, "completed", final=1.0),
             TrialResult("t1", {"a": 2}, "completed", final=1.0)]
    assert all(c.config["a"] == 3 for c in s.suggest(first, n=1))
    # The same trial ids now hold other configs: the memo must not answer with the old keys.
    again = [TrialResult("t0", {"a": 3}, "completed", final=1.0),
             TrialResult("t1", {"a": 2}, "completed", final=1.0)]
    assert [c.config["a"] for c in s.suggest(again, n=1)] == [1]


def test_warp_outcomes_is_monotone_and_invertible():
    rng = np.random.default_rng(0)
    y = -np.exp(rng.normal(0.0, 1.5, 40))  # a long tail of poor values (to maximise)
    Y = np.column_stack([y, rng.normal(size=40)])  # a constraint column rides along
    W, unwarp = warp_outcomes(Y, k=1)
    order = np.argsort(y)
    assert np.all(np.diff(W[order, 0]) > 0)  # monotone: the best observation stays best
    np.testing.assert_allclose(unwarp(W[:, 0]), y, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(W[:, 1], Y[:, 1])  # constraints stay in raw units
    # The tail is pulled in: the warped column is far less skewed than the raw one.
    def skew(v: np.ndarray) -> float:
        return float(np.mean(((v - v.mean()) / v.std()) ** 3))
    assert abs(skew(W[:, 0])) < abs(skew(y)) / 3
    # Several objectives, or too few distinct values: left alone.
    for Z, k in ((np.column_stack([y, y]), 2), (np.array([[1.0], [1.0], [2.0]]), 1)):
        V, f = warp_outcomes(Z, k)
        np.testing.assert_array_equal(V, Z)
        np.testing.assert_array_equal(f(Z[:, 0]), Z[:, 0])


def test_single_suggestions_use_analytic_log_ei_and_explain_in_user_units():
    space = {"x": uniform(0.0, 1.0), "y": uniform(0.0, 1.0)}
    def f(c: dict) -> float:  # minimum 0.1 at (0.3, 0.7), a steep tail elsewhere
        return 0.1 + 50.0 * ((c["x"] - 0.3) ** 2 + (c["y"] - 0.7) ** 2) ** 1.5
    s = BoTorchSearcher(space, mode="min", n_initial=6, seed=0, **FAST)
    history = _run(s, f, 24)
    last = s.suggest(history, n=1)[0]
    e = last.explanation
    assert e["method"] == "botorch LogEI" and e["predicted_std"] >= 0
    best = min(t.value for t in history)
    assert best < 0.12  # converges on the basin's floor
    # The prediction is in the objective's own units, near the observed best.
    assert abs(e["predicted_mean"] - f(dict(last.config))) < 0.5
    # With pending trials (or a batch) the Monte-Carlo qLogNEI takes over.
    pending = [TrialResult("p0", {"x": 0.5, "y": 0.5}, "running")]
    assert s.suggest(history + pending, n=1)[0].explanation["method"] == "botorch qLogNEI"
    assert {x.explanation["method"] for x in s.suggest(history, n=2)} == {"botorch qLogNEI"}


def test_warp_outcomes_maps_past_the_observed_values_to_the_observed_extremes():
    # A tail the power transform bends hard: past the observed values its inverse explodes
    # (or has none, beyond an asymptote), and any continuation is a guess the data do not
    # support. Values there map to the best or worst observation, and beyond() says so.
    for y in (np.array([-100.0, -30.0, -10.0, -3.0, -1.0, -0.5, -0.2, -0.1, 0.0]),
              -np.exp(30 * np.linspace(0, 1, 12))):
        W, unwarp = warp_outcomes(y[:, None], k=1)
        t_lo, t_hi = W[:, 0].min(), W[:, 0].max()
        v = np.array([t_lo - 1e6, t_lo - 1.0, t_lo, t_hi, t_hi + 1.0, t_hi + 1e6])
        out = unwarp(v)
        assert np.all(np.isfinite(out)) and np.all(np.diff(out) >= 0)
        tol = 1e-9 * np.ptp(y)  # round-off of the z-scoring at the scale of the values
        assert out[2] == pytest.approx(y.min(), abs=tol) and out[3] == pytest.approx(y.max(), abs=tol)
        assert list(out[:2]) == [y.min()] * 2 and list(out[4:]) == [y.max()] * 2
        assert list(unwarp.beyond(v)) == [True, True, False, False, True, True]


@pytest.mark.parametrize("big", [1e6, 1e100, 1e300, 1.7e308])
def test_warp_outcomes_keeps_ordinary_values_apart_next_to_a_huge_one(big):
    # A diverged but finite loss (to maximise: -big) next to ordinary ones: z-scoring alone
    # overflows (1e300 squared) or rounds every ordinary value to one z-score. The
    # compressed warp keeps them distinct, in order, modest in size and invertible.
    y = np.array([-0.3, -0.25, -0.2, -0.6, -big, -0.1, -0.45, -0.15])
    W, unwarp = warp_outcomes(y[:, None], k=1)
    w = W[:, 0]
    assert np.all(np.isfinite(w)) and np.abs(w).max() < 100
    order = np.argsort(y)
    assert np.all(np.diff(w[order]) > 0)  # monotone: distinct values stay distinct
    ordinary = y > -1
    np.testing.assert_allclose(unwarp(w[ordinary]), y[ordinary], rtol=1e-6)
    assert unwarp(w[~ordinary])[0] == pytest.approx(-big, rel=1e-6)


def test_huge_finite_outcome_is_modelled_not_raised():
    # A loss of 1e300 once (an exploding run): BoTorch raised OptimizationGradientError
    # (one suggestion) or _LinAlgError (a batch) on the overflowing standardisation.
    space = {"x": uniform(0.0, 1.0), "y": uniform(0.0, 1.0)}
    history = [_done(i, {"x": 0.1 * i, "y": 0.05 * i}, 1e300 if i == 3 else float(i))
               for i in range(8)]
    for n in (1, 2):
        out = BoTorchSearcher(space, mode="min", seed=0, **FAST).suggest(history, n=n)
        assert len(out) == n
        for g in out:
            e = g.explanation
            assert e["method"].startswith("botorch"), e
            assert 0.0 <= e["predicted_mean"] <= 1e300 and math.isfinite(e["predicted_std"])


@pytest.mark.parametrize("where", ["fit", "acquisition"])
@pytest.mark.parametrize("error", ["gradient", "linalg"])
def test_numerical_errors_in_the_model_fall_back_to_the_initial_design(monkeypatch, where,
                                                                       error):
    import botorch.fit
    import botorch.optim
    import torch
    from botorch.exceptions.errors import OptimizationGradientError

    def boom(*args, **kwargs):
        if error == "gradient":
            raise OptimizationGradientError("gradf is NaN", current_x=np.zeros(2))
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(botorch.fit if where == "fit" else botorch.optim,
                        "fit_gpytorch_mll" if where == "fit" else "optimize_acqf", boom)
    space = {"x": uniform(0.0, 1.0), "y": uniform(0.0, 1.0)}
    history = [_done(i, {"x": 0.1 * i, "y": 0.05 * i}, float(i)) for i in range(8)]
    out = BoTorchSearcher(space, mode="min", seed=0, **FAST).suggest(history, n=2)
    assert len(out) == 2 and len({json.dumps(dict(g.config), sort_keys=True) for g in out}) == 2
    for g in out:
        assert g.explanation["method"] == "random fallback (model failed)"
        assert g.explanation["error"].startswith(
            "OptimizationGradientError" if error == "gradient" else "_LinAlgError")


def test_explanations_predict_in_user_units_within_the_observed_values_after_an_outlier():
    # One diverged-but-finite loss (1e3) among losses near 0.1-0.6: the warped model's
    # mean sat past the best observation, and the unwarp continued it along a tangent
    # to "predicted_mean -6.8 +- 12.8" for a loss that is 0.19 and cannot be negative.
    space = {"x": uniform(0.0, 1.0), "y": uniform(0.0, 1.0)}
    rng = np.random.default_rng(0)
    history = []
    for i, (x, y) in enumerate(rng.random((10, 2))):
        loss = 1e3 if i == 4 else 0.05 + (x - 0.3) ** 2 + (y - 0.7) ** 2
        history.append(_done(i, {"x": x, "y": y}, loss))
    lo, hi = min(t.value for t in history), max(t.value for t in history)
    for n in (1, 2):
        for g in BoTorchSearcher(space, mode="min", seed=0).suggest(history, n=n):
            e = g.explanation
            low, high = e["predicted_interval"]
            assert lo <= low <= e["predicted_mean"] <= high <= hi, e
            assert e["predicted_std"] == pytest.approx((high - low) / 2)
            # The model puts its median past the best loss seen: reported there, and said so.
            assert e["predicted_mean"] == pytest.approx(lo)
            assert e["predicted_at_observed_bound"][:2] == ["lower", "median"]
