"""Searcher quality and latency: assay's BoTorchSearcher against Optuna's TPE and GP
samplers, in the same process, on BoTorch's test functions.

Quality: sequential optimisation (one suggestion at a time), regret of the best value
found after 10, 20, 30, 40 and 60 trials, median over seeds. The row "optuna GP, assay
start" runs Optuna's GP sampler from the same initial points as assay's searcher (queued
with ``enqueue_trial``), so the two GP methods are compared on equal starts. Problems: Branin (2-D),
Hartmann6 (6-D), and the two-objective BraninCurrin (hypervolume regret against the
known maximum hypervolume, reference point (18, 6)). Optuna runs through its own
ask/tell loop, as its users run it.

Latency: ``BoTorchSearcher.suggest(history, n=8)`` on Hartmann6 with 100, 500 and 1000
observations (4 running trials pending): the first call (cold GP fit) and the next calls
with 8 new observations each (warm-started hyperparameters).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_searchers.py --quick
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_searchers.py
    # held-out seeds, assay's searcher only (quick iteration on the searcher)
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_searchers.py \
        --problems hartmann6 --first-seed 20 --seeds 20 --methods assay --skip-latency
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import optuna
import torch
from assay.policies import BoTorchSearcher, TrialResult, uniform
from assay.policies.explain import pareto_mask
from assay.policies.searchers.gp import hypervolume
from botorch.test_functions import Branin, Hartmann
from botorch.test_functions.multi_objective import BraninCurrin

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)
RESULTS = Path(__file__).resolve().parent / "results"
CHECKPOINTS = (10, 20, 30, 40, 60)


class Problem:
    def __init__(self, name: str, fn: Any, bounds: list[tuple[float, float]], multi: bool) -> None:
        self.name, self.fn, self.bounds, self.multi = name, fn, bounds, multi
        self.dim = len(bounds)

    def space(self) -> dict[str, Any]:
        return {f"x{i}": uniform(lo, hi) for i, (lo, hi) in enumerate(self.bounds)}

    def evaluate(self, config: dict[str, float]) -> np.ndarray:
        x = torch.tensor([[config[f"x{i}"] for i in range(self.dim)]], dtype=torch.float64)
        return self.fn(x).reshape(-1).numpy()

    def regret(self, ys: list[np.ndarray]) -> float:
        Y = np.asarray(ys)
        if not self.multi:
            return float(Y[:, 0].min() - self.fn.optimal_value)
        ref = -np.asarray(self.fn.ref_point)  # maximise -f
        front = -Y[pareto_mask(-Y)]
        return float(self.fn.max_hv - hypervolume(front, ref))


PROBLEMS = {
    "branin": lambda: Problem("branin", Branin(), [(-5.0, 10.0), (0.0, 15.0)], False),
    "hartmann6": lambda: Problem("hartmann6", Hartmann(dim=6), [(0.0, 1.0)] * 6, False),
    "branincurrin": lambda: Problem("branincurrin", BraninCurrin(), [(0.0, 1.0)] * 2, True),
}


def _searcher(problem: Problem, seed: int) -> BoTorchSearcher:
    objectives = {"f0": "min", "f1": "min"} if problem.multi else None
    return BoTorchSearcher(
        problem.space(), mode="min", seed=seed,
        objectives=objectives, ref_point=[18.0, 6.0] if problem.multi else None,
    )


def assay_start(problem: Problem, seed: int) -> list[dict[str, float]]:
    """The initial design assay's searcher draws for ``seed`` (it depends only on the
    seed and the number of trials so far, not on their values)."""
    searcher, history = _searcher(problem, seed), []
    for i in range(searcher.n_initial):
        config = dict(searcher.suggest(history, n=1)[0].config)
        history.append(TrialResult(f"t{i}", config, "completed", [(1, 0.0)], 0.0))
    return [dict(t.config) for t in history]


def run_assay(problem: Problem, seed: int, budget: int) -> list[float]:
    searcher = _searcher(problem, seed)
    history: list[TrialResult] = []
    ys: list[np.ndarray] = []
    regrets = []
    for i in range(budget):
        config = dict(searcher.suggest(history, n=1)[0].config)
        y = problem.evaluate(config)
        ys.append(y)
        metrics = {f"f{j}": float(v) for j, v in enumerate(y)}
        history.append(TrialResult(f"t{i}", config, "completed", [(1, float(y[0]))],
                                   float(y[0]), metrics=metrics))
        regrets.append(problem.regret(ys))
    return regrets


def run_optuna(problem: Problem, seed: int, budget: int, make: Callable[[int], Any],
               start: list[dict[str, float]] | None = None) -> list[float]:
    study = optuna.create_study(
        directions=["minimize"] * (2 if problem.multi else 1), sampler=make(seed)
    )
    for config in start or []:
        study.enqueue_trial(config)
    ys: list[np.ndarray] = []
    regrets = []
    for _ in range(budget):
        trial = study.ask()
        config = {f"x{i}": trial.suggest_float(f"x{i}", lo, hi)
                  for i, (lo, hi) in enumerate(problem.bounds)}
        y = problem.evaluate(config)
        study.tell(trial, [float(v) for v in y] if problem.multi else float(y[0]))
        ys.append(y)
        regrets.append(problem.regret(ys))
    return regrets


METHODS: dict[str, Callable[[Problem, int, int], list[float]]] = {
    "assay BoTorchSearcher": run_assay,
    "optuna GPSampler": lambda p, s, b: run_optuna(p, s, b, lambda seed: optuna.samplers.GPSampler(seed=seed)),
    "optuna TPESampler": lambda p, s, b: run_optuna(
        p, s, b, lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True)),
    # The same GP sampler started from assay's initial design: a paired comparison, so
    # that the luck of the starting points (which basin they land near) cancels out.
    "optuna GP, assay start": lambda p, s, b: run_optuna_from_assay_start(p, s, b),
}


def run_optuna_from_assay_start(problem: Problem, seed: int, budget: int) -> list[float]:
    start = assay_start(problem, seed)
    return run_optuna(problem, seed, budget, lambda seed: optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=len(start)), start=start)


def quality(seeds: range, budget: int, problems: list[str],
            methods: dict[str, Callable[[Problem, int, int], list[float]]] = METHODS,
            ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pname in problems:
        problem = PROBLEMS[pname]()
        print(f"\n== {pname} ({problem.dim}-D{', hypervolume regret' if problem.multi else ''}): "
              f"median regret over {len(seeds)} seeds ({seeds.start}-{seeds.stop - 1}) ==")
        cps = [c for c in CHECKPOINTS if c <= budget]
        print(f"{'method':24s}" + "".join(f"{'@' + str(c):>11s}" for c in cps) + f"{'s/run':>8s}")
        for mname, method in methods.items():
            runs, t0 = [], time.perf_counter()
            for seed in seeds:
                runs.append(method(problem, seed, budget))
            secs = (time.perf_counter() - t0) / len(seeds)
            med = {c: float(np.median([r[c - 1] for r in runs])) for c in cps}
            out.setdefault(pname, {})[mname] = {"median": med, "runs": runs, "s_per_run": secs}
            print(f"{mname:24s}" + "".join(f"{med[c]:11.4g}" for c in cps) + f"{secs:8.1f}")
    return out


def latency(sizes: list[int], repeats: int) -> dict[str, Any]:
    problem = PROBLEMS["hartmann6"]()
    print("\n== BoTorchSearcher.suggest(n=8) latency, Hartmann6, 4 pending ==")
    print(f"{'observations':>12s} {'cold s':>8s} {'warm s (median)':>16s} {'GP points':>10s}")
    out = {}
    rng = np.random.default_rng(0)
    for n_obs in sizes:
        X = rng.random((n_obs + 4 + 8 * repeats, 6))
        def result(i: int, status: str = "completed", X: np.ndarray = X) -> TrialResult:
            config = {f"x{j}": float(X[i, j]) for j in range(6)}
            y = float(problem.evaluate(config)[0])
            return TrialResult(f"t{i}", config, status, [(1, y)], y if status == "completed" else None)
        history = [result(i) for i in range(n_obs)]
        pending = [TrialResult(f"p{i}", {f"x{j}": float(X[n_obs + i, j]) for j in range(6)},
                               "running") for i in range(4)]
        searcher = BoTorchSearcher(problem.space(), mode="min", seed=0)
        t0 = time.perf_counter()
        first = searcher.suggest(history + pending, n=8)
        cold = time.perf_counter() - t0
        warm = []
        for r in range(repeats):
            history += [result(n_obs + 4 + 8 * r + k) for k in range(8)]
            t0 = time.perf_counter()
            searcher.suggest(history + pending, n=8)
            warm.append(time.perf_counter() - t0)
        used = first[0].explanation.get("n_observations_used")
        out[n_obs] = {"cold_s": cold, "warm_s": warm}
        print(f"{n_obs:12d} {cold:8.3f} {np.median(warm):16.3f} {used!s:>10s}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 30 trials, Hartmann6 only")
    ap.add_argument("--seeds", type=int, default=None, help="how many seeds (default 5)")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds run from here (e.g. 5 for seeds held out from the default 0-4)")
    ap.add_argument("--problems", default=None,
                    help="comma-separated subset of " + ", ".join(PROBLEMS))
    ap.add_argument("--methods", default=None,
                    help="comma-separated prefixes; run only the methods whose name starts "
                         "with one, ignoring case ('assay' for assay's searcher alone, "
                         "'optuna gp' for both Optuna GP rows)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    seeds = args.seeds or (2 if args.quick else 5)
    budget = 30 if args.quick else 60
    problems = (args.problems.split(",") if args.problems
                else ["hartmann6"] if args.quick else ["branin", "hartmann6", "branincurrin"])
    unknown = [p for p in problems if p not in PROBLEMS]
    if unknown:
        ap.error(f"unknown problems {unknown}; choose from {', '.join(PROBLEMS)}")
    methods = METHODS
    if args.methods:
        words = [w.strip().lower() for w in args.methods.split(",") if w.strip()]
        methods = {k: v for k, v in METHODS.items()
                   if any(k.lower().startswith(w) for w in words)}
        if not methods:
            ap.error(f"no method matches {args.methods!r}; methods: {', '.join(METHODS)}")
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    if not args.skip_quality:
        results["quality"] = quality(range(args.first_seed, args.first_seed + seeds), budget,
                                     problems, methods)
    if not args.skip_latency:
        results["latency"] = latency([100, 500, 1000], 2 if args.quick else 4)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = ("searchers_quick.json" if args.quick else "searchers.json"
            if not (args.problems or args.first_seed or args.seeds or args.methods)
            else "searchers_custom.json")
    (RESULTS / name).write_text(json.dumps(results, indent=1, default=float))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; raw results in bench/results/{name}")


if __name__ == "__main__":
    main()
