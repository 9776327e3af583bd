"""Lineage query latency on graphs of 10k, 100k and 1M nodes (real LanceDB, BTREE indices).

The graph is a pipeline repeated: a prep run produces a dataset version, training runs
consume it and each produces a model, an eval run consumes each model. Queries:
  up:   from a model, everything it was made from (3 hops)
  down: from a dataset version, everything built on it (impact analysis, 3 hops)

    .venv/bin/python bench/bench_lineage.py [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa


def build(root: Path, nodes: int, fanout: int = 20) -> tuple[list[str], list[str]]:
    from assay.store.lance import LanceStore
    from assay.store.schemas import EDGES_SCHEMA

    store = LanceStore(root)
    # per pipeline: 1 prep run + 1 dataset + fanout*(train run + model + eval run)
    per = 2 + 3 * fanout
    pipelines = max(1, nodes // per)
    src: list[str] = []
    dst: list[str] = []
    kind: list[str] = []
    models, datasets = [], []
    for p in range(pipelines):
        ds = f"artifact:ds{p}:v0"
        datasets.append(ds)
        src.append(f"run:prep{p}")
        dst.append(ds)
        kind.append("produced")
        for f in range(fanout):
            tr, m, ev = f"run:t{p}x{f}", f"artifact:m{p}x{f}:v0", f"run:e{p}x{f}"
            src += [ds, tr, m]
            dst += [tr, m, ev]
            kind += ["consumed", "produced", "consumed"]
            models.append(m)
    n = len(src)
    tbl = store.write_table("edges")
    for i in range(0, n, 500_000):
        tbl.add(pa.table({"src": src[i:i + 500_000], "dst": dst[i:i + 500_000],
                          "kind": kind[i:i + 500_000], "created_at": [0.0] * len(src[i:i + 500_000])},
                         schema=EDGES_SCHEMA))
    store.compact()
    return models, datasets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    from assay.store.lance import LanceStore
    from assay.store.lineage import lineage

    print(f"{'nodes':>10} {'edges':>10} {'build s':>8} {'up ms p50':>10} {'up p99':>8} "
          f"{'down ms p50':>12} {'down p99':>9} {'down nodes':>11}")
    for size in a.sizes:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            models, datasets = build(Path(d), size)
            built = time.perf_counter() - t0
            store = LanceStore(d)
            edges = store.table("edges").count_rows()
            ups, downs = [], []
            got = 0
            for i in range(a.repeats):
                m = models[(i * 7919) % len(models)]
                t0 = time.perf_counter()
                nodes, _ = lineage(store, m, "up")
                ups.append(time.perf_counter() - t0)
                if nodes.height != 4:
                    raise SystemExit(f"up from {m} found {nodes.height} nodes, expected 4")
                ds = datasets[(i * 104729) % len(datasets)]
                t0 = time.perf_counter()
                nodes, _ = lineage(store, ds, "down")
                downs.append(time.perf_counter() - t0)
                got = nodes.height
            q = statistics.quantiles
            print(f"{size:>10,} {edges:>10,} {built:8.1f} {statistics.median(ups) * 1e3:10.1f} "
                  f"{q(ups, n=100)[98] * 1e3:8.1f} {statistics.median(downs) * 1e3:12.1f} "
                  f"{q(downs, n=100)[98] * 1e3:9.1f} {got:>11}")


if __name__ == "__main__":
    main()
