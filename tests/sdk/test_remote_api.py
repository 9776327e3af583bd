"""RemoteReader: the reads of ``assay.Api`` from a real ``assay server`` (uvicorn on 127.0.0.1),
compared with ``Api(dir)`` on the directory that server serves."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pyarrow as pa
import pytest
from assay.api.auth import TokenStore
from assay.errors import AssayError, NotFoundError, PermissionDeniedError, UserInputError
from assay.sdk import run as run_mod
from assay.sdk.api import Api
from assay.sdk.frames import runs_frame
from assay.sdk.remote_api import RemoteReader, _listed_row, _Series
from assay.store.ingest import Ingester, IngestLock
from assay.store.lance import LanceStore
from assay.store.wal import WalWriter, segment_path
from loopback_server import ThreadServer, free_port  # tests/ is on sys.path (rootdir conftest)
from polars.testing import assert_frame_equal

#: Steps of the long run: irregular gaps, so windows split unevenly.
LONG_STEPS = [i * i for i in range(40)]


class Site:
    """A served data directory with runs of every kind, and readers on it."""

    def __init__(self, root: Path, server: ThreadServer, tokens: dict[str, str],
                 ids: dict[str, str]) -> None:
        self.root, self.server, self.tokens, self.ids = root, server, tokens, ids
        self.local = Api(root)
        self.remote = RemoteReader(server.url, tokens["admin"])

    def reader(self, role: str | None = "viewer", **kw: Any) -> RemoteReader:
        return RemoteReader(self.server.url, self.tokens[role] if role else None, **kw)


def _log_runs(root: Path) -> dict[str, str]:
    import assay

    ids: dict[str, str] = {}
    kw: dict[str, Any] = {"dir": root, "system_metrics_interval": None, "capture": False}
    base = assay.init("alpha", config={"lr": 0.01, "model": {"depth": 2, "act": "relu"},
                                       "layers": [64, 32], "opt": {}},
                      tags=["base"], capture=True,
                      **{k: v for k, v in kw.items() if k != "capture"})
    for step in range(30):
        base.log({"loss": 3.0 - 0.1 * step + (2.0 if step == 5 else 0.0),
                  "acc": min(0.9, 0.05 * step) - (0.3 if step == 29 else 0.0)}, step=step)
    base.summary["best"] = {"epoch": 17, "why": "val"}
    base.summary["acc"] = 1  # set explicitly over a metric: the set value wins
    ids["base"] = base.id
    time.sleep(0.01)
    r = assay.init("alpha", config={"lr": 0.001, "model": {"depth": 4}}, **kw)
    for step in range(12):
        r.log({"loss": math.nan if step == 4 else 1.0 / (step + 1)}, step=step)
    r.log({"grad": math.inf}, step=12)
    r.finish("failed", error="diverged")
    ids["failed"] = r.id
    # Finished after the later run: its row moves behind that run's in the runs table, and
    # the frame's columns still come in the order the runs were created.
    base.finish()
    time.sleep(0.01)
    with assay.init("beta", config={"lr": 0.1, "seed": 7}, **kw) as r:
        for step in LONG_STEPS:
            r.log({"loss": math.sin(step), "x": float(step)}, step=step)
        r.log({"rare": 5.0}, step=LONG_STEPS[-1])
        ids["long"] = r.id
    return ids


def _running_run(root: Path) -> tuple[str, WalWriter]:
    """A live run, ingested as the daemon does while its writer holds the segment."""
    run_id = "live00001"
    wal = WalWriter(segment_path(root / "wal", run_id, 0))
    now = time.time()
    wal.append([
        {"k": "run", "seq": 1, "time": now, "run_id": run_id, "project": "beta",
         "name": "live", "group": "g1", "tags": ["live", "x"], "notes": "n",
         "config": {"lr": 0.05, "model": {"depth": 2}}, "attach": 0},
        {"k": "metrics", "seq": 2, "chunks": [{
            "keys": ["loss"], "step": [0, 1, 2], "time": [now, now + 1, now + 2],
            "vals": [[0.5, 0.25, 0.125]]}]},
    ])
    with IngestLock(root):
        Ingester(LanceStore(root)).ingest([wal.path])
    return run_id, wal


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("served") / "data"
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_mod, "INGEST_MODE", "inprocess")  # finish() ingests: no daemon
        mp.setenv("ASSAY_DIR", str(root))
        ids = _log_runs(root)
        ids["live"], wal = _running_run(root)
        store = TokenStore(root)
        tokens = {role: store.create(role, role)[0] for role in ("viewer", "admin")}
        server = ThreadServer(root, start_daemon=False).start()
        s = Site(root, server, tokens, ids)
        try:
            yield s
        finally:
            s.remote.close()
            server.stop()
            wal.close()


def _same_record(a: Any, b: Any) -> None:
    """Records equal field by field, NaN equal to NaN."""
    def norm(x: Any) -> Any:
        if isinstance(x, float) and math.isnan(x):
            return "<nan>"
        if isinstance(x, dict):
            return {k: norm(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(norm(v) for v in x)
        return x

    assert {k: norm(v) for k, v in vars(a).items()} == {k: norm(v) for k, v in vars(b).items()}


# -- runs ---------------------------------------------------------------------------------------
def test_runs_match_the_local_api_column_for_column(site: Site) -> None:
    for project in (None, "alpha", "beta", "empty", "no such!"):
        remote, local = site.remote.runs(project), site.local.runs(project)
        assert_frame_equal(remote, local)  # values, dtypes and column order
    df = site.remote.runs()
    ids = site.ids
    table_order = [r["run_id"] for r in LanceStore(site.root).runs_table().to_pylist()]
    assert table_order.index(ids["base"]) > table_order.index(ids["failed"])
    assert df.columns.index("config.model.act") < df.columns.index("summary.grad")
    assert df["run_id"].to_list() == [ids["base"], ids["failed"], ids["long"], ids["live"]]
    assert df["status"].to_list() == ["completed", "failed", "completed", "running"]
    for c in ("created_at", "updated_at", "finished_at"):
        assert df.schema[c] == pl.Datetime("us", "UTC")
    assert df["finished_at"].is_null().to_list() == [False, False, False, True]
    base = df.row(0, named=True)
    assert (base["config.model.depth"], base["config.model.act"], base["config.layers"]) == (
        2, "relu", "[64, 32]")
    assert base["summary.loss"] == pytest.approx(0.1)
    assert base["summary_min.loss"] == pytest.approx(0.1)
    assert base["summary_max.loss"] == pytest.approx(3.0 - 0.5 + 2.0)
    assert base["summary.acc"] == 1 and base["summary_max.acc"] == pytest.approx(0.9)
    assert (base["summary.best.epoch"], base["summary.best.why"]) == (17, "val")
    failed = df.row(1, named=True)
    assert failed["error"] == "diverged" and failed["summary_max.grad"] == math.inf
    assert failed["summary_min.loss"] == pytest.approx(1 / 12)  # the NaN is not a minimum
    assert df.row(3, named=True)["tags"] == ["live", "x"]
    assert site.remote.runs("empty").columns == site.local.runs("empty").columns


def test_runs_filters_mapping_and_expression_as_locally(site: Site) -> None:
    for filters in ({"status": "completed"}, {"config.model.depth": 2},
                    {"status": "completed", "config.model.depth": 2},
                    pl.col("config.lr") < 0.05, pl.col("summary_min.loss") < 0.2,
                    {"project": "nobody"}):
        remote, local = site.remote.runs(filters=filters), site.local.runs(filters=filters)
        assert_frame_equal(remote, local)
    got = site.remote.runs("alpha", {"config.model.depth": 2})["run_id"].to_list()
    assert got == [site.ids["base"]]
    got = site.remote.runs(filters=pl.col("config.lr") <= 0.05)["run_id"].to_list()
    assert got == [site.ids["base"], site.ids["failed"], site.ids["live"]]
    for bad in ({"config.nope": 1}, ["status"]):
        with pytest.raises(UserInputError) as remote_err:
            site.remote.runs(filters=bad)  # type: ignore[arg-type]
        with pytest.raises(UserInputError) as local_err:
            site.local.runs(filters=bad)  # type: ignore[arg-type]
        assert str(remote_err.value) == str(local_err.value)
    with pytest.raises(UserInputError, match="unknown column 'config.nope'.*\n.*columns: run_id"):
        site.remote.runs(filters={"config.nope": 1})


def test_listing_rows_carry_summary_stats_and_old_servers_give_no_min_max(site: Site) -> None:
    c = httpx.Client(base_url=site.server.url, timeout=10,
                     headers={"Authorization": f"Bearer {site.tokens['viewer']}"})
    with c:
        plain = c.get("/api/runs", params={"project": "alpha", "order": "asc"}).json()["runs"]
        rows = c.get("/api/runs", params={"project": "alpha", "order": "asc",
                                          "stats": "true"}).json()["runs"]
    # The dashboard's listing stays as small as before: statistics only when asked for.
    assert plain and all("summary_stats" not in r for r in plain)
    stats = rows[0]["summary_stats"]
    local = site.local.run(site.ids["base"]).summary
    assert stats["loss"]["min"] == pytest.approx(local["loss"]["min"])
    assert stats["acc"]["max"] == pytest.approx(0.9) and rows[0]["summary"]["acc"] == 1
    assert rows[1]["summary_stats"]["grad"]["max"] == "Infinity"  # the server's JSON
    old = [{k: v for k, v in r.items() if k != "summary_stats"} for r in rows]
    df = runs_frame([_listed_row(r) for r in old])
    assert not [c for c in df.columns if c.startswith(("summary_min.", "summary_max."))]
    assert df["summary.acc"].to_list() == [1, None]
    assert df["summary.best.epoch"].to_list() == [17, None]


def test_runs_page_through_the_listing(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from assay.sdk import remote_api

    monkeypatch.setattr(remote_api, "_PAGE", 1)
    pages: list[str] = []
    with site.reader("viewer") as r:
        r._http.event_hooks["request"].append(lambda req: pages.append(str(req.url)))
        assert_frame_equal(r.runs(), site.local.runs())
    listed = [p for p in pages if "/api/runs?" in p]  # the rest: one /api/health
    assert len(listed) == 4 and sum("cursor=" in p for p in listed) == 3
    assert all("stats=true" in p for p in listed)


# -- one run ------------------------------------------------------------------------------------
def test_run_rebuilds_the_stored_record(site: Site) -> None:
    for key in ("base", "long", "live"):
        assert site.remote.run(site.ids[key]) == site.local.run(site.ids[key])
    failed = site.remote.run(site.ids["failed"])
    _same_record(failed, site.local.run(site.ids["failed"]))
    assert failed.summary["loss"]["min"] == pytest.approx(1 / 12)
    assert math.isnan(failed.summary["loss"]["last"]) is False
    assert failed.summary["grad"]["last"] == math.inf and failed.error == "diverged"
    base = site.remote.run(site.ids["base"])
    assert base.summary_set == {"best": {"epoch": 17, "why": "val"}, "acc": 1}
    assert base.config["model"] == {"depth": 2, "act": "relu"} and base.tags == ("base",)
    environ = base.env["environ"]
    assert environ and all(v is not None for v in environ.values())  # admin sees values
    with site.reader("viewer") as viewer:
        hidden = viewer.run(site.ids["base"]).env["environ"]
    assert set(hidden) == set(environ) and all(v is None for v in hidden.values())


def test_missing_runs_and_bad_arguments(site: Site) -> None:
    for call in (lambda: site.remote.run("nosuchrun1"), lambda: site.remote.history("nosuchrun1"),
                 lambda: site.remote.history("nosuchrun1", keys=[]),
                 lambda: site.remote.run("not/an/id")):
        with pytest.raises(NotFoundError, match="no run") as err:
            call()
        assert ".runs()" in err.value.hint
    for bad_id in ("", None, 7):
        with pytest.raises(UserInputError, match="run id must be a non-empty string"):
            site.remote.run(bad_id)  # type: ignore[arg-type]
        with pytest.raises(UserInputError, match="run id must be a non-empty string"):
            site.remote.history(bad_id)  # type: ignore[arg-type]
    for bad_keys in (5, [1], b"loss", {"loss": 1}):
        for api in (site.remote, site.local):  # the local Api too (was TypeError/AttributeError)
            with pytest.raises(UserInputError, match="keys must be"):
                api.history(site.ids["base"], keys=bad_keys)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="invalid project name"):
        site.remote.runs(5)  # type: ignore[arg-type]
    for bad in (0, 2, 100_001, 7.0, True):
        with pytest.raises(UserInputError, match="points_per_request"):
            RemoteReader(site.server.url, points_per_request=bad)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="http"):
        RemoteReader("127.0.0.1:8000")


# -- histories ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arrow", [None, False], ids=["arrow chunks", "json windows"])
def test_history_matches_the_local_api(site: Site, arrow: bool | None) -> None:
    with site.reader("viewer", arrow=arrow) as r:
        for key in ("base", "failed", "long", "live"):
            rid = site.ids[key]
            assert_frame_equal(r.history(rid), site.local.history(rid))
        rid = site.ids["base"]
        for keys in ("loss", ["acc", "loss"], ["acc", "acc"], ["never"], [], ("acc",)):
            assert_frame_equal(r.history(rid, keys), site.local.history(rid, keys))
        assert r._arrow is (arrow is None)  # the server lists history_arrow
    h = site.remote.history(rid, "loss")
    assert h.height == 30 and h["key"].unique().to_list() == ["loss"]
    assert h.schema["time"] == pl.Datetime("us", "UTC") and h.schema["step"] == pl.Int64
    nan_run = site.remote.history(site.ids["failed"], "loss")
    assert nan_run.height == 12 and math.isnan(nan_run["value"][4])
    assert site.remote.history(rid, []).columns == ["run_id", "key", "step", "value", "time"]


def test_history_reads_every_point_past_the_request_limit(site: Site) -> None:
    rid = site.ids["long"]
    sent: list[httpx.URL] = []
    with site.reader("viewer", points_per_request=7, arrow=False) as r:
        r._http.event_hooks["request"].append(lambda req: sent.append(req.url))
        got = r.history(rid)
        assert_frame_equal(got, site.local.history(rid))
        assert got.filter(pl.col("key") == "x")["step"].to_list() == LONG_STEPS
        assert got.filter(pl.col("key") == "rare").height == 1
        assert_frame_equal(r.history(rid, "loss"), site.local.history(rid, "loss"))
        short = r.history(site.ids["live"])  # 3 points: one request after the count
        assert_frame_equal(short, site.local.history(site.ids["live"]))
    limits = [int(u.params["max_points"]) for u in sent]
    assert max(limits) == 7 and len(sent) > 2 * (40 // 7)  # windows, not one downsampled call
    windows = [u for u in sent if "step_min" in u.params or "step_max" in u.params]
    assert windows and all(set(u.params.get_list("key")) == {"x"} or set(
        u.params.get_list("key")) == {"loss"} for u in windows)


def test_arrow_history_splits_step_windows_past_the_servers_limit(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    import assay.api.runs as routes

    rid = site.ids["long"]
    monkeypatch.setattr(routes, "CHUNK_POINTS_LIMIT", 6)
    sent: list[httpx.URL] = []
    with site.reader("viewer") as r:
        r._http.event_hooks["request"].append(lambda req: sent.append(req.url))
        assert_frame_equal(r.history(rid), site.local.history(rid))
        assert_frame_equal(r.history(rid, ["x", "rare"]), site.local.history(rid, ["x", "rare"]))
    chunks = [u for u in sent if u.path.endswith("/chunks")]
    assert len(chunks) > 4 and any("step_max" in u.params for u in chunks)
    assert not [u for u in sent if u.path.endswith("/history")]
    monkeypatch.setattr(routes, "CHUNK_POINTS_LIMIT", 0)  # even one step is too many
    with site.reader("viewer") as r, pytest.raises(AssayError, match="one step") as err:
        r.history(rid, "x")
    assert "fewer keys" in err.value.hint


def test_a_server_without_arrow_chunks_is_read_by_windows(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from assay.api import admin

    monkeypatch.setattr(admin, "SERVER_FEATURES", ("rewind", "remote_artifacts"))
    sent: list[httpx.URL] = []
    with site.reader("viewer") as r:
        r._http.event_hooks["request"].append(lambda req: sent.append(req.url))
        rid = site.ids["long"]
        assert_frame_equal(r.history(rid), site.local.history(rid))
    assert not [u for u in sent if u.path.endswith("/chunks")]
    assert [u for u in sent if u.path.endswith("/history")]


def test_history_refuses_a_step_holding_more_points_than_a_request(site: Site) -> None:
    with site.reader("viewer", points_per_request=3) as r:
        stuck = _Series(total=9, step=[4, 4, 4], value=[1.0, 2.0, 3.0], time=[None] * 3)
        with pytest.raises(AssayError, match="step 4 of 'loss'.*holds 9 points") as err:
            r._windows("run1", "loss", None, None, stuck)
        assert "points_per_request" in err.value.hint


# -- auth and reachability ----------------------------------------------------------------------
def test_missing_or_unknown_token_is_refused_with_the_token_hint(site: Site) -> None:
    for token in (None, "assay_not_a_token"):
        with RemoteReader(site.server.url, token) as r:
            for call in (r.runs, lambda r=r: r.run(site.ids["base"]),
                         lambda r=r: r.history(site.ids["base"])):
                with pytest.raises(PermissionDeniedError, match="server answered 401") as err:
                    call()
                assert "token=" in err.value.hint and "ASSAY_TOKEN" in err.value.hint
                assert "assay token create NAME --role viewer" in err.value.hint


def test_a_server_that_does_not_answer_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with RemoteReader(url, "t", timeout=5) as r:
        for call in (r.runs, lambda: r.run("abc123"), lambda: r.history("abc123", "loss")):
            with pytest.raises(AssayError, match=f"cannot reach the assay server at {url}") as e:
                call()
            assert "assay server" in e.value.hint and "URL" in e.value.hint


def test_rewritten_steps_keep_the_last_write_across_arrow_windows(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step written twice (a resumed run re-logging it) in chunks that two windows cut
    apart: the later write wins remotely as locally."""
    import assay.api.runs as routes
    import numpy as np
    from assay.api.store_ext import ServerStore
    from assay.store.records import RunRecord, RunStatus
    from assay.store.schemas import METRICS_SCHEMA

    rows: dict[str, list[Any]] = {c: [] for c in METRICS_SCHEMA.names}
    for seq, steps, base in ((2, np.arange(0, 10), 0.0), (3, np.arange(5, 15), 100.0)):
        for col, v in (("run_id", "dupes01"), ("key", "loss"), ("seq", seq),
                       ("step_min", int(steps[0])), ("step_max", int(steps[-1])),
                       ("step", steps), ("value", base + steps), ("time", 1e9 + steps)):
            rows[col].append(v)
    store = ServerStore(site.root)
    with IngestLock(site.root):
        store.append_metrics(pa.table(rows, schema=METRICS_SCHEMA))
        store.upsert_runs([RunRecord(run_id="dupes01", project="dupes", name="d",
                                     status=RunStatus.COMPLETED, created_at=5.0, updated_at=6.0,
                                     last_step=14, ingested_seq=3)])
    local = site.local.history("dupes01")
    assert local.height == 15 and local["value"].to_list()[5:10] == [105.0, 106.0, 107.0,
                                                                     108.0, 109.0]
    for limit in (4, 7, 10_000):
        monkeypatch.setattr(routes, "CHUNK_POINTS_LIMIT", limit)
        with site.reader("viewer") as r:
            assert_frame_equal(r.history("dupes01"), local)
