"""Ingesting a WAL backlog: time and peak memory of the ingester on one large segment.

A run that logged while no ingester ran (the daemon down, a machine offline) leaves a
segment of many GB. This writes one such segment (scalar metrics in the SDK's columnar
records), then ingests it into a LanceDB store in a fresh subprocess, once in bounded
batches (the default, ``INGEST_BATCH_BYTES``) and once in a single pass (the ingester before
batching), and prints wall time and the subprocess's peak RSS for each.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ingest_backlog.py            # ~512 MB
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ingest_backlog.py --mb 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    from assay.store.ingest import Ingester
    from assay.store.lance import LanceStore
    data_dir, seg, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    store = LanceStore(data_dir)
    t0 = time.perf_counter()
    st = Ingester(store).ingest([seg], batch_bytes=batch)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before any read back
    print(json.dumps({"s": dt, "rss_mb": rss, "points": st.points}))
""")


def write_segment(path: Path, mb: int) -> int:
    from assay.store.wal import WalWriter

    w = WalWriter(path)
    w.append([{"k": "run", "seq": 1, "time": 0.0, "run_id": "backlog", "project": "bench",
               "name": "backlog", "config": {}, "attach": 0}])
    keys = ["loss", "acc", "lr", "grad_norm", "step_time"]
    seq, step, per = 2, 0, 1000  # a record per 1,000 steps, as the writer batches them
    while w.bytes_written < mb << 20:
        steps = list(range(step, step + per))
        w.append([{"k": "metrics", "seq": seq, "chunks": [{
            "keys": keys, "step": steps, "time": [1.7e9 + s * 0.01 for s in steps],
            "vals": [[1.0 / (s + 1) + 0.001 * j for s in steps] for j in range(len(keys))]}]}],
            sync=False)
        seq, step = seq + 1, step + per
    w.append([{"k": "status", "seq": seq, "time": 0.0, "status": "completed"}])
    w.close()
    return step * len(keys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=512, help="segment size in MiB")
    args = ap.parse_args()
    from assay.store.ingest import INGEST_BATCH_BYTES
    from assay.store.wal import segment_path

    with tempfile.TemporaryDirectory() as tmp:
        seg = segment_path(Path(tmp) / "wal", "backlog", 0)
        points = write_segment(seg, args.mb)
        size = seg.stat().st_size
        print(f"segment: {size / 2**20:.0f} MiB, {points:,} points")
        print(f"{'ingest':28s} {'s':>7s} {'peak RSS MiB':>13s} {'points':>12s}")
        for label, batch in ((f"batches of {INGEST_BATCH_BYTES >> 20} MiB", INGEST_BATCH_BYTES),
                             ("one pass", size * 2)):
            data_dir = Path(tmp) / f"d{batch}"
            out = subprocess.run([sys.executable, "-c", CHILD, str(data_dir), str(seg), str(batch)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{label:28s} {r['s']:7.1f} {r['rss_mb']:13.0f} {r['points']:12,}")


if __name__ == "__main__":
    main()
