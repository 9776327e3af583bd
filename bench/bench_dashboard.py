"""Benchmark of the fleet dashboard in headless Chromium: time to first render (prints figures;
it is not a test).

1. The overview at 10,000 runs (written straight through ``LanceStore.upsert_runs``, 5 %
   running with ``sys/`` summaries, plus agents with decisions): from navigation start to the
   ``assay:overview-rendered`` performance mark, which the page sets once the stat cards, the
   agents and the first page of runs are in the DOM.
2. A run page whose curve has 1,000,000 points (logged with the SDK): navigation start to
   ``assay:run-chart-rendered``, set after uPlot drew the (server-downsampled) curve.
3. (Also) the runs table at 10,000 runs sorted by a summary metric: ``assay:runs-rendered``.

Each is measured cold (a fresh browser context: empty cache, every module fetched) and warm
(reload in the same context: modules revalidated by ETag). The pages also set
``assay:main-start`` (code loaded) and ``assay:run-page-start`` marks, for profiling. The server runs in its own process,
as ``assay server`` does. Target: <= 500 ms each.

Run: ``nice -n 10 .venv/bin/python bench/bench_dashboard.py [--runs 10000] [--points 1000000]
[--repeats 9]``. Needs /usr/bin/chromium. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _server import start_server  # bench/ is on sys.path when run as a script

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def seed_runs(root: Path, n: int) -> None:
    """n runs in 20 projects, 5 % running (with sys/ summaries), configs and summaries."""
    from assay.store.ingest import IngestLock
    from assay.store.lance import LanceStore
    from assay.store.records import RunRecord, RunStatus

    rng = random.Random(0)
    now = time.time()
    runs = []
    for i in range(n):
        status = (RunStatus.RUNNING if i % 20 == 0 else RunStatus.FAILED if i % 37 == 0
                  else RunStatus.COMPLETED)
        summary = {k: {"last": rng.random(), "min": 0.0, "max": 1.0, "step": 1000}
                   for k in ("train/loss", "val/loss", "val/acc")}
        if status is RunStatus.RUNNING:
            for k, v in (("sys/cpu.process_percent", rng.uniform(50, 400)),
                         ("sys/cpu.system_percent", rng.uniform(20, 100)),
                         ("sys/memory.process_rss_mb", rng.uniform(500, 8000)),
                         ("sys/memory.system_used_percent", rng.uniform(20, 90)),
                         ("sys/gpu.0.utilization_percent", rng.uniform(0, 100)),
                         ("sys/gpu.0.memory_used_mb", rng.uniform(1000, 70000)),
                         ("sys/gpu.0.memory_total_mb", 81920.0)):
                summary[k] = {"last": v, "min": v, "max": v, "step": 10}
        runs.append(RunRecord(
            run_id=f"r{i:07d}", project=f"proj{i % 20}", name=f"run-{i}", status=status,
            created_at=now - i * 5, updated_at=now - i * 3, host=f"node{i % 40:02d}",
            finished_at=None if status is RunStatus.RUNNING else now - i * 3,
            tags=("sweep",), last_step=1000, error="RuntimeError: boom" if i % 37 == 0 else "",
            config={"lr": 10 ** rng.uniform(-5, -1), "depth": rng.randint(1, 12),
                    "optimizer": {"name": rng.choice(["adam", "sgd"]), "momentum": 0.9}},
            summary=summary))
    store = LanceStore(root)
    with IngestLock(root):
        for i in range(0, n, 5000):
            store.upsert_runs(runs[i:i + 5000])
        store.compact()


def seed_agents(root: Path, agents: int = 6, decisions: int = 200) -> None:
    from assay.store.control import AgentRow, Decision, LanceControlStore
    from assay.store.ingest import IngestLock
    from assay.store.lance import LanceStore

    ctl = LanceControlStore(LanceStore(root), IngestLock(root))
    now = time.time()
    for a in range(agents):
        aid = f"agbench{a:03d}"
        trials = {f"r{(a * 20 + t) * 20:07d}": {"config": {"lr": 0.01}, "status": "completed",
                                               "final": 0.5 + t / 100, "origin": "searcher",
                                               "reason": "", "curve": []} for t in range(20)}
        spec = {"name": f"objective-{a}", "project": f"proj{a}", "metric": "val/acc",
                "mode": "max", "budget": {"trials": 40, "gpu_hours": 8}}
        ctl.save_agent(AgentRow(aid, f"objective-{a}", f"proj{a}", spec,
                                state={"trials": trials, "best": next(iter(trials)),
                                       "concurrency": 4}, hlc=str(a)))
        ctl.add_decisions([Decision(aid, f"proj{a}", f"t{d}", "launch" if d % 3 else "stop",
                                    f"decision {d}", {"acq": d / decisions}, f"{a:03d}{d:06d}",
                                    now - decisions + d) for d in range(decisions)])


def seed_curve(root: Path, n: int) -> str:
    """One run logging an n-point curve through the SDK; returns its id."""
    import assay

    t = time.perf_counter()
    run = assay.init(project="curves", name="million", dir=root, system_metrics_interval=0,
                     capture=False)
    for i in range(n):
        run.log({"loss": 1.0 / (1 + i * 1e-4) + (i % 97) * 1e-4}, step=i)
    logged = time.perf_counter() - t
    run.finish()
    print(f"  logged {n:,} points in {logged:.1f} s; finished (queryable) after "
          f"{time.perf_counter() - t:.1f} s")
    return run.id


def measure(browser: Any, url: str, token: str, hash_: str, mark: str,
            repeats: int) -> dict[str, Any]:
    """Cold (new context per load) and warm (reload) times from navigation to ``mark``."""
    script = f"sessionStorage.setItem('assay.token', {token!r});"
    read = ("mark => { const m = performance.getEntriesByName(mark)[0]; "
            "const api = performance.getEntriesByType('resource')"
            ".filter(r => r.name.includes('/api/'))"
            ".map(r => [new URL(r.name).pathname, Math.round(r.duration)]); "
            "return [m.startTime, api]; }")
    wait = f"() => performance.getEntriesByName({mark!r}).length > 0"
    cold, warm, api_times = [], [], []
    for _ in range(repeats):
        ctx = browser.new_context(viewport={"width": 1440, "height": 900})
        ctx.add_init_script(script)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("console", lambda m, errors=errors: errors.append(m.text)
                if m.type == "error" else None)
        page.goto(f"{url}/{hash_}")
        page.wait_for_function(wait, timeout=60_000)
        t, api = page.evaluate(read, mark)
        cold.append(t)
        api_times.append(api)
        for _ in range(2):
            page.reload()
            page.wait_for_function(wait, timeout=60_000)
            warm.append(page.evaluate(read, mark)[0])
        if errors:
            raise RuntimeError(f"console errors on {hash_}: {errors}")
        ctx.close()
    return {"cold_ms": cold, "warm_ms": warm, "api_ms_last_cold": api_times[-1]}


def summary(name: str, r: dict[str, Any]) -> str:
    c, w = r["cold_ms"], r["warm_ms"]
    return (f"{name:<34} cold median {statistics.median(c):6.0f} ms (min {min(c):4.0f}, "
            f"max {max(c):4.0f})   warm median {statistics.median(w):6.0f} ms   "
            f"API: {', '.join(f'{p} {d} ms' for p, d in r['api_ms_last_cold'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    a = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: install Debian's chromium")
    from assay.api.auth import TokenStore
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="assay-bench-dash-")) / "data"
    root.mkdir()
    os.environ["ASSAY_DIR"] = str(root)
    print(f"data directory {root}")
    t = time.perf_counter()
    seed_runs(root, a.runs)
    seed_agents(root)
    print(f"  wrote {a.runs:,} runs and 6 agents in {time.perf_counter() - t:.1f} s")
    run_id = seed_curve(root, a.points)
    token = TokenStore(root).create("bench", "supervisor")[0]
    proc, url = start_server(root)
    results: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            c.get("/api/runs", params={"limit": 1}).raise_for_status()  # runs index parsed
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            results["overview"] = measure(browser, url, token, "#/", "assay:overview-rendered",
                                          a.repeats)
            results["run_1m"] = measure(browser, url, token, f"#/runs/{run_id}",
                                        "assay:run-chart-rendered", a.repeats)
            results["runs_page"] = measure(browser, url, token, "#/runs?sort=summary.val/acc",
                                           "assay:runs-rendered", a.repeats)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
        if not a.keep:
            shutil.rmtree(root.parent, ignore_errors=True)
    print(f"\ntime to first render, headless Chromium, {a.repeats} loads each "
          f"(cold: new context; warm: reload), target <= 500 ms:")
    print(summary(f"overview at {a.runs:,} runs", results["overview"]))
    print(summary(f"run page, {a.points:,}-point curve", results["run_1m"]))
    print(summary(f"runs table at {a.runs:,} runs (by val/acc)", results["runs_page"]))
    out = Path(__file__).resolve().parent / "results" / "dashboard.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"runs": a.runs, "points": a.points, "repeats": a.repeats,
                               **results}, indent=1))
    print(f"raw figures: {out}")


if __name__ == "__main__":
    main()
