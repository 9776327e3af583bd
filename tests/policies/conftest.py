"""Fixtures shared by the policies tests: spaces, histories, a small fitted predictor."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from assay.policies import (
    FailurePredictor,
    SearchSpace,
    TrialResult,
    choice,
    integer,
    loguniform,
    uniform,
)


@pytest.fixture
def mixed_space() -> SearchSpace:
    """Continuous, log, integer, choice and fixed parameters."""
    return SearchSpace({
        "lr": loguniform(1e-4, 1e-1),
        "depth": integer(1, 6),
        "dropout": uniform(0.0, 0.5),
        "act": choice(["relu", "gelu", "tanh"]),
        "epochs": 10,
    })


@pytest.fixture
def conditional_space() -> SearchSpace:
    return SearchSpace({
        "optimizer": choice(["sgd", "adam"]),
        "momentum": uniform(0.0, 0.99, when={"optimizer": "sgd"}),
        "lr": loguniform(1e-4, 1e-1),
    })


def toy_objective(config: dict) -> float:
    """A smooth function of the mixed space with its minimum near lr=1e-2, depth 3."""
    return (
        (math.log10(config["lr"]) + 2.0) ** 2
        + 0.1 * (config["depth"] - 3) ** 2
        + (config["dropout"] - 0.2) ** 2
        + {"relu": 0.0, "gelu": 0.05, "tanh": 0.3}[config["act"]]
    )


@pytest.fixture
def make_history(mixed_space: SearchSpace) -> Callable[..., list[TrialResult]]:
    """``make_history(n, seed=0, pending=0)``: completed trials of the toy objective."""

    def make(n: int, seed: int = 0, pending: int = 0) -> list[TrialResult]:
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n + pending):
            config = mixed_space.sample(rng)
            if i < n:
                y = toy_objective(config)
                out.append(TrialResult(f"t{i}", config, "completed", [(1, y + 1.0), (2, y)], y))
            else:
                out.append(TrialResult(f"t{i}", config, "running", [(1, 2.0)]))
        return out

    return make


def curve_trial(trial_id: str, values: list[float], status: str = "running",
                final: float | None = None) -> TrialResult:
    return TrialResult(trial_id, {"x": 0.0}, status, list(enumerate(values, start=1)), final)


@pytest.fixture
def curve() -> Callable[..., TrialResult]:
    """``curve(id, values, status="running")``: a trial with values at steps 1, 2, ..."""
    return curve_trial


@pytest.fixture(scope="session")
def sim_sweeps() -> list[list[TrialResult]]:
    """Twelve small simulated sweeps (loss, 10 steps) for fitting predictors quickly."""
    from assay.simulations import CurveSimulator, simulate_sweep

    sweeps = []
    for seed in range(12):
        sim = CurveSimulator(500 + seed, max_steps=10)
        sweeps.append([r.to_result() for r in simulate_sweep(sim, 16, seed=seed)])
    return sweeps


@pytest.fixture(scope="session")
def small_predictor(sim_sweeps: list[list[TrialResult]]) -> FailurePredictor:
    """A predictor fitted from scratch on simulated sweeps (fast: few boosting rounds)."""
    return FailurePredictor(max_iter=25).fit(sim_sweeps, mode="min", max_step=10)
