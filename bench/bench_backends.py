"""Backend benchmark: what RayBackend adds per trial, on trivial trials.

Prints, on an embedded local Ray (medians over the trials):
  - raw_task_ms:   a bare Ray task round trip (``ray.get(f.remote())``): the floor
  - latency_s:     launch() to the ``completed`` event of one trial at a time (a tracked run:
                   ``assay.init`` with a pre-assigned id, one ``log``, ``finish`` until the run
                   is queryable, then the event at the next poll)
  - started_s:     launch() to the ``started`` event
  - throughput:    trials/s with N trials launched at once, ``--concurrent`` at a time
  - launch_ms, poll_ms: driver-side cost of ``launch()`` and of one ``poll()``
and, for scale, SimBackend's simulated trials per second. With ``--peers``, the same
trivial trial under Ray Tune (``tune.run`` of a function trainable reporting once), if
installed, so agent overhead can be compared against it.

    .venv/bin/python bench/bench_backends.py                 # 20 trials, 2 CPUs
    .venv/bin/python bench/bench_backends.py --trials 50 --num-cpus 4 --peers
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def trivial(config: dict[str, Any], run: Any) -> dict[str, float]:
    """The trial: one logged point and a result."""
    run.log({"loss": float(config["i"])}, step=0)
    return {"loss": float(config["i"])}


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))] if xs else float("nan")


def bench_ray(trials: int, concurrent: int, num_cpus: int, data_dir: Path) -> dict[str, float]:
    import ray
    from assay.scheduler import EventKind, RayBackend, TrialSpec

    backend = RayBackend(data_dir, num_cpus=num_cpus, heartbeat_s=0.5)

    @ray.remote
    def bare() -> int:
        return 1

    ray.get([bare.remote() for _ in range(num_cpus)])  # warm workers
    raw = []
    for _ in range(20):
        t = time.perf_counter()
        ray.get(bare.remote())
        raw.append(time.perf_counter() - t)

    def run_one(i: int, prefix: str) -> tuple[float, float, float]:
        spec = TrialSpec(f"{prefix}{i:05d}", "bench", {"i": i}, trivial)
        t0 = time.perf_counter()
        backend.launch(spec)
        launch_s = time.perf_counter() - t0
        started = None
        while True:
            for e in backend.poll():
                if e.kind is EventKind.STARTED:
                    started = time.perf_counter() - t0
                elif e.kind.finished:
                    if e.kind is not EventKind.COMPLETED:
                        raise SystemExit(f"trial {spec.trial_id} {e.kind}: {e.reason}\n{e.error}")
                    return time.perf_counter() - t0, started or float("nan"), launch_s
            time.sleep(0.005)

    run_one(0, "warm")  # the first run in a data dir starts its ingest daemon
    lat, start, launch = [], [], []
    for i in range(trials):
        total, s, ls = run_one(i, "seq")
        lat.append(total)
        start.append(s)
        launch.append(ls)

    backend.max_concurrent = concurrent
    poll_cost: list[float] = []
    t0 = time.perf_counter()
    todo = list(range(trials))
    done = 0
    while done < trials:
        while todo and backend.capacity() > 0:
            i = todo.pop(0)
            backend.launch(TrialSpec(f"par{i:05d}", "bench", {"i": i}, trivial))
        tp = time.perf_counter()
        events = backend.poll()
        poll_cost.append(time.perf_counter() - tp)
        done += sum(e.kind.finished for e in events)
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    backend.shutdown()
    ray.shutdown()
    return {"raw_task_ms": 1e3 * _median(raw), "latency_s": _median(lat),
            "latency_p90_s": _p90(lat), "started_s": _median(start),
            "throughput_per_s": trials / wall, "launch_ms": 1e3 * _median(launch),
            "poll_ms": 1e3 * _median(poll_cost)}


def bench_sim(trials: int) -> float:
    from assay.scheduler import SimBackend, SimClock, TrialSpec

    class Flat:
        metric = "loss"

        def curve(self, config: Any, seed: int) -> Any:
            return ((s, 1.0 / (s + 1), 1.0) for s in range(20))

    clock = SimClock()
    backend = SimBackend(clock, Flat(), cpus=8)
    t0 = time.perf_counter()
    for i in range(trials):
        backend.launch(TrialSpec(f"sim{i:06d}", "bench", {"i": i}))
    n = 0
    while (t := backend.next_event_time()) is not None:
        clock.advance_to(t)
        n += sum(e.kind.finished for e in backend.poll())
    return n / (time.perf_counter() - t0)


def bench_tune(trials: int, concurrent: int, num_cpus: int) -> dict[str, float] | None:
    try:
        import ray
        from ray import tune
    except ImportError:
        return None

    def trainable(config: dict[str, Any]) -> None:
        tune.report({"loss": float(config["i"])})

    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    out: dict[str, float] = {}
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet = io.StringIO()  # Tune prints a table per experiment
    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(quiet), \
            contextlib.redirect_stderr(quiet):
        seq = []
        for i in range(min(trials, 10)):
            t = time.perf_counter()
            tune.Tuner(trainable, param_space={"i": i},
                       tune_config=tune.TuneConfig(num_samples=1),
                       run_config=tune.RunConfig(storage_path=d, name=f"seq{i}",
                                                 verbose=0)).fit()
            seq.append(time.perf_counter() - t)
        t = time.perf_counter()
        tune.Tuner(trainable, param_space={"i": tune.grid_search(list(range(trials)))},
                   tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
                   run_config=tune.RunConfig(storage_path=d, name="par", verbose=0)).fit()
        out = {"latency_s": _median(seq), "throughput_per_s": trials / (time.perf_counter() - t)}
    ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=2)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--sim-trials", type=int, default=2000)
    ap.add_argument("--peers", action="store_true", help="also measure Ray Tune")
    a = ap.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {a.trials} trivial trials, "
          f"{a.concurrent} at a time on a local Ray with {a.num_cpus} CPUs")
    with tempfile.TemporaryDirectory() as d:
        os.environ["ASSAY_DIR"] = d
        r = bench_ray(a.trials, a.concurrent, a.num_cpus, Path(d))
    print(f"RayBackend  raw_task_ms={r['raw_task_ms']:.2f}  latency_s={r['latency_s']:.3f} "
          f"(p90 {r['latency_p90_s']:.3f})  started_s={r['started_s']:.3f}  "
          f"throughput={r['throughput_per_s']:.2f} trials/s  launch_ms={r['launch_ms']:.2f}  "
          f"poll_ms={r['poll_ms']:.2f}")
    print(f"SimBackend  {bench_sim(a.sim_trials):,.0f} simulated trials/s "
          f"(20 steps each, 8 slots)")
    if a.peers:
        t = bench_tune(a.trials, a.concurrent, a.num_cpus)
        if t is None:
            print("Ray Tune    not installed (pip install 'ray[tune]')")
        else:
            print(f"Ray Tune    latency_s={t['latency_s']:.3f} (one Tuner.fit per trial)  "
                  f"throughput={t['throughput_per_s']:.2f} trials/s")


if __name__ == "__main__":
    main()
