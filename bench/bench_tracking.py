"""Tracking benchmark: assay against wandb (offline) and mlflow (local store, async).

Prints, per tracker (each measured in its own subprocess so RSS is its own):
  - log_us:   time of ``log()`` on the caller thread per step of 5 scalars (median of repeats)
  - summary_read_us: one read of ``run.summary["loss"]`` during training (mlflow has none)
  - finish_s: time of ``finish()`` right after the last step
  - pts_s:    points per second from the first ``log()`` to every point queryable
  - rss_mb:   peak RSS added to the training process by importing and using the tracker
  - +children: the same, counting the tracker's helper processes too (assay's ingest daemon,
               wandb's service); assay's daemon is shared by every run in a data directory
and for assay the time to read back a 1,000,000-point history.

    .venv/bin/python bench/bench_tracking.py            # 100,000 steps; peers at 20,000
    .venv/bin/python bench/bench_tracking.py --quick    # smaller, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

CHILD_COMMON = textwrap.dedent(
    """
    import json, os, sys, threading, time
    import psutil
    proc = psutil.Process()
    peak = [0, 0]  # this process; this process + its children (daemons, services)
    stop = threading.Event()
    def tree_rss():
        total = proc.memory_info().rss
        for c in proc.children(recursive=True):
            try:
                total += c.memory_info().rss
            except psutil.Error:
                pass
        return total
    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            peak[1] = max(peak[1], tree_rss())
            time.sleep(0.005)
    steps = int(sys.argv[1]); out = {}
    """
)

ASSAY = CHILD_COMMON + textwrap.dedent(
    """
    base = proc.memory_info().rss
    import assay
    threading.Thread(target=watch, daemon=True).start()
    if os.environ.get("BENCH_WARM") == "1":  # a run before: the ingest daemon is up already
        tc = time.perf_counter()
        assay.init(project="warmup", system_metrics_interval=None).finish()
        out["cold_finish_s"] = time.perf_counter() - tc
    run = assay.init(project="bench", config={"lr": 0.1}, system_metrics_interval=None)
    t0 = time.perf_counter()
    log = run.log
    for i in range(steps):
        log({"loss": 1.0 / (i + 1), "acc": i * 1e-6, "lr": 0.1, "grad_norm": 2.5, "tokens": float(i)}, step=i)
    t1 = time.perf_counter()
    reads = min(steps, 20_000)  # `if run.summary["loss"] < best`, as a training loop reads it
    for _ in range(reads):
        run.summary["loss"]
    out["summary_read_us"] = (time.perf_counter() - t1) / reads * 1e6
    t1 = time.perf_counter()
    run.finish()
    t2 = time.perf_counter()
    stop.set()  # the tracker's footprint; reading back below is the reader's
    h = assay.Api().history(run.id)
    t3 = time.perf_counter()
    assert h.height == steps * 5, h.height
    out.update(log_us=(t1 - t0) / steps * 1e6, finish_s=t2 - t1, pts_s=steps * 5 / (t3 - t0),
               rss_mb=(peak[0] - base) / 2**20, tree_mb=(peak[1] - base) / 2**20)
    print(json.dumps(out))
    """
)

WANDB = CHILD_COMMON + textwrap.dedent(
    """
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DISABLE_GIT="true",
                      WANDB_DISABLE_CODE="true", WANDB__DISABLE_STATS="true")
    base = proc.memory_info().rss
    import wandb
    threading.Thread(target=watch, daemon=True).start()
    run = wandb.init(project="bench", config={"lr": 0.1}, dir=os.environ["BENCH_DIR"],
                     settings=wandb.Settings(x_disable_stats=True, x_disable_meta=True))
    t0 = time.perf_counter()
    for i in range(steps):
        run.log({"loss": 1.0 / (i + 1), "acc": i * 1e-6, "lr": 0.1, "grad_norm": 2.5, "tokens": float(i)}, step=i)
    t1 = time.perf_counter()
    reads = min(steps, 20_000)
    for _ in range(reads):
        run.summary["loss"]
    out["summary_read_us"] = (time.perf_counter() - t1) / reads * 1e6
    t1 = time.perf_counter()
    run.finish()
    t2 = time.perf_counter()
    stop.set()
    # offline runs are not queryable until `wandb sync` to a server: pts_s is log()+finish()
    out.update(log_us=(t1 - t0) / steps * 1e6, finish_s=t2 - t1, pts_s=steps * 5 / (t2 - t0),
               rss_mb=(peak[0] - base) / 2**20, tree_mb=(peak[1] - base) / 2**20, note="offline: not queryable without a server")
    print(json.dumps(out))
    """
)

MLFLOW = CHILD_COMMON + textwrap.dedent(
    """
    base = proc.memory_info().rss
    import mlflow
    from mlflow.tracking import MlflowClient
    uri = "sqlite:///" + os.path.join(os.environ["BENCH_DIR"], "mlflow.db")
    mlflow.set_tracking_uri(uri)
    threading.Thread(target=watch, daemon=True).start()
    run = mlflow.start_run()
    mlflow.log_params({"lr": 0.1})
    t0 = time.perf_counter()
    for i in range(steps):
        mlflow.log_metrics({"loss": 1.0 / (i + 1), "acc": i * 1e-6, "lr": 0.1, "grad_norm": 2.5,
                            "tokens": float(i)}, step=i, synchronous=False)
    t1 = time.perf_counter()
    mlflow.end_run()
    t2 = time.perf_counter()
    n = len(MlflowClient(uri).get_metric_history(run.info.run_id, "loss"))
    t3 = time.perf_counter()
    stop.set()
    assert n == steps, n
    out.update(log_us=(t1 - t0) / steps * 1e6, finish_s=t2 - t1, pts_s=steps * 5 / (t3 - t0),
               rss_mb=(peak[0] - base) / 2**20, tree_mb=(peak[1] - base) / 2**20)
    print(json.dumps(out))
    """
)

READ = textwrap.dedent(
    """
    import json, statistics, sys, time
    import assay
    n = int(sys.argv[1])
    run = assay.init(project="bench-read", system_metrics_interval=None, capture=False)
    for i in range(n // 5):
        run.log({"a": 1.0, "b": 2.0, "c": float(i), "d": 0.5, "e": -1.0}, step=i)
    run.finish()
    api = assay.Api()
    times = []
    for _ in range(7):
        t0 = time.perf_counter(); h = api.history(run.id); times.append(time.perf_counter() - t0)
        assert h.height == n
    t0 = time.perf_counter(); h1 = api.history(run.id, keys=["c"]); one = time.perf_counter() - t0
    print(json.dumps({"read_ms": statistics.median(times) * 1e3, "read_one_key_ms": one * 1e3}))
    """
)


def _run(code: str, steps: int, env_extra: dict[str, str] | None = None) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "ASSAY_DIR": d, "BENCH_DIR": d, **(env_extra or {})}
        out = subprocess.run([sys.executable, "-c", code, str(steps)], capture_output=True,
                             text=True, env=env, timeout=1800, check=False)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        return json.loads(out.stdout.strip().splitlines()[-1])


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "note"}


def _have(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--peer-steps", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--read-points", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.steps, a.peer_steps, a.repeats, a.read_points = 20_000, 2_000, 2, 100_000
    results: dict[str, dict[str, float]] = {}
    results["assay"] = _median([_run(ASSAY, a.steps, {"BENCH_WARM": "1"})
                                for _ in range(a.repeats)])
    peers = {"wandb": WANDB, "mlflow": MLFLOW}
    for name, code in peers.items():
        if not _have(name):
            print(f"{name}: not installed (pip install -e .[peers]); skipped")
            continue
        try:
            results[name] = _median([_run(code, a.peer_steps) for _ in range(max(1, a.repeats // 2))])
        except Exception as e:  # noqa: BLE001 - a peer failing must not hide our figures
            print(f"{name}: failed: {str(e)[-400:]}")
    read = _run(READ, a.read_points)
    print(f"\nsteps of 5 scalars: assay {a.steps:,}, peers {a.peer_steps:,}; medians of repeats")
    print(f"{'tracker':8} {'log us/step':>12} {'summary us':>11} {'finish s':>9} {'points/s':>12} {'RSS MB':>8} {'+children':>10}")
    for name, r in results.items():
        cell = f"{r['summary_read_us']:11.2f}" if "summary_read_us" in r else f"{'-':>11}"
        print(f"{name:8} {r['log_us']:12.2f} {cell} {r['finish_s']:9.3f} {r['pts_s']:12,.0f} {r['rss_mb']:8.1f} {r['tree_mb']:10.1f}")
    print(f"assay finish of a tiny first run, ingest daemon starting cold: "
          f"{results['assay']['cold_finish_s']:.2f} s")
    base = results["assay"]["log_us"]
    for name, r in results.items():
        if name != "assay":
            print(f"log() speed-up of assay over {name}: {r['log_us'] / base:.0f}x")
    print(f"read {a.read_points:,}-point history: {read['read_ms']:.1f} ms (median of 7); "
          f"one key of it: {read['read_one_key_ms']:.1f} ms")


if __name__ == "__main__":
    main()
