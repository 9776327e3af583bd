"""Benchmark of the MLflow Model Registry routes: prints ms per request (it is not a test).

A registry of ``--models`` registered models with ``--versions`` versions each (1,000 and
100,000 versions in all by default: 10 x 100 and 20 x 5,000), seeded straight into the data
directory, served by an ``assay server`` subprocess on 127.0.0.1. Timed over HTTP, the
median of ``--repeat`` calls after a first (cold) one: registered-models/search (10 rows and
the default 100), model-versions/search by name and unfiltered (10 rows), by a quoted
``version_number``, an alias lookup, an alias write, and alias lookups while 4 clients page
registered-models/search.

Run: ``nice -n 10 .venv/bin/python bench/bench_mlflow_registry.py [--shape 20x5000 ...]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from _server import start_server  # bench/ is on sys.path when run as a script
from assay.api.auth import TokenStore
from assay.api.mlflow_registry_state import ModelRegistry, new_model

API = "/api/2.0/mlflow"


def seed(root: Path, models: int, versions: int) -> None:
    reg = ModelRegistry(root / "mlflow")
    now = int(time.time() * 1000)
    for i in range(models):
        reg.add(new_model(f"big{i}", owner="bench"))
        rid = uuid.uuid4().hex

        def fill(rm: dict, rid: str = rid) -> None:
            for k in range(1, versions + 1):
                rm["versions"][str(k)] = {
                    "version": k, "creation_timestamp": now + k,
                    "last_updated_timestamp": now + k, "description": "", "user_id": "bench",
                    "current_stage": "None", "source": f"runs:/{rid}/model",
                    "storage_location": f"mlflow-artifacts:/1/{rid}/artifacts/model",
                    "run_id": rid, "run_link": "", "model_id": "", "status": "READY",
                    "tags": {"k": "v"}}
            rm["next_version"] = versions + 1
            rm["aliases"]["champion"] = 1

        reg.update(f"big{i}", fill)


def bench(models: int, versions: int, repeat: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="assay-bench-registry-"))
    try:
        token = TokenStore(root).create("bench", "supervisor")[0]
        seed(root, models, versions)
        proc, url = start_server(root)
        try:
            run(url, token, models, versions, repeat)
        finally:
            proc.kill()
            proc.wait(10)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(url: str, token: str, models: int, versions: int, repeat: int) -> None:
    client = httpx.Client(base_url=url + API, headers={"Authorization": f"Bearer {token}"},
                          timeout=120)

    def once(method: str, path: str, **kw: object) -> float:
        t0 = time.perf_counter()
        r = client.request(method, path, **kw)  # type: ignore[arg-type]
        assert r.status_code == 200, r.text
        return (time.perf_counter() - t0) * 1000

    def median(method: str, path: str, **kw: object) -> float:
        once(method, path, **kw)
        return statistics.median(once(method, path, **kw) for _ in range(repeat))

    near = max(1, versions - 5)
    alias_model = f"big{min(1, models - 1)}"
    cases = [
        ("registered-models/search max_results=10", "GET", "/registered-models/search",
         {"params": {"max_results": 10}}),
        ("registered-models/search (default 100)", "GET", "/registered-models/search", {}),
        ("model-versions/search name='big0' max_results=10", "GET", "/model-versions/search",
         {"params": {"filter": "name='big0'", "max_results": 10}}),
        ("model-versions/search max_results=10 (all)", "GET", "/model-versions/search",
         {"params": {"max_results": 10}}),
        (f"model-versions/search version_number >= '{near}'", "GET", "/model-versions/search",
         {"params": {"filter": f"name='big0' AND version_number >= '{near}'"}}),
        ("alias lookup", "GET", "/registered-models/alias",
         {"params": {"name": alias_model, "alias": "champion"}}),
        ("set alias (a write)", "POST", "/registered-models/alias",
         {"json": {"name": alias_model, "alias": "c2", "version": "2"}}),
    ]
    print(f"\n{models} models x {versions} versions = {models * versions} versions")
    for label, method, path, kw in cases:
        print(f"  {label:55} {median(method, path, **kw):8.1f} ms")

    lat: list[float] = []

    def reader() -> None:
        for _ in range(10):
            lat.append(once("GET", "/registered-models/alias",
                            params={"name": alias_model, "alias": "champion"}))

    def searcher() -> None:
        for _ in range(5):
            once("GET", "/registered-models/search", params={"max_results": 10})

    threads = [threading.Thread(target=searcher) for _ in range(4)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"  {'alias lookup while 4 clients search (median / max)':55} "
          f"{statistics.median(lat):8.1f} / {max(lat):.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", action="append", default=None,
                    help="MODELSxVERSIONS, repeatable (default 10x100 and 20x5000)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    for shape in args.shape or ["10x100", "20x5000"]:
        m, v = (int(x) for x in shape.lower().split("x"))
        bench(m, v, args.repeat)


if __name__ == "__main__":
    main()
