"""What an agent pays each step to read its running trials' new points
(``StoreMetricSource.new_points``) from a real LanceDB store, for long curves.

Trials log ``--steps`` points of three metrics each; the agent then polls all of them:
once with nothing new (the common case between epochs) and once after every trial stored
one more point. Medians of ``--repeat`` polls, in ms per poll of all trials.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_metric_source.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="assay-bench-metrics-")
    import assay
    from assay.scheduler.metrics import StoreMetricSource
    from assay.store.history import history_frame  # noqa: F401  (import cost outside timing)

    kw = {"dir": d, "system_metrics_interval": 0, "capture": False}
    runs = []
    for _ in range(args.trials):
        run = assay.init("bench-metrics", **kw)
        for s in range(args.steps):
            run.log({"loss": 1.0 / (s + 1), "acc": s / args.steps, "lr": 0.1})
        run.flush()
        runs.append(run)
    api = assay.Api(d)
    ids = [r.id for r in runs]

    def settled(step: int) -> None:
        deadline = time.monotonic() + 120
        while not all(_last_step(api, i) >= step for i in ids):
            if time.monotonic() > deadline:
                raise RuntimeError("the ingester did not catch up")
            time.sleep(0.05)

    settled(args.steps - 1)
    source = StoreMetricSource(d)
    t0 = time.perf_counter()
    first = source.new_points(ids)
    cold = time.perf_counter() - t0
    assert sum(len(p) for c in first.values() for p in c.values()) == 3 * args.steps * args.trials
    idle, grow = [], []
    for i in range(args.repeat):
        t0 = time.perf_counter()
        assert source.new_points(ids) == {}
        idle.append(time.perf_counter() - t0)
        for r in runs:
            r.log({"loss": 0.0, "acc": 1.0, "lr": 0.1})
            r.flush()
        settled(args.steps + i)
        t0 = time.perf_counter()
        got = source.new_points(ids)
        grow.append(time.perf_counter() - t0)
        assert len(got) == len(ids) and all(len(c["loss"]) == 1 for c in got.values())
    for r in runs:
        r.finish()
    print(f"{args.trials} trials x {args.steps} steps x 3 metrics: first poll "
          f"{cold * 1e3:.0f} ms; idle poll median {statistics.median(idle) * 1e3:.1f} ms; "
          f"poll after one new point per trial median {statistics.median(grow) * 1e3:.1f} ms")


def _last_step(api: object, run_id: str) -> int:
    from assay.errors import NotFoundError

    try:
        return int(api.run(run_id).last_step)  # type: ignore[attr-defined]
    except NotFoundError:
        return -1


if __name__ == "__main__":
    main()
