"""What an agent pays each step to read its running trials' new points
(``StoreMetricSource.new_points``) from a real LanceDB store, for long curves.

Trials log ``--steps`` points of three metrics each; the agent then polls all of them:
once with nothing new (the common case between epochs) and once after every trial stored
one more point. Medians of ``--repeat`` polls, in ms per poll of all trials. ``--server``
also polls the same trials through an ``assay server`` (a subprocess on 127.0.0.1 serving
the directory), as an agent whose trials log to ``$ASSAY_SERVER`` does: one
``GET /api/runs/positions`` for all trials (one ``GET /api/runs/{id}`` per trial before),
and ``/chunks?seq_after=`` for those that grew.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_metric_source.py [--server]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--server", action="store_true",
                    help="also poll through an assay server serving the directory")
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
    sources = {"data directory": StoreMetricSource(d)}
    proc = None
    if args.server:
        import sys
        from pathlib import Path

        from assay.api.auth import TokenStore

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _server import start_server

        token = TokenStore(Path(d)).create("bench", "viewer")[0]
        proc, url = start_server(Path(d))
        sources["server"] = StoreMetricSource(server=url, token=token)
    try:
        figures: dict[str, dict[str, Any]] = {
            name: {"cold": 0.0, "idle": [], "grow": []} for name in sources}
        for name, source in sources.items():
            t0 = time.perf_counter()
            first = source.new_points(ids)
            figures[name]["cold"] = time.perf_counter() - t0
            assert sum(len(p) for c in first.values() for p in c.values()) == \
                3 * args.steps * args.trials
        step = args.steps - 1
        for _ in range(args.repeat):
            for name, source in sources.items():
                t0 = time.perf_counter()
                assert source.new_points(ids) == {}
                figures[name]["idle"].append(time.perf_counter() - t0)
            step += 1
            for r in runs:
                r.log({"loss": 0.0, "acc": 1.0, "lr": 0.1})
                r.flush()
            settled(step)
            for name, source in sources.items():
                t0 = time.perf_counter()
                got = source.new_points(ids)
                figures[name]["grow"].append(time.perf_counter() - t0)
                assert len(got) == len(ids) and all(len(c["loss"]) == 1 for c in got.values())
    finally:
        for r in runs:
            r.finish()
        if proc is not None:
            proc.kill()
            proc.wait(10)
    print(f"{args.trials} trials x {args.steps} steps x 3 metrics, medians of {args.repeat} polls:")
    for name, f in figures.items():
        print(f"  {name:>14}: first poll {f['cold'] * 1e3:.0f} ms; idle poll "
              f"{statistics.median(f['idle']) * 1e3:.1f} ms; poll after one new point per "
              f"trial {statistics.median(f['grow']) * 1e3:.1f} ms")


def _last_step(api: object, run_id: str) -> int:
    from assay.errors import NotFoundError

    try:
        return int(api.run(run_id).last_step)  # type: ignore[attr-defined]
    except NotFoundError:
        return -1


if __name__ == "__main__":
    main()
