"""Helpers of the dashboard tests and benchmark: a restartable uvicorn server on 127.0.0.1,
the seeding of a data directory (runs logged with the SDK, an artifact and its lineage, an
agent whose trials are real runs, one run still running), and Chromium's launch settings.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loopback_server import ThreadServer

AGENT_ID = "agdash0001"


def DashServer(data_dir: Path, port: int | None = None) -> ThreadServer:
    """The dashboard's server: a :class:`ThreadServer` whose streams poll every 0.2 s."""
    return ThreadServer(data_dir, port, stream_poll=0.2)


@contextlib.contextmanager
def git_checkout(path: Path, *, dirty: bool = False) -> Iterator[Path]:
    """Work inside a fresh one-commit git checkout at ``path`` (with an uncommitted change to
    ``train.py`` when ``dirty``), so runs capture known git state, whatever the state of the
    checkout the tests run from."""
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=assay-tests", "-c", "user.email=tests@localhost",
                        "-c", "init.defaultBranch=main", *args], cwd=path, check=True,
                       capture_output=True)

    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q")
    (path / "train.py").write_text("lr = 0.1\n")
    git("add", "train.py")
    git("commit", "-qm", "a first commit")
    if dirty:
        (path / "train.py").write_text("lr = 0.01  # tuned\n")
    old = os.getcwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(old)


def seed(data_dir: Path) -> dict[str, Any]:
    """Runs, system metrics, an artifact with lineage, an agent whose trials are real runs."""
    import assay
    from assay.store.control import AgentRow, Decision, LanceControlStore
    from assay.store.ingest import IngestLock
    from assay.store.lance import LanceStore

    out: dict[str, Any] = {"trials": []}
    src = data_dir.parent / "digits.csv"
    src.write_text("x,y\n1,2\n3,4\n")
    with assay.init(project="vision", name="prep-data", dir=data_dir,
                    system_metrics_interval=0) as run:
        run.log_artifact(str(src), name="digits", type="dataset", aliases=["prod"])
        out["prep"] = run.id
    trials: dict[str, Any] = {}
    for i, lr in enumerate([0.1, 0.03, 0.01, 0.003]):
        run = assay.init(project="vision", name=f"mlp-lr{lr}", dir=data_dir,
                         config={"lr": lr, "depth": 2 + i % 2, "opt": "adam" if i % 2 else "sgd"},
                         tags=["sweep"], system_metrics_interval=0.05)
        run.use_artifact("digits:prod")
        for step in range(200):
            loss = (1.0 / (1 + step * lr)) + 0.02 * ((step * 7919) % 13) / 13
            run.log({"train/loss": loss, "val/acc": 1 - loss / 2, "score": 1 - loss}, step=step)
        if i == 3:
            run.finish(status="failed", error="RuntimeError: CUDA out of memory")
        else:
            if i == 0:
                model = data_dir.parent / "model.bin"
                model.write_bytes(b"weights" * 10)
                run.log_artifact(str(model), name="mlp", type="model")
            run.finish()
        out["trials"].append(run.id)
        trials[run.id] = {"config": {"lr": lr}, "status": "failed" if i == 3 else "completed",
                          "final": None if i == 3 else 1 - 1.0 / (1 + 199 * lr),
                          "origin": "searcher", "reason": "", "curve": []}
    # One trial still running (its curve grows while a page is open), with system metrics.
    live = assay.init(project="vision", name="mlp-live", dir=data_dir,
                      config={"lr": 0.05, "depth": 3, "opt": "adam"}, tags=["sweep"],
                      system_metrics_interval=0.5)
    for step in range(50):
        live.log({"train/loss": 1.0 / (1 + step * 0.05), "val/acc": 0.5 + step / 200,
                  "score": 0.5 + step / 200}, step=step)
    live.flush()
    out["live"] = live
    out["live_step"] = 50
    trials[live.id] = {"config": {"lr": 0.05}, "status": "running", "final": None,
                       "origin": "searcher", "reason": "", "curve": []}
    ctl = LanceControlStore(LanceStore(data_dir), IngestLock(data_dir))
    now = time.time()
    spec = {"name": "digits-mlp", "project": "vision", "metric": "score", "mode": "max",
            "owner": "researcher", "budget": {"trials": 8, "gpu_hours": 2},
            "searcher": "botorch", "stoppers": ["learned", "asha"], "concurrency": 2}
    best = max((k for k, t in trials.items() if t["final"] is not None),
               key=lambda k: trials[k]["final"])
    ledger = {"started_at": now - 300, "runs": {
        k: {"project": "vision", "agent": AGENT_ID, "cpus": 1.0, "gpus": 1.0, "wall_s": 60.0,
            "cpu_s": 60.0, "gpu_s": 60.0, "started_at": None if k != live.id else now - 30,
            "finished": k != live.id} for k in trials}}
    state = {"trials": trials, "best": best, "concurrency": 2, "budget": spec["budget"],
             "ledger": ledger}
    ctl.save_agent(AgentRow(AGENT_ID, "digits-mlp", "vision", spec, state=state, hlc="1"))
    ds = []
    for n, k in enumerate(trials):
        ds.append(Decision(AGENT_ID, "vision", k, "launch", f"launch (botorch): lr={trials[k]['config']['lr']}",
                           {"acquisition": 0.12 * (n + 1), "predicted_mean": 0.8, "predicted_std": 0.05,
                            "incumbent": 0.9}, f"{10 + 2 * n:04d}", now - 200 + n))
    ds.append(Decision(AGENT_ID, "vision", out["trials"][3], "stop",
                       "asha: below the rung median at step 100",
                       {"rule": "asha", "rung": 100, "value": 0.41, "median": 0.62,
                        "predicted_final": 0.45, "failure_probability": 0.83}, "0030", now - 50))
    ctl.add_decisions(ds)
    out["agent"] = AGENT_ID
    out["best"] = best
    return out


def ingested(data_dir: Path, run_id: str, step: int, finished: tuple[str, ...] = ()) -> bool:
    """Whether ``run_id``'s points up to ``step`` and the final records of the ``finished``
    runs (their artifacts and lineage come before their end) are in the store; the ingest
    daemon takes the runs' logs in no particular order."""
    from assay.store.lance import LanceStore

    store = LanceStore(data_dir)
    r = store.get_run(run_id)
    if r is None or r.last_step < step:
        return False
    return all((f := store.get_run(k)) is not None and f.status != "running" for k in finished)


def patch_agent(page: Any, edit: Any, agent_id: str = AGENT_ID) -> None:
    """Serve GET /api/agents/<id> edited by ``edit(body)`` (the agent as an agent process
    would have saved it)."""
    import re

    def handle(route: Any) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        resp = route.fetch()
        body = resp.json()
        edit(body)
        route.fulfill(response=resp, json=body)
    page.route(re.compile(rf".*/api/agents/{agent_id}$"), handle)
