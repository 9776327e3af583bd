"""Benchmark of the API server: prints figures (it is not a test).

1. Remote-logging ingest over HTTP: 50 concurrent clients post WAL batches (one metrics
   record of 100 steps x 5 keys each) to a server in its own process; throughput and
   request latency p50/p99, then how long until the ingest daemon made everything queryable.
2. The runs query at 10,000 runs (filter + sort by a summary metric + one page), p50/p99 over
   HTTP, after the first (cold) call.
3. A 1,000,000-point curve downsampled to 1,000 points (LTTB and min/max; LTTB also without
   wall-clock times), p50/p99 over HTTP, stored as 100 chunks (a fast logger) and as 10,000
   chunks (a slow one).
4. ``assay.Api(server=...)`` against ``assay.Api(dir)`` on the same data: ``runs()`` of all
   10,000 runs (pages of 1,000 over HTTP) and ``history()`` of the 1,000,000-point curve at
   full resolution (Arrow chunks), medians and the remote/local ratio.

Run: ``nice -n 10 .venv/bin/python bench/bench_api.py [--clients 50] [--batches 40]
[--skip-ingest]``.
Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
from _server import start_server  # bench/ is on sys.path when run as a script
from assay.api.auth import TokenStore
from assay.api.store_ext import ServerStore
from assay.store.ingest import IngestLock
from assay.store.records import RunRecord, RunStatus
from assay.store.schemas import METRICS_SCHEMA
from assay.store.wal import encode

MEDIA = {"Content-Type": "application/x-assay-wal"}


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def bench_ingest(root: Path, clients: int, batches: int) -> None:
    token = TokenStore(root).create("bench", "researcher")[0]
    proc, url = start_server(root)
    lat: list[float] = []
    lock = threading.Lock()
    keys = ["loss", "acc", "lr", "grad_norm", "tokens"]

    def client(i: int) -> None:
        rid = f"bench{i:05d}"
        frames = [encode({"k": "run", "seq": 1, "time": time.time(), "run_id": rid,
                          "project": "bench", "name": rid, "config": {"i": i}, "host": "b",
                          "pid": i, "attach": 0})]
        for b in range(batches):
            steps = list(range(b * 100, (b + 1) * 100))
            frames.append(encode({"k": "metrics", "seq": b + 2, "chunks": [{
                "keys": keys, "step": steps, "time": [time.time()] * 100,
                "vals": [[random.random() for _ in steps] for _ in keys]}]}))
        frames.append(encode({"k": "status", "seq": batches + 2, "time": time.time(),
                              "status": "completed"}))
        mine = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}", **MEDIA},
                          timeout=60) as c:
            body = frames[0] + frames[1]
            for j, fr in enumerate([body, *frames[2:]]):
                t = time.perf_counter()
                r = c.post(f"/api/runs/{rid}/records", content=fr)
                mine.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(r.text)
        with lock:
            lat.extend(mine)

    try:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        points = clients * batches * 100 * len(keys)
        print(f"ingest over HTTP: {clients} clients x {batches} batches of 500 points: "
              f"{len(lat)} requests in {wall:.2f} s = {len(lat) / wall:,.0f} req/s, "
              f"{points / wall:,.0f} points/s; latency p50 {pct(lat, 50):.1f} ms, "
              f"p99 {pct(lat, 99):.1f} ms")
        h = {"Authorization": f"Bearer {token}"}
        while True:
            r = httpx.get(f"{url}/api/runs", params={"project": "bench", "status": "completed",
                                                     "limit": 1}, headers=h, timeout=60).json()
            if r["total"] == clients:
                break
            time.sleep(0.2)
        print(f"  all {clients} runs completed and queryable {time.perf_counter() - t0:.2f} s "
              "after the first request (ingest daemon included)")
    finally:
        proc.terminate()
        proc.wait(30)


def seed_runs(root: Path, n: int) -> None:
    store = ServerStore(root)
    now = time.time()
    rng = random.Random(0)
    runs = [RunRecord(
        run_id=f"r{i:07d}", project=f"proj{i % 10}", name=f"run-{i}",
        status=rng.choice(list(RunStatus)), created_at=now - i, updated_at=now - i,
        tags=("baseline",) if i % 7 == 0 else ("sweep",),
        config={"lr": 10 ** rng.uniform(-5, -1), "depth": rng.randint(1, 12),
                "optimizer": {"name": rng.choice(["adam", "sgd"]), "momentum": 0.9}},
        summary={k: {"last": rng.random(), "min": 0.0, "max": 1.0, "step": 1000}
                 for k in ("train/loss", "val/loss", "val/acc", "lr")},
        env={"python": "3.11", "packages": [f"pkg{j}==1.0" for j in range(200)]})
        for i in range(n)]
    with IngestLock(root):
        store.upsert_runs(runs)
        store.compact()


def seed_curve(root: Path, run_id: str, n: int, chunks: int) -> None:
    """A run with one n-point curve stored as ``chunks`` chunk rows (one per ingest pass)."""
    per = n // chunks
    rows: dict[str, list] = {c: [] for c in METRICS_SCHEMA.names}
    for c in range(chunks):
        s = np.arange(c * per, (c + 1) * per)
        vals = np.sin(s / 5000) + np.random.default_rng(c).normal(0, 0.05, per)
        for col, v in (("run_id", run_id), ("key", "loss"), ("seq", c + 2),
                       ("step_min", int(s[0])), ("step_max", int(s[-1])), ("step", s),
                       ("value", vals), ("time", 1e9 + s * 0.01)):
            rows[col].append(v)
    store = ServerStore(root)
    summary = {"loss": {"last": float(vals[-1]), "min": -1.0, "max": 1.0, "step": n - 1}}
    with IngestLock(root):
        store.append_metrics(pa.table(rows, schema=METRICS_SCHEMA))
        store.upsert_runs([RunRecord(run_id=run_id, project="curves", name=run_id,
                                     status=RunStatus.COMPLETED, created_at=1.0, updated_at=2.0,
                                     summary=summary, last_step=n - 1,
                                     ingested_seq=chunks + 1)])
        store.compact()


def bench_reads(root: Path, runs: int, repeats: int) -> None:
    t = time.perf_counter()
    seed_runs(root, runs)
    print(f"seeded {runs:,} runs in {time.perf_counter() - t:.1f} s")
    for chunks in (100, 10_000):
        t = time.perf_counter()
        seed_curve(root, f"curve{chunks}", 1_000_000, chunks)
        print(f"seeded a 1,000,000-point curve as {chunks:,} chunks in "
              f"{time.perf_counter() - t:.1f} s")
    token = TokenStore(root).create("bench-viewer", "viewer")[0]
    proc, url = start_server(root)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=120) as c:
            queries = [
                {"sort": "summary.val/acc", "order": "desc", "limit": 50},
                {"project": "proj3", "filter": ["config.lr<0.001", "summary.val/loss<0.5"],
                 "sort": "config.depth", "limit": 50},
                {"status": "completed", "tag": "sweep", "sort": "created_at", "limit": 100,
                 "offset": 2000},
            ]
            t = time.perf_counter()
            total = c.get("/api/runs", params=queries[0]).json()["total"]
            print(f"runs query, first call (parses {total:,} runs): "
                  f"{(time.perf_counter() - t) * 1000:.0f} ms")
            for q in queries:
                lat = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    r = c.get("/api/runs", params=q)
                    lat.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text
                print(f"runs query {q}: total {r.json()['total']:,}; p50 {pct(lat, 50):.1f} ms, "
                      f"p99 {pct(lat, 99):.1f} ms")
            for chunks in (100, 10_000):
                for method, with_time in (("lttb", True), ("minmax", True), ("lttb", False)):
                    lat = []
                    for _ in range(repeats):
                        t = time.perf_counter()
                        r = c.get(f"/api/runs/curve{chunks}/history",
                                  params={"key": "loss", "max_points": 1000, "method": method,
                                          "time": str(with_time).lower()})
                        lat.append(time.perf_counter() - t)
                    s = r.json()["series"]["loss"]
                    print(f"1,000,000-point curve ({chunks:,} chunks) -> {s['returned']} points "
                          f"by {method}{'' if with_time else ', time=false'}: "
                          f"p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms (HTTP included)")
        bench_sdk_reads(root, url, token, max(3, repeats // 8))
    finally:
        proc.terminate()
        proc.wait(30)


def bench_sdk_reads(root: Path, url: str, token: str, repeats: int) -> None:
    """The same reads through ``assay.Api``: from the data directory and from the server."""
    from assay import Api

    local = Api(root)
    with Api(server=url, token=token) as remote:
        cases = [("runs() of every run", lambda a: a.runs())]
        cases += [(f"history() of the 1,000,000-point curve ({chunks:,} chunks)",
                   lambda a, c=chunks: a.history(f"curve{c}")) for chunks in (100, 10_000)]
        for what, call in cases:
            times = {}
            for name, api in (("local", local), ("server", remote)):
                lat = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    df = call(api)
                    lat.append(time.perf_counter() - t)
                times[name] = pct(lat, 50)
                rows = df.height
            print(f"Api.{what}: {rows:,} rows; local p50 {times['local']:.0f} ms, "
                  f"server p50 {times['server']:.0f} ms "
                  f"(x{times['server'] / times['local']:.1f}, {repeats} runs each)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--skip-ingest", action="store_true", help="only the read benchmarks")
    a = ap.parse_args()
    os.environ.setdefault("ASSAY_INGESTD_IDLE", "5")
    base = Path(tempfile.mkdtemp(prefix="assay-bench-api-"))
    try:
        print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
        if not a.skip_ingest:
            bench_ingest(base / "ingest", a.clients, a.batches)
        bench_reads(base / "reads", a.runs, a.repeats)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
