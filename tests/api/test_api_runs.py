"""Reads: projects, the runs query (filter, sort, paginate), one run, keys, curves."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from assay.api.downsample import Curve, Method, downsample, load_curves, lttb, minmax
from assay.api.query import RunsIndex, RunsQuery
from assay.api.store_ext import ServerStore
from assay.errors import UserInputError
from assay.store.ingest import Ingester, IngestLock
from assay.store.records import RunRecord, RunStatus
from assay.store.wal import WalWriter, segment_path


def _seed(root: Path, n: int = 30) -> ServerStore:
    store = ServerStore(root)
    now = time.time()
    runs = []
    for i in range(n):
        runs.append(RunRecord(
            run_id=f"run{i:04d}", project="alpha" if i % 3 else "beta", name=f"r{i}",
            status=RunStatus.COMPLETED if i % 2 else RunStatus.RUNNING,
            created_at=now + i, updated_at=now + i, tags=("even",) if i % 2 == 0 else ("odd",),
            config={"lr": 10.0 ** -(i % 4), "opt": {"name": "adam" if i % 5 else "sgd"},
                    "layers": [i, i]},
            summary={"val/acc": {"last": i / n, "min": 0.0, "max": i / n, "step": 9},
                     **({"loss": {"last": math.nan, "min": math.nan, "max": math.nan, "step": 9}}
                        if i == 7 else {})}))
    with IngestLock(root):
        store.upsert_runs(runs)
    return store


def test_runs_query_filters_on_status_tags_config_and_summary(tmp_path: Path) -> None:
    idx = RunsIndex(_seed(tmp_path))
    page = idx.query(RunsQuery(project="alpha", status=("completed",), tags=("odd",),
                               filters=("config.lr<=0.01", "summary.val/acc>0.3",
                                        "config.opt.name=adam")))
    ids = {r["run_id"] for r in page.runs}
    expect = {f"run{i:04d}" for i in range(30) if i % 3 and i % 2 and 10.0 ** -(i % 4) <= 0.01
              and i / 30 > 0.3 and i % 5}
    assert ids == expect and page.total == len(expect)
    assert page.runs[0]["config"]["opt"] == {"name": "adam"}
    assert idx.query(RunsQuery(filters=("name~r1",))).total == 11  # r1, r10..r19
    assert idx.query(RunsQuery(filters=("config.never_logged=3",))).total == 0
    with pytest.raises(UserInputError, match="unknown filter column"):
        idx.query(RunsQuery(filters=("bogus=1",)))
    with pytest.raises(UserInputError, match="cannot parse"):
        idx.query(RunsQuery(filters=("config.lr",)))
    with pytest.raises(UserInputError, match="not numbers"):
        idx.query(RunsQuery(filters=("tags>3",)))


def test_runs_sort_by_summary_metric_puts_missing_and_nan_last(tmp_path: Path) -> None:
    idx = RunsIndex(_seed(tmp_path))
    desc = idx.query(RunsQuery(sort="summary.val/acc", order="desc", limit=3))
    assert [r["run_id"] for r in desc.runs] == ["run0029", "run0028", "run0027"]
    by_loss = idx.query(RunsQuery(sort="summary.loss", order="asc", limit=100))
    assert by_loss.total == 30 and by_loss.runs[0]["run_id"] in {f"run{i:04d}" for i in range(30)}
    assert math.isnan(idx.detail("run0007")["summary"]["loss"])
    with pytest.raises(UserInputError, match="unknown column"):
        idx.query(RunsQuery(sort="nope"))


def test_offset_and_cursor_pagination_cover_every_run_once(tmp_path: Path) -> None:
    store = _seed(tmp_path)
    idx = RunsIndex(store)
    q = RunsQuery(sort="summary.val/acc", order="asc", limit=7)
    by_offset = []
    for off in range(0, 30, 7):
        page = idx.query(RunsQuery(**{**q.__dict__, "offset": off}))
        assert page.total == 30
        by_offset += [r["run_id"] for r in page.runs]
    assert len(by_offset) == 30 == len(set(by_offset))
    seen, cursor = [], None
    while True:
        page = idx.query(RunsQuery(**{**q.__dict__, "cursor": cursor}))
        seen += [r["run_id"] for r in page.runs]
        if len(seen) == 14:  # a run appears mid-paging: the cursor neither skips nor repeats
            with IngestLock(tmp_path):
                store.upsert_runs([RunRecord(run_id="late0001", project="alpha", name="late",
                                             status=RunStatus.RUNNING, created_at=0.0,
                                             updated_at=time.time() + 100,
                                             summary={"val/acc": {"last": -1.0, "min": 0,
                                                                  "max": 0, "step": 0}})])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == by_offset
    with pytest.raises(UserInputError, match="other filters or sort"):
        idx.query(RunsQuery(sort="name", cursor=page.next_cursor or _cursor_of(idx, q)))


def _cursor_of(idx: RunsIndex, q: RunsQuery) -> str:
    c = idx.query(q).next_cursor
    assert c is not None
    return c


def test_runs_index_refreshes_incrementally(tmp_path: Path) -> None:
    store = _seed(tmp_path, 5)
    idx = RunsIndex(store)
    first = idx.refresh()
    assert idx.refresh() is first, "an unchanged table is not re-read"
    gen = idx.generation
    with IngestLock(tmp_path):
        store.upsert_runs([RunRecord(run_id="run0001", project="alpha", name="r1",
                                     status=RunStatus.FAILED, created_at=1.0,
                                     updated_at=time.time() + 50, ingested_seq=9)])
    assert idx.refresh().height == 5
    assert idx.changed_since(gen) == ["run0001"]
    assert idx.detail("run0001")["status"] == "failed"
    assert {p["project"]: p["runs"] for p in idx.projects()} == {"alpha": 3, "beta": 2}


def test_lttb_matches_a_reference_implementation_and_keeps_the_ends() -> None:
    rng = np.random.default_rng(0)
    x = np.arange(10_007)
    y = np.cumsum(rng.normal(size=x.size))

    def reference(n_out: int) -> list[int]:
        n, every, a, out = len(x), (len(x) - 2) / (n_out - 2), 0, [0]
        for i in range(n_out - 2):
            s, e = int(i * every) + 1, int((i + 1) * every) + 1
            ns, ne = e, min(int((i + 2) * every) + 1, n)
            cx, cy = (x[n - 1], y[n - 1]) if i == n_out - 3 else (x[ns:ne].mean(), y[ns:ne].mean())
            area = np.abs((x[a] - cx) * (y[s:e] - y[a]) - (x[a] - x[s:e]) * (cy - y[a]))
            a = s + int(area.argmax())
            out.append(a)
        return [*out, n - 1]

    assert lttb(x, y, 300).tolist() == reference(300)
    assert lttb(x, y, 20_000).tolist() == list(range(x.size))


def test_minmax_keeps_every_spike_and_skips_nan() -> None:
    y = np.zeros(100_000)
    y[[123, 45_678, 99_998]] = [5.0, -7.0, 9.0]
    y[500:600] = np.nan
    idx = minmax(y, 200)
    assert {123, 45_678, 99_998} <= set(idx.tolist()) and len(idx) <= 200
    assert idx[0] == 0 and idx[-1] == 99_999
    assert not np.isnan(y[idx]).any()


def test_load_curves_orders_by_seq_and_last_write_wins(tmp_path: Path) -> None:
    import pyarrow as pa

    chunks = pa.table({"key": ["a", "a", "b"], "seq": [2, 1, 1],
                       "step": [[1, 2], [0, 1], [5]], "value": [[10.0, 20.0], [0.0, 1.0], [3.0]],
                       "time": [[1.0, 2.0], [0.0, 0.5], [1.0]]})
    curves = load_curves(chunks)
    assert curves["a"].step.tolist() == [0, 1, 2] and curves["a"].value.tolist() == [0.0, 10.0, 20.0]
    every = load_curves(chunks, dedupe=False)
    assert every["a"].step.tolist() == [0, 1, 1, 2]
    c = Curve(np.arange(10), np.arange(10.0), np.arange(10.0))
    assert downsample(c, 100) is c and len(downsample(c, 4, Method.MINMAX)) <= 4


def _ingest_curve(root: Path, run_id: str, n: int) -> None:
    path = segment_path(root / "wal", run_id, 0)
    w = WalWriter(path)
    step = np.arange(n)
    recs = [{"k": "run", "seq": 1, "time": 1.0, "run_id": run_id, "project": "curves",
             "name": "c", "config": {}, "attach": 0}]
    for i, lo in enumerate(range(0, n, 50_000)):
        s = step[lo: lo + 50_000]
        recs.append({"k": "metrics", "seq": 2 + i, "chunks": [{
            "keys": ["loss", "acc"], "step": s.tolist(), "time": (s * 0.01).tolist(),
            "vals": [np.sin(s / 500).tolist(), (s / n).tolist()]}]})
    recs.append({"k": "status", "seq": 2 + len(recs), "time": 2.0, "status": "completed"})
    w.append(recs)
    w.close()
    store = ServerStore(root)
    with IngestLock(root):
        Ingester(store).ingest([path])


@pytest.mark.integration
def test_run_detail_keys_and_downsampled_history_over_http(server, client, data_dir) -> None:
    _ingest_curve(data_dir, "curve00001", 200_000)
    c = client("viewer")
    run = c.get("/api/runs/curve00001").json()
    assert run["status"] == "completed" and run["last_step"] == 199_999
    assert set(run) >= {"config", "summary", "summary_stats", "env", "git", "tags"}
    keys = c.get("/api/runs/curve00001/keys").json()["keys"]
    assert [k["key"] for k in keys] == ["acc", "loss"] and keys[1]["min"] == pytest.approx(-1.0)
    h = c.get("/api/runs/curve00001/history", params={"key": "loss", "max_points": 500}).json()
    s = h["series"]["loss"]
    assert (s["total"], s["returned"], h["method"]) == (200_000, 500, "lttb")
    assert s["step"][0] == 0 and s["step"][-1] == 199_999 and s["step"] == sorted(s["step"])
    mm = c.get("/api/runs/curve00001/history",
               params={"max_points": 100, "method": "minmax", "step_min": 1000,
                       "step_max": 2999}).json()["series"]
    assert set(mm) == {"acc", "loss"} and mm["acc"]["total"] == 2000
    assert mm["loss"]["step"][0] == 1000 and mm["loss"]["step"][-1] == 2999
    lean = c.get("/api/runs/curve00001/history", params={"key": "loss", "time": "false"}).json()
    assert "time" not in lean["series"]["loss"] and lean["series"]["loss"]["returned"] == 1000
    listing = c.get("/api/runs", params={"project": "curves", "sort": "summary.acc"}).json()
    assert listing["total"] == 1 and listing["runs"][0]["summary"]["acc"] == pytest.approx(1.0, abs=1e-4)
    assert c.get("/api/projects").json()["projects"][0]["project"] == "curves"
    cols = c.get("/api/runs/columns", params={"project": "curves"}).json()["columns"]
    assert "summary.loss" in cols and "summary_max.acc" in cols


@pytest.mark.integration
def test_reads_see_runs_written_by_other_processes(server, client, data_dir, helpers) -> None:
    import assay

    c = client("viewer")
    with assay.init(project="other-proc", dir=data_dir, config={"seed": 1},
                    system_metrics_interval=None, capture=False) as run:
        for step in range(100):
            run.log({"x": float(step)}, step=step)
        run.flush()
        # the ingest daemon (another process) commits while the run is live
        live = helpers.wait_for(lambda: c.get("/api/runs", params={"project": "other-proc"})
                                .json()["runs"])
        assert live[0]["run_id"] == run.id
    done = helpers.wait_for(lambda: (r := c.get(f"/api/runs/{run.id}").json())["status"]
                            == "completed" and r)
    assert done["summary"]["x"] == 99.0
