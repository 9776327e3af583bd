"""The learning-curve simulator: determinism, ground truth, shapes and failure modes."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from assay.errors import UserInputError
from assay.policies import TrialStatus
from assay.simulations import SHAPES, CurveSimulator, simulate_sweep


def test_simulator_is_deterministic_in_seed_and_config():
    a, b = CurveSimulator(3), CurveSimulator(3)
    config = a.space.sample(np.random.default_rng(0))
    assert a.run(config) == b.run(config)
    assert a.run(config).values != a.run(config, replicate=1).values
    assert CurveSimulator(4).best_config != a.best_config


def test_simulator_knows_its_best_config_and_true_finals():
    sim = CurveSimulator(0)
    best = sim.best_value
    rng = np.random.default_rng(1)
    others = [sim.true_final(sim.space.sample(rng)) for _ in range(500)]
    assert all(v >= best - 1e-12 for v in others if not math.isnan(v))
    run = sim.run(sim.best_config)
    assert run.status is TrialStatus.COMPLETED
    assert run.values[-1] == pytest.approx(best, abs=0.1)  # noise around the truth


def test_accuracy_metric_is_maximised_and_bounded():
    sim = CurveSimulator(0, metric="accuracy")
    assert sim.mode == "max"
    rng = np.random.default_rng(2)
    finals = [sim.true_final(sim.space.sample(rng)) for _ in range(200)]
    finite = [v for v in finals if not math.isnan(v)]
    assert 0 < min(finite) and max(finite) <= sim.best_value <= 1


def test_large_learning_rates_diverge_to_nan():
    sim = CurveSimulator(1)
    config = {**sim.best_config, "lr": 1.0}
    run = sim.run(config)
    assert sim.diverges(config) and run.failure == "diverged"
    assert run.status is TrialStatus.FAILED and math.isnan(run.values[-1])
    assert len(run.values) < sim.max_steps and math.isnan(sim.true_final(config))
    assert max(v for v in run.values if not math.isnan(v)) > run.values[0]  # blew up first


def test_some_runs_crash_at_a_step():
    sim = CurveSimulator(2, crash_rate=0.5)
    runs = simulate_sweep(sim, 40, seed=0)
    crashed = [r for r in runs if r.failure == "crashed"]
    assert crashed and all(len(r.values) < sim.max_steps for r in crashed)
    assert all(all(math.isfinite(v) for v in r.values) for r in crashed)


def test_sweeps_show_every_shape_and_realistic_curves():
    shapes: Counter[str] = Counter()
    learned = []
    for seed in range(6):
        sim = CurveSimulator(seed, shape_weights=(0.25, 0.25, 0.25, 0.25))
        for r in simulate_sweep(sim, 30, seed=seed):
            shapes[r.shape] += 1
            if r.failure is None:
                learned.append(r.values[-1] < r.values[0])
    assert set(shapes) == set(SHAPES)
    assert np.mean(learned) > 0.85  # most runs learn; hopeless configs stay near the start


def test_late_bloomers_look_bad_early_and_end_well():
    sim = CurveSimulator(0, shape_weights=(0, 0, 0, 1), noise=0.0)
    run = sim.run(sim.best_config)
    v = np.asarray(run.values)
    assert run.shape == "late"
    assert v[: len(v) // 3].min() > v[0] - 0.2 * (v[0] - v[-1])  # still near the start
    assert v[-1] == pytest.approx(sim.best_value, abs=1e-9)


def test_good_configs_learn_faster_as_in_real_sweeps():
    sim = CurveSimulator(5, noise=0.0, shape_weights=(1, 0, 0, 0))
    good = np.asarray(sim.run(sim.best_config).values)
    worse = np.asarray(sim.run({**sim.best_config, "depth": 8, "dropout": 0.0}).values)
    progress = lambda v: (v[0] - v[2]) / (v[0] - v[-1])
    assert progress(good) > progress(worse)


def test_every_step_has_a_duration_for_a_simulated_clock():
    sim = CurveSimulator(0)
    small = sim.run({**sim.best_config, "width": 16, "depth": 1})
    big = sim.run({**sim.best_config, "width": 1024, "depth": 8})
    assert len(small.durations) == len(small.values)
    assert np.mean(big.durations) > 10 * np.mean(small.durations)


def test_runs_convert_to_trial_results_mid_run_and_finished():
    sim = CurveSimulator(0)
    run = sim.run(sim.best_config, trial_id="x")
    mid = run.to_result(upto=5)
    assert mid.status is TrialStatus.RUNNING and len(mid.curve) == 5 and mid.final is None
    assert mid.resources["steps"] == 5
    done = run.to_result()
    assert done.status is TrialStatus.COMPLETED and done.final == run.values[-1]


@pytest.mark.parametrize("kwargs", [{"metric": "f1"}, {"max_steps": 1}, {"crash_rate": 1.0},
                                    {"shape_weights": (1, 0)}, {"noise": -1}])
def test_simulator_rejects_bad_settings(kwargs):
    with pytest.raises(UserInputError):
        CurveSimulator(0, **kwargs)


def test_simulator_validates_configs():
    with pytest.raises(UserInputError):
        CurveSimulator(0).run({"lr": 0.1})
