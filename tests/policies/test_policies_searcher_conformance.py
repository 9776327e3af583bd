"""The contract every searcher honours, run against every searcher (cf. Optuna's
``testing/pytest_storages.py``): one parametrized fixture, one suite."""

from __future__ import annotations

import copy
import json
import math

import pytest
from assay.errors import UserInputError
from assay.policies import (
    BoTorchSearcher,
    CMAESSearcher,
    GridSearcher,
    OptunaSearcher,
    RandomSearcher,
    Searcher,
    SobolSearcher,
    Suggestion,
    TPESearcher,
    TrialResult,
    choice,
    integer,
)


def _optuna_gp(space, **kw):
    import optuna

    return OptunaSearcher(
        space, lambda seed: optuna.samplers.GPSampler(seed=seed, n_startup_trials=4), **kw
    )


FACTORIES = {
    "grid": lambda space, **kw: GridSearcher(space, points_per_dim=3, **kw),
    "random": RandomSearcher,
    "sobol": SobolSearcher,
    "tpe": lambda space, **kw: TPESearcher(space, n_startup_trials=4, **kw),
    "cmaes": lambda space, **kw: CMAESSearcher(space, **kw),
    "optuna-gp": _optuna_gp,
    "botorch": lambda space, **kw: BoTorchSearcher(
        space, n_initial=4, raw_samples=64, num_restarts=2, mc_samples=32, fit_maxiter=30,
        optimize_maxiter=30, **kw
    ),
}


@pytest.fixture(
    params=list(FACTORIES)
)
def make_searcher(request):
    return FACTORIES[request.param]


def _valid(space, suggestions: list[Suggestion]) -> None:
    for s in suggestions:
        assert isinstance(s, Suggestion)
        space.validate(s.config)  # raises if not a valid point
        for name, param in space.items():
            if param.is_fixed:
                assert s.config[name] == param.value
        assert isinstance(s.explanation["method"], str) and s.explanation["method"]
        json.dumps(dict(s.explanation), allow_nan=False)


def test_searcher_suggests_valid_configs_on_an_empty_history(make_searcher, mixed_space):
    searcher = make_searcher(mixed_space, seed=0)
    out = searcher.suggest([], n=3)
    assert len(out) == 3
    _valid(mixed_space, out)


def test_searcher_suggests_valid_configs_after_a_history(make_searcher, mixed_space, make_history):
    searcher = make_searcher(mixed_space, seed=1)
    out = searcher.suggest(make_history(8, pending=2), n=4)
    assert 1 <= len(out) <= 4
    _valid(mixed_space, out)


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "2"])
def test_searcher_rejects_a_non_positive_or_non_int_n(make_searcher, mixed_space, n):
    with pytest.raises(UserInputError):
        make_searcher(mixed_space).suggest([], n=n)


def test_searcher_is_deterministic_for_equal_histories(make_searcher, mixed_space, make_history):
    history = make_history(6)
    a = make_searcher(mixed_space, seed=3).suggest(history, n=2)
    b = make_searcher(mixed_space, seed=3).suggest(history, n=2)
    assert [dict(s.config) for s in a] == [dict(s.config) for s in b]


def test_searcher_state_dict_roundtrip_resumes_identically(make_searcher, mixed_space, make_history):
    first = make_searcher(mixed_space, seed=5)
    history = make_history(6)
    done = first.suggest(history, n=2)
    history += [
        TrialResult(f"new{i}", s.config, "completed", [(1, 1.0)], 1.0 + i)
        for i, s in enumerate(done)
    ]
    state = json.loads(json.dumps(first.state_dict()))
    second = make_searcher(mixed_space, seed=99)
    second.load_state_dict(state)
    a, b = first.suggest(history, n=2), second.suggest(history, n=2)
    assert [dict(s.config) for s in a] == [dict(s.config) for s in b]


def test_searcher_refuses_state_of_another_searcher(make_searcher, mixed_space):
    other = {"class": "SomethingElse", "seed": 0}
    with pytest.raises(UserInputError):
        make_searcher(mixed_space).load_state_dict(other)


def test_searcher_survives_failed_nan_stopped_and_out_of_space_trials(
    make_searcher, mixed_space, make_history
):
    history = make_history(6)
    bad = dict(history[0].config)
    history += [
        TrialResult("failed", history[1].config | {"depth": 2}, "failed", [(1, 3.0)]),
        TrialResult("nan", history[2].config | {"depth": 4}, "completed", [(1, math.nan)],
                    math.nan),
        TrialResult("inf", history[3].config | {"depth": 5}, "completed", [], math.inf),
        TrialResult("stopped", history[4].config | {"depth": 1}, "stopped", [(1, 5.0)]),
        TrialResult("outside", bad | {"lr": 5.0}, "completed", [(1, 0.0)], 0.0),
        TrialResult("missing", {"lr": 0.01}, "completed", [(1, 0.0)], 0.0),
        TrialResult("no-value", history[5].config | {"depth": 6}, "completed"),
    ]
    out = make_searcher(mixed_space, seed=2).suggest(history, n=2)
    assert 1 <= len(out) <= 2
    _valid(mixed_space, out)


def test_searcher_does_not_repeat_tried_or_pending_configs_in_a_small_space(make_searcher):
    space = {"a": choice(["x", "y", "z"]), "b": integer(1, 3)}
    history = [
        TrialResult("p1", {"a": "x", "b": 1}, "running", [(1, 1.0)]),
        TrialResult("p2", {"a": "y", "b": 2}, "pending"),
        TrialResult("c1", {"a": "z", "b": 3}, "completed", [(1, 0.5)], 0.5),
        TrialResult("c2", {"a": "x", "b": 2}, "completed", [(1, 0.7)], 0.7),
    ]
    searcher = make_searcher(space, seed=0)
    out = searcher.suggest(history, n=3)
    keys = [(s.config["a"], s.config["b"]) for s in out]
    tried = {(t.config["a"], t.config["b"]) for t in history}
    assert len(set(keys)) == len(keys), keys
    assert not set(keys) & tried, keys


def test_searcher_does_not_mutate_the_history(make_searcher, mixed_space, make_history):
    history = make_history(6, pending=1)
    before = copy.deepcopy([t.to_dict() for t in history])
    make_searcher(mixed_space, seed=0).suggest(history, n=2)
    assert [t.to_dict() for t in history] == before


@pytest.mark.parametrize("bad", [[{"trial_id": "x"}], "history", 3])
def test_searcher_rejects_a_malformed_history(make_searcher, mixed_space, bad):
    with pytest.raises(UserInputError):
        make_searcher(mixed_space).suggest(bad, n=1)


def test_searcher_rejects_duplicate_trial_ids(make_searcher, mixed_space, make_history):
    history = make_history(3)
    with pytest.raises(UserInputError):
        make_searcher(mixed_space).suggest(history + [history[0]], n=1)


def test_searcher_respects_conditional_parameters(make_searcher, conditional_space):
    searcher = make_searcher(conditional_space, seed=0)
    history = []
    for i in range(6):
        for s in searcher.suggest(history, n=1):
            conditional_space.validate(s.config)
            assert ("momentum" in s.config) == (s.config["optimizer"] == "sgd")
            history.append(TrialResult(f"c{i}", s.config, "completed", [(1, 1.0)], float(i % 3)))


def test_searcher_accepts_the_dict_form_of_a_space(make_searcher):
    spec = {"lr": {"loguniform": [1e-4, 1.0]}, "hidden": {"integer": [16, 256]},
            "act": {"choice": ["relu", "gelu"]}, "epochs": 30}
    out = make_searcher(spec, seed=0).suggest([], n=2)
    assert all(s.config["epochs"] == 30 and 16 <= s.config["hidden"] <= 256 for s in out)
    assert isinstance(make_searcher(spec), Searcher)


def test_searcher_rejects_an_unknown_mode(make_searcher, mixed_space):
    with pytest.raises(UserInputError):
        make_searcher(mixed_space, mode="maximise")
