"""Agent benchmarks: decision overhead per trial, end-to-end trial throughput against Ray
Tune and Optuna on the same trivial trials, and slot utilization with a slow searcher.

    .venv/bin/python bench/bench_agents.py [--trials 40] [--sim-trials 500]

1. overhead: the agent's own time per trial (its step() minus the time spent waiting on the
   backend), on the SimBackend with in-memory and with LanceDB-persisted decisions.
2. end to end: N trivial trials (one logged point each), 2 at a time, on a local Ray:
   assay's agent (tracked runs: init, log, finish, ingest), Ray Tune (Tuner.fit, one run of
   N trials), Optuna (study.optimize, n_jobs=2, no tracking).
3. utilization: a searcher that takes 1.5 s per suggestion, trials of 0.5 s, 2 slots, with
   suggestions asked ahead of need (the default) and inline: the runs' own time (from
   their init to their finish) over 2 slots x the sweep's wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")

SPACE = {"x": {"uniform": [0, 1]}, "y": {"uniform": [0, 1]}, "steps": 1, "step_s": 0.0}


def _objective(**kw: Any) -> Any:
    from assay.agents.objective import Objective

    base = {"name": "bench", "project": "bench", "train": "examples.toy:train",
            "metric": "score", "mode": "max", "space": SPACE, "budget": {"trials": 40},
            "concurrency": 2, "searcher": "random", "stoppers": []}
    base.update(kw)
    return Objective.from_dict(base)


class _Timed:
    """Wraps a backend/metric source and adds up the time spent inside it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.spent = 0.0
        self.clock = inner.clock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return attr(*a, **k)
            finally:
                self.spent += time.perf_counter() - t0
        return timed


def overhead(n: int, lance: bool) -> float:
    from assay.agents.agent import Agent
    from assay.scheduler.base import SimClock
    from assay.scheduler.sim_backend import CurveSimulatorSource, SimBackend
    from assay.simulations.curves import CurveSimulator
    from assay.store.control import LanceControlStore, MemoryControlStore
    from assay.store.ingest import IngestLock
    from assay.store.lance import LanceStore

    sim = CurveSimulator(seed=1, max_steps=10, crash_rate=0.0)
    clock = SimClock()
    backend = _Timed(SimBackend(clock, CurveSimulatorSource(sim), cpus=8))
    obj = _objective(space=sim.space.to_dict(), metric="loss", mode="min",
                     budget={"trials": n}, concurrency=8)
    with tempfile.TemporaryDirectory() as d:
        control = (LanceControlStore(LanceStore(d), IngestLock(Path(d))) if lance
                   else MemoryControlStore())
        agent = Agent(obj, backend, backend, control, ahead=False)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        while agent.status.value in ("running", "paused"):
            agent.step()
            t = backend.inner.next_event_time()
            clock.advance_to(t if t is not None else clock.now() + 1)
        total = time.perf_counter() - t0
    return (total - backend.spent) / n


def assay_e2e(n: int) -> float:
    from assay.agents.runner import run_objective

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = run_objective(_objective(budget={"trials": n}), dir=d, poll_interval=0.05)
        wall = time.perf_counter() - t0
        assert sum(res.trials.values()) == n, res.trials
    return wall


def tune_e2e(n: int) -> float:
    from ray import tune

    def trainable(config: dict[str, Any]) -> dict[str, float]:
        from assay.examples.toy import target

        return {"score": target(config["x"], config["y"])}

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"x": tune.uniform(0, 1), "y": tune.uniform(0, 1)},
            tune_config=tune.TuneConfig(num_samples=n, max_concurrent_trials=2, metric="score",
                                        mode="max"),
            run_config=tune.RunConfig(storage_path=d, verbose=0),
        )
        tuner.fit()
        return time.perf_counter() - t0


def optuna_e2e(n: int) -> float:
    import optuna
    from assay.examples.toy import target

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    t0 = time.perf_counter()
    study.optimize(lambda t: target(t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)),
                   n_trials=n, n_jobs=2)
    return time.perf_counter() - t0


def utilization(ahead: bool, n: int = 8) -> tuple[float, float]:
    """(utilization, wall seconds) with a 1.5 s searcher and 0.5 s trials on 2 slots."""
    from assay.agents.agent import Agent
    from assay.policies import RandomSearcher, as_space
    from assay.scheduler.metrics import StoreMetricSource
    from assay.scheduler.ray_backend import RayBackend
    from assay.store.control import MemoryControlStore

    class Slow(RandomSearcher):
        def suggest(self, history: Any, n: int = 1) -> Any:
            time.sleep(1.5)
            return super().suggest(history, n)

    space = {"x": {"uniform": [0, 1]}, "y": {"uniform": [0, 1]}, "steps": 5, "step_s": 0.1}
    obj = _objective(space=space, budget={"trials": n})
    with tempfile.TemporaryDirectory() as d:
        backend = RayBackend(data_dir=d)
        agent = Agent(obj, backend, StoreMetricSource(d, keys=["score"]), MemoryControlStore(),
                      ahead=ahead, searcher=Slow(as_space(space), mode="max", seed=0))
        t0 = time.time()
        while agent.status.value == "running":
            agent.step()
            time.sleep(0.02)
        wall = time.time() - t0
        agent.close()
        import assay

        runs = assay.Api(d).runs(project="bench")
        busy = sum((f - c).total_seconds() for c, f in zip(runs["created_at"], runs["finished_at"]))
    return busy / (2 * wall), wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--sim-trials", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-peers", action="store_true")
    a = ap.parse_args()
    overhead(20, False), overhead(10, True)  # warm up: imports and first LanceDB tables
    mem = statistics.median(overhead(a.sim_trials, False) for _ in range(a.repeats))
    lan = statistics.median(overhead(a.sim_trials // 5, True) for _ in range(a.repeats))
    print(f"agent overhead per trial (SimBackend, {a.sim_trials} trials, random searcher): "
          f"{mem * 1e3:.2f} ms with in-memory decisions, {lan * 1e3:.2f} ms with decisions "
          f"and state persisted in LanceDB ({a.sim_trials // 5} trials)")
    from assay.agents.runner import ensure_ray

    ensure_ray(num_cpus=2)
    rows = {"assay agent (tracked runs)": [assay_e2e(a.trials) for _ in range(a.repeats)]}
    if not a.skip_peers:
        rows["ray tune (Tuner.fit)"] = [tune_e2e(a.trials) for _ in range(a.repeats)]
        rows["optuna (n_jobs=2, untracked)"] = [optuna_e2e(a.trials) for _ in range(a.repeats)]
    print(f"\n{a.trials} trivial trials, 2 at a time, medians of {a.repeats}:")
    for name, ws in rows.items():
        w = statistics.median(ws)
        print(f"  {name:30} {w:7.2f} s total  {w / a.trials * 1e3:8.1f} ms per trial")
    for ahead in (True, False):
        u, w = utilization(ahead)
        print(f"slot utilization, 1.5 s searcher, 0.5 s trials, 2 slots, "
              f"{'ahead of need' if ahead else 'inline       '}: {u:.0%} ({w:.1f} s for 8 trials)")


if __name__ == "__main__":
    main()
