"""Blob store and digest benchmark: what storing and verifying artifacts costs.

Prints, for the local blob store (with and without fsync) and for S3 on loopback (moto's
server in a subprocess, with s3fs's own unhashed put/get of the same file as the ceiling):
  - put_file of one big file (MB/s, content new to the store) and a repeat put of the same
    file (MB/s: hashing plus one existence check, nothing uploaded);
  - get_to_path of that file, verifying its digest while copying (MB/s);
  - build_manifest + materialize of a tree of small files (files/s and MB/s);
the same through a real ``assay server`` on loopback (a run started with
``assay.init(server=...)``: ``log_artifact`` hashes, asks what the server lacks, streams it,
commits; a repeat log sends nothing; ``download()`` verifies every digest), next to
``log_artifact`` of a local run;
and rows_digest over 1,000,000 metric rows (polars, pyarrow, a list of tuples), with plain
SHA-256 and file copy speeds of this machine for reference. Each figure is the median of
``--repeats`` runs.

    nice -n 10 .venv/bin/python bench/bench_blobs.py              # 256 MB, 1,000 files
    nice -n 10 .venv/bin/python bench/bench_blobs.py --quick      # 32 MB, 200 files
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
from assay.store.blobs import BlobStore, FsspecBlobStore, LocalBlobStore
from assay.store.canonical import rows_digest
from assay.store.manifests import build_manifest, materialize

MB = 1e6
LOOPBACK_ENV = {
    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
}


def median_time(fn: Callable[[], object], repeats: int,
                setup: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    os.environ.update(LOOPBACK_ENV)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(200):
        try:
            opener.open(endpoint + "/moto-api/", timeout=1).read()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise SystemExit("moto server did not start")
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="bench")
    return proc, endpoint


def bench_store(name: str, make: Callable[[], BlobStore], big: Path, small: Path,
                work: Path, repeats: int) -> None:
    size = big.stat().st_size
    small_bytes = sum(p.stat().st_size for p in small.iterdir())
    n_small = len(os.listdir(small))
    state: dict[str, object] = {}

    def fresh() -> None:
        state["store"] = make()

    def put() -> None:
        state["ref"] = state["store"].put_file(big)  # type: ignore[attr-defined]

    t_put = median_time(put, repeats, fresh)
    store: BlobStore = state["store"]  # type: ignore[assignment]
    t_reput = median_time(put, repeats)
    digest = state["ref"].digest  # type: ignore[attr-defined]
    out = work / "out.bin"
    t_get = median_time(lambda: store.get_to_path(digest, out), repeats)

    def put_tree() -> None:
        state["manifest"] = build_manifest(small, state["store"])  # type: ignore[arg-type]

    t_tree = median_time(put_tree, repeats, fresh)
    tree_store: BlobStore = state["store"]  # type: ignore[assignment]
    dest = work / "tree"

    def clear() -> None:
        shutil.rmtree(dest, ignore_errors=True)

    t_mat = median_time(lambda: materialize(state["manifest"], tree_store, dest),  # type: ignore[arg-type]
                        repeats, clear)
    clear()
    raw = ""
    if isinstance(store, FsspecBlobStore):  # the same bytes through s3fs, unhashed: the ceiling
        fs, key = store.fs, f"{store.key_of(digest)}.raw"
        t_rput = median_time(lambda: fs.put_file(str(big), key), repeats)
        t_rget = median_time(lambda: fs.get_file(key, str(out)), repeats)
        raw = (f"\n{'':<12} s3fs put_file/get_file of the same file, no hashing: "
               f"{size / MB / t_rput:.0f} / {size / MB / t_rget:.0f} MB/s")
    print(f"{name:<12} put_file {size / MB:.0f} MB: {size / MB / t_put:8.0f} MB/s   "
          f"repeat put (dedup): {size / MB / t_reput:8.0f} MB/s   "
          f"get_to_path+verify: {size / MB / t_get:8.0f} MB/s{raw}")
    print(f"{'':<12} {n_small} small files ({small_bytes / n_small / 1e3:.0f} kB): "
          f"build_manifest+put {n_small / t_tree:7.0f} files/s ({small_bytes / MB / t_tree:5.1f}"
          f" MB/s)   materialize {n_small / t_mat:7.0f} files/s "
          f"({small_bytes / MB / t_mat:5.1f} MB/s)")


def bench_server(big: Path, small: Path, work: Path, repeats: int) -> None:
    """``log_artifact`` / ``download()`` of a run logging to a server, and of a local run."""
    from assay.api.auth import TokenStore

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _server import start_server

    for label in ("local run", "server run"):
        root = work / f"srv-{uuid.uuid4().hex}"
        root.mkdir()
        proc = None
        kw: dict[str, object] = {"dir": root}
        if label == "server run":
            token = TokenStore(root).create("bench", "researcher")[0]
            proc, url = start_server(root)
            kw = {"dir": work / f"client-{uuid.uuid4().hex}", "server": url, "token": token}
        try:
            _artifact_speeds(label, kw, big, small, work, repeats)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


def _artifact_speeds(label: str, kw: dict[str, object], big: Path, small: Path, work: Path,
                     repeats: int) -> None:
    import assay

    size = big.stat().st_size
    n_small = len(os.listdir(small))
    small_bytes = sum(p.stat().st_size for p in small.iterdir())
    run = assay.init(project="bench", system_metrics_interval=None, capture=False,
                     **kw)  # type: ignore[arg-type]
    n = iter(range(10**6))
    run.log_artifact(small, "warm-up")  # a server run's first call waits for the run's records
    t_big = median_time(lambda: run.log_artifact(big, f"big{next(n)}"), 1)
    # Under a new name: the same blobs, so nothing is stored or sent again.
    t_again = median_time(lambda: run.log_artifact(big, f"big{next(n)}"), repeats)
    art = run.use_artifact("big0:v0")
    dest = work / "dl"

    def clear() -> None:  # the folder and the record of it beside it
        shutil.rmtree(dest, ignore_errors=True)
        (work / ".dl.assay.json").unlink(missing_ok=True)

    t_get = median_time(lambda: art.download(dest), repeats, clear)
    clear()
    fresh = work / f"tree-{uuid.uuid4().hex}"  # content new to the store
    fresh.mkdir()
    for p in small.iterdir():
        (fresh / p.name).write_bytes(os.urandom(p.stat().st_size))
    t_tree = median_time(lambda: run.log_artifact(fresh, "tree"), 1)
    tree = run.use_artifact("tree:v0")
    t_tree_get = median_time(lambda: tree.download(dest), repeats, clear)
    clear()
    run.finish()
    print(f"{label:<12} log_artifact {size / MB:.0f} MB: {size / MB / t_big:8.0f} MB/s   "
          f"again (dedup): {size / MB / t_again:8.0f} MB/s   "
          f"download+verify: {size / MB / t_get:8.0f} MB/s")
    print(f"{'':<12} {n_small} small files: log_artifact {n_small / t_tree:7.0f} files/s "
          f"({small_bytes / MB / t_tree:5.1f} MB/s)   download {n_small / t_tree_get:7.0f} "
          f"files/s")


def bench_rows(n: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    keys = np.array(["loss", "acc", "lr", "val/loss", "grad_norm"])[rng.integers(0, 5, n)]
    frame = pl.DataFrame({"key": keys, "step": rng.permutation(n).astype(np.int64),
                          "value": rng.random(n)})
    table = frame.to_arrow()
    tuples = list(zip(frame["key"].to_list(), frame["step"].to_list(),
                      frame["value"].to_list(), strict=True))
    assert rows_digest(frame) == rows_digest(table) == rows_digest(tuples)
    t_pl = median_time(lambda: rows_digest(frame), repeats)
    t_pa = median_time(lambda: rows_digest(table), repeats)
    t_tu = median_time(lambda: rows_digest(tuples), repeats)
    print(f"rows_digest {n:,} rows: polars {t_pl * 1e3:.0f} ms, pyarrow {t_pa * 1e3:.0f} ms, "
          f"list of tuples {t_tu * 1e3:.0f} ms")


def reference(big: Path, work: Path, repeats: int) -> None:
    size = big.stat().st_size

    def sha() -> None:
        with open(big, "rb") as f:
            hashlib.file_digest(f, "sha256")

    t_sha = median_time(sha, repeats)
    t_cp = median_time(lambda: shutil.copyfile(big, work / "copy.bin"), repeats)
    print(f"reference: sha256 of a cached file {size / MB / t_sha:.0f} MB/s, "
          f"shutil.copyfile {size / MB / t_cp:.0f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--small", type=int, default=1000, help="number of small files")
    parser.add_argument("--small-kb", type=int, default=16)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--no-server", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.size_mb, args.small, args.rows = 32, 200, 200_000
    with tempfile.TemporaryDirectory(prefix="assay-bench-") as tmp:
        work = Path(tmp)
        big = work / "big.bin"
        with open(big, "wb") as f:
            f.writelines(os.urandom(1 << 20) for _ in range(args.size_mb))
        small = work / "small"
        small.mkdir()
        for i in range(args.small):
            (small / f"f{i:05d}.bin").write_bytes(os.urandom(args.small_kb * 1024))
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of "
              f"{args.repeats}; 1 MB = 10^6 bytes")
        reference(big, work, args.repeats)
        bench_store("local", lambda: LocalBlobStore(work / f"l-{uuid.uuid4().hex}"),
                    big, small, work, args.repeats)
        bench_store("local-nosync", lambda: LocalBlobStore(work / f"n-{uuid.uuid4().hex}",
                                                            durable=False),
                    big, small, work, args.repeats)
        if not args.no_s3:
            proc, endpoint = start_moto()
            try:
                bench_store("s3-moto", lambda: FsspecBlobStore(
                    f"s3://bench/{uuid.uuid4().hex}", endpoint_url=endpoint, key="bench",
                    secret="bench", client_kwargs={"region_name": "us-east-1"}),
                    big, small, work, args.repeats)
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        if not args.no_server:
            bench_server(big, small, work, args.repeats)
        bench_rows(args.rows, args.repeats)


if __name__ == "__main__":
    main()
