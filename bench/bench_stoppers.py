"""Compute saved and best kept by each early stopper, on simulated and real sweeps.

Every sweep is replayed (``assay.policies.replay``) with 4 trials at a time; a stopper
"keeps the best" when the trial with the best final value runs to completion. Figures
printed per stopper: median and mean fraction of epochs saved, share of sweeps keeping
the best trial with its 95% (Wilson) interval, the sweeps that lost it and (in brackets) how
many distinct runs those best trials were (digits sweeps resample one pool), median and
95th-percentile regret (best value lost).

Sweeps:
* simulated: ``CurveSimulator`` problems with seeds 0.. (the shipped predictor was trained
  on seeds from 1000 up), 30 random configs, 30 epochs, loss and accuracy alternately;
* digits: real MLP runs on scikit-learn's digits (20 epochs, val_loss), a pool of random
  configs trained once (cached under bench/results/) and resampled into sweeps; the
  learned stopper is shown pretrained-only and refitted on the other half of the pool.

Before each set of sweeps it prints, in hindsight, how often the eventual best trial
trails the others at 10-50% of the budget (outside the top third, in the bottom half):
those sweeps are lost by any stopper that judges by the curves alone and stops trailing
trials at that point, so they bound what saving compute early can keep.

The learned rows: ``default`` is ``LearnedStopper``'s default configuration (its
threshold schedule and leader threshold were chosen on other sweeps: simulated seeds
500-899, the digits pool's training half and a separately trained digits pool);
``leaders never`` is the default without leader stops (``leader_threshold=None``: the
top third at each step always runs on); ``p>=t`` rows use a constant threshold ``t``
(and the default leader guard).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_stoppers.py --quick
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_stoppers.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from assay.policies import (
    AnyOf,
    ASHAStopper,
    FailurePredictor,
    HyperbandStopper,
    LearnedStopper,
    MedianStopper,
    NonFiniteStopper,
    TrialResult,
    replay,
)
from assay.simulations import CurveSimulator, simulate_sweep
from scipy.stats import binomtest

RESULTS = Path(__file__).resolve().parent / "results"


def stoppers(mode: str, max_step: int, predictors: dict[str, FailurePredictor],
             thresholds: list[float]) -> dict[str, Any]:
    nf = NonFiniteStopper(mode=mode)
    out: dict[str, Any] = {
        "none (non-finite only)": nf,
        "median": AnyOf(nf, MedianStopper(mode=mode, warmup_steps=max(1, max_step // 6),
                                          min_trials=3)),
        "percentile 33 (warmup 2)": AnyOf(nf, MedianStopper(mode=mode, percentile=33,
                                                            warmup_steps=2, min_trials=3)),
        "asha rf=3": AnyOf(nf, ASHAStopper(max_step, mode=mode, min_step=1, reduction_factor=3)),
        "hyperband rf=3": AnyOf(nf, HyperbandStopper(max_step, mode=mode, reduction_factor=3)),
    }
    for name, predictor in predictors.items():
        # The default configuration (threshold and leader-guard schedules over the budget).
        out[f"learned[{name}] default"] = AnyOf(
            nf, LearnedStopper(predictor, mode=mode, max_step=max_step)
        )
        out[f"learned[{name}] leaders never"] = AnyOf(
            nf, LearnedStopper(predictor, mode=mode, max_step=max_step, leader_threshold=None)
        )
        for t in thresholds:
            out[f"learned[{name}] p>={t}"] = AnyOf(
                nf, LearnedStopper(predictor, threshold=t, mode=mode, max_step=max_step)
            )
    return out


def evaluate(sweeps: list[list[TrialResult]], make: Any, label: str) -> None:
    reports: dict[str, list[Any]] = {}
    t0 = time.perf_counter()
    for sweep, (mode, max_step) in sweeps:
        for name, stopper in make(mode, max_step).items():
            reports.setdefault(name, []).append(replay(stopper, sweep, concurrency=4))
    print(f"\n== {label}: {len(sweeps)} sweeps, {time.perf_counter() - t0:.0f} s ==")
    print(f"{'stopper':40s} {'saved med':>9s} {'saved mean':>10s} {'best kept':>9s} "
          f"{'95% CI':>13s} {'lost (runs)':>11s} {'regret med':>10s} {'regret p95':>10s}")
    for name, reps in reports.items():
        saved = np.array([r.saved_fraction for r in reps])
        n_kept = sum(bool(r.best_trial_kept) for r in reps)
        kept = n_kept / len(reps)
        # Wilson interval of the kept share: 200 sweeps cannot tell 98% from 99% apart.
        ci = binomtest(n_kept, len(reps)).proportion_ci(confidence_level=0.95, method="wilson")
        # No regret when no trial survived to completion: count those sweeps apart.
        regret = np.array([r.regret for r in reps if r.regret is not None])
        none_kept = sum(r.regret is None and r.best_value is not None for r in reps)
        # Digits sweeps resample one pool, so one good run is the best of many sweeps: the
        # distinct runs lost say how many independent mistakes the lost sweeps come from.
        lost = [r.best_trial_id for r in reps if not r.best_trial_kept]
        print(f"{name:40s} {np.median(saved):9.1%} {saved.mean():10.1%} {kept:9.1%} "
              f"{f'{ci.low:.1%}-{ci.high:.1%}':>13s} {f'{len(lost)} ({len(set(lost))})':>11s} "
              f"{np.median(regret):10.4f} {np.percentile(regret, 95):10.4f}"
              + (f"  ({none_kept} sweeps kept no finisher)" if none_kept else ""))


HINDSIGHT_FRACTIONS = (0.1, 0.2, 0.3, 0.5)


def best_rank_share(sweep: list[TrialResult], mode: str, max_step: int,
                    fraction: float) -> float:
    """The share of the other trials that are ahead of the sweep's eventual best trial
    (by best value so far) at ``fraction`` of the budget: 0 when it already leads."""
    sign = 1.0 if mode == "min" else -1.0
    done = [t for t in sweep if t.status == "completed" and t.value is not None]
    best = min(done, key=lambda t: t.value * sign)
    step = max(1, round(fraction * max_step))
    reached = {}
    for t in sweep:
        vals = [v * sign for s, v in t.curve if s <= step and math.isfinite(v)]
        if vals:
            reached[t.trial_id] = min(vals)
    mine = reached.get(best.trial_id, math.inf)
    others = [v for tid, v in reached.items() if tid != best.trial_id]
    return float(np.mean([v < mine for v in others])) if others else 0.0


def hindsight(sweeps: list[Any], label: str) -> None:
    """How often the eventual best trial trails at a point of the budget: a stopper that
    acts on curves alone and stops trailing trials there loses those sweeps."""
    shares = np.array([[best_rank_share(sweep, mode, ms, f) for f in HINDSIGHT_FRACTIONS]
                       for sweep, (mode, ms) in sweeps])
    print(f"\n{label}: share of sweeps whose eventual best trial trails at a budget fraction")
    print(f"{'at budget':>28s}" + "".join(f"{f:>8.0%}" for f in HINDSIGHT_FRACTIONS))
    for name, cut in (("outside the top third", 1 / 3), ("in the bottom half", 0.5)):
        print(f"{name:>28s}" + "".join(f"{(shares[:, i] > cut).mean():8.1%}"
                                       for i in range(len(HINDSIGHT_FRACTIONS))))


def simulated_sweeps(n: int, trials: int, steps: int) -> list[Any]:
    out = []
    for seed in range(n):
        sim = CurveSimulator(seed, max_steps=steps, metric="loss" if seed % 2 == 0 else "accuracy")
        runs = simulate_sweep(sim, trials, seed=seed)
        out.append(([r.to_result() for r in runs], (sim.mode, steps)))
    return out


def digits_pool(n_runs: int, epochs: int) -> list[dict[str, Any]]:
    """Train (or load cached) digits runs of random configs."""
    import torch
    from assay.simulations import DIGITS_SPACE, train_digits

    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache = RESULTS / f"digits_pool_{n_runs}x{epochs}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    rng = np.random.default_rng(12345)
    pool = []
    t0 = time.perf_counter()
    for i in range(n_runs):
        config = {**DIGITS_SPACE.sample(rng), "epochs": epochs, "seed": i}
        curve: list[list[float]] = []
        train_digits(config, lambda step, m, curve=curve: curve.append([step, m["val_loss"]]))
        pool.append({"trial_id": f"d{i:04d}", "config": config, "curve": curve})
    print(f"trained {n_runs} digits runs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    cache.write_text(json.dumps(pool))
    return pool


def _digits_result(run: dict[str, Any]) -> TrialResult:
    curve = run["curve"]
    diverged = any(not math.isfinite(v) for _, v in curve)
    status = "failed" if diverged else "completed"
    return TrialResult(run["trial_id"], run["config"], status, [tuple(p) for p in curve],
                       final=None if diverged else curve[-1][1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sweeps (a few minutes)")
    ap.add_argument("--skip-digits", action="store_true")
    args = ap.parse_args()
    n_sim = 30 if args.quick else 200
    n_pool, n_dig = (120, 30) if args.quick else (400, 200)
    thresholds = [0.9, 0.95] if args.quick else [0.8, 0.9, 0.95]
    t0 = time.perf_counter()
    pretrained = FailurePredictor.pretrained()
    print(f"pretrained predictor ready in {time.perf_counter() - t0:.1f} s: {pretrained}")

    sweeps = simulated_sweeps(n_sim, 30, 30)
    hindsight(sweeps, "simulated")
    evaluate(sweeps, lambda mode, steps: stoppers(mode, steps, {"pretrained": pretrained},
                                                  thresholds), "simulated")
    if args.skip_digits:
        return
    pool = [_digits_result(r) for r in digits_pool(n_pool, 20)]
    half = len(pool) // 2
    fit_part, eval_part = pool[:half], pool[half:]
    rng = np.random.default_rng(7)
    # Refit on the other half, cut into sweeps of 30 in launch order.
    refit = FailurePredictor.pretrained().partial_fit(
        [fit_part[i : i + 30] for i in range(0, len(fit_part), 30)], mode="min", max_step=20
    )
    predictors = {"pretrained": pretrained, "refit on digits": refit}
    dsweeps = []
    for _ in range(n_dig):
        idx = rng.choice(len(eval_part), 30, replace=False)
        dsweeps.append(([eval_part[i] for i in idx], ("min", 20)))
    print(f"\ndigits pool: {len(pool)} runs, "
          f"{sum(r.status == 'failed' for r in pool)} diverged; evaluation half {len(eval_part)}")
    hindsight(dsweeps, "digits")
    evaluate(dsweeps, lambda mode, steps: stoppers(mode, steps, predictors, thresholds),
             "digits (val_loss)")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
