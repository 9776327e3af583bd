"""Reads on odd input: cursor paging over non-finite values, filters on list and numeric
columns, colliding flattened keys, tiny minmax budgets, large stream cursors, MLflow search."""

from __future__ import annotations

import base64
import json
import math
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from assay.api.downsample import Curve, Method, downsample, minmax
from assay.api.mlflow_search import matches, parse_filter
from assay.api.query import RunsIndex, RunsQuery
from assay.api.store_ext import ServerStore
from assay.api.stream import INLINE_MAX, StreamHub, _Client
from assay.errors import UserInputError
from assay.store.ingest import IngestLock
from assay.store.records import RunRecord, RunStatus
from assay.store.schemas import METRICS_SCHEMA
from sse import sse_events  # tests/ is on sys.path (rootdir conftest)


def _store(root: Path, runs: list[RunRecord]) -> ServerStore:
    store = ServerStore(root)
    with IngestLock(root):
        store.upsert_runs(runs)
    return store


def _run(i: int, **kw: Any) -> RunRecord:
    now = time.time()
    base: dict[str, Any] = {"run_id": f"r{i:04d}", "project": "p", "name": f"n{i}",
                            "status": RunStatus.COMPLETED, "created_at": now + i,
                            "updated_at": now + i}
    return RunRecord(**{**base, **kw})


def _loss(v: float) -> dict[str, dict[str, float]]:
    return {"loss": {"last": v, "min": v, "max": v, "step": 1}}


# -- 1. cursor paging -------------------------------------------------------------------------
_MIXED = [math.inf, 3.0, 2.0, 1.0, -math.inf, math.nan, None, math.inf, -math.inf, 2.0, None]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_cursor_paging_visits_every_run_once_when_the_sort_column_holds_inf_nan_and_nulls(
        tmp_path: Path, order: str, limit: int) -> None:
    runs = [_run(i, summary={} if v is None else _loss(v)) for i, v in enumerate(_MIXED)]
    idx = RunsIndex(_store(tmp_path, runs))
    whole = [r["run_id"] for r in idx.query(RunsQuery(sort="summary.loss", order=order,
                                                      limit=100)).runs]
    paged: list[str] = []
    cursor = None
    for _ in range(len(_MIXED) + 1):
        page = idx.query(RunsQuery(sort="summary.loss", order=order, limit=limit, cursor=cursor))
        paged += [r["run_id"] for r in page.runs]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert paged == whole and len(set(paged)) == len(_MIXED)


def test_cursor_encodes_non_finite_values_faithfully() -> None:
    q = RunsQuery(sort="summary.loss")
    for v in (math.inf, -math.inf):
        assert RunsIndex._decode_cursor(
            RunsQuery(sort="summary.loss", cursor=RunsIndex._encode_cursor(q, v, "x"))) == (v, "x")
    value, _ = RunsIndex._decode_cursor(
        RunsQuery(sort="summary.loss", cursor=RunsIndex._encode_cursor(q, math.nan, "x")))
    assert isinstance(value, float) and math.isnan(value)
    forged = base64.urlsafe_b64encode(json.dumps(
        {"v": None, "nf": "bogus", "id": "x", "q": q.fingerprint()}).encode()).decode()
    with pytest.raises(UserInputError, match="malformed cursor"):
        RunsIndex._decode_cursor(RunsQuery(sort="summary.loss", cursor=forged))


# -- 2./3. filters -------------------------------------------------------------------------------
def _ids(idx: RunsIndex, *filters: str) -> list[str]:
    return sorted(r["run_id"] for r in idx.query(RunsQuery(filters=filters, limit=100)).runs)


def test_tag_filters_test_membership_even_when_no_run_has_tags(tmp_path: Path) -> None:
    bare = RunsIndex(_store(tmp_path / "a", [_run(i) for i in range(2)]))  # tags: List(Null)
    assert _ids(bare, "tags=x") == [] and _ids(bare, "tags~x") == []
    assert _ids(bare, "tags!=x") == ["r0000", "r0001"]
    tagged = RunsIndex(_store(tmp_path / "b", [
        _run(0), _run(1, tags=("baseline",)), _run(2, tags=("base", "x"))]))
    assert _ids(tagged, "tags=baseline") == ["r0001"]
    assert _ids(tagged, "tags~base") == ["r0001", "r0002"]
    assert _ids(tagged, "tags!=baseline") == ["r0000", "r0002"]
    with pytest.raises(UserInputError, match="is a list"):
        tagged.query(RunsQuery(filters=("tags<x",)))


def test_list_and_dict_filter_values_are_a_400_with_a_hint(tmp_path: Path) -> None:
    idx = RunsIndex(_store(tmp_path, [_run(0, config={"lst": [1, 2]}, summary=_loss(1.0)),
                                      _run(1, config={"lst": [3]})]))
    for f in ("summary.loss=[1]", "config.lst=[1,2]", 'summary.loss={"a":1}'):
        with pytest.raises(UserInputError, match="single numbers") as e:
            idx.query(RunsQuery(filters=(f,)))
        assert "~" in e.value.hint
    assert _ids(idx, "config.lst~[1,2]") == ["r0000"]  # the hint's way works


def test_contains_filter_searches_the_text_as_typed(tmp_path: Path) -> None:
    names = ["lr-1e-3", "run-true", "is-null", "lr-0.001"]
    idx = RunsIndex(_store(tmp_path, [_run(i, name=n) for i, n in enumerate(names)]))
    assert _ids(idx, "name~1e-3") == ["r0000"]
    assert _ids(idx, "name~true") == ["r0001"]
    assert _ids(idx, "name~null") == ["r0002"]
    assert _ids(idx, 'name~"0.001"') == ["r0003"]


def test_numeric_filters_read_infinity_and_refuse_ordering_against_text(tmp_path: Path) -> None:
    vals = [math.inf, -math.inf, 1.0, math.nan]
    idx = RunsIndex(_store(tmp_path, [_run(i, name="NaN" if i == 2 else f"n{i}",
                                           summary=_loss(v)) for i, v in enumerate(vals)]))
    assert _ids(idx, "summary.loss=Infinity") == ["r0000"]
    assert _ids(idx, "summary.loss=-Infinity") == ["r0001"]
    assert _ids(idx, "summary.loss>-Infinity") == ["r0000", "r0002"]
    assert _ids(idx, "summary.loss<inf") == ["r0001", "r0002"]
    assert _ids(idx, "summary.loss=NaN") == ["r0003"]  # NaN is stored as null
    assert _ids(idx, "name=NaN") == ["r0002"]  # text columns keep the word
    for f in ("created_at>abc", 'created_at>"abc"', "summary.loss<true", "summary.loss>null"):
        with pytest.raises(UserInputError):
            idx.query(RunsQuery(filters=(f,)))
    assert _ids(idx, "summary.loss=abc") == []  # = against text is just no match
    only_nan = RunsIndex(_store(tmp_path / "n", [_run(0, config={"f": math.nan}), _run(1)]))
    assert _ids(only_nan, "config.f=NaN") == ["r0000", "r0001"]  # an all-null column


# -- 4. flattened names -----------------------------------------------------------------------
def test_colliding_keys_keep_both_values_under_distinct_columns(tmp_path: Path) -> None:
    summary = {**_loss(math.inf), "loss.max": {"last": -5.0, "min": -5.0, "max": -5.0, "step": 1}}
    idx = RunsIndex(_store(tmp_path, [
        _run(0, config={"a.b": 1, "a": {"b": 2}}, summary=summary,
             summary_set={"s.t": 3, "s": {"t": 4}, "loss": 0.5}),
        _run(1, config={"a": {"b": 7}}, summary=_loss(2.0))]))
    row = idx.refresh().filter(idx.refresh()["run_id"] == "r0000").to_dicts()[0]
    assert row["config.a.b"] == 1 and row['config.["a","b"]'] == 2
    assert row["summary.s.t"] == 3 and row['summary.["s","t"]'] == 4
    assert row["summary.loss.max"] == -5.0  # the user's key
    assert row["summary_max.loss"] == math.inf and row["summary_min.loss"] == math.inf
    assert row["summary.loss"] == 0.5  # the explicit value overrides the metric's last
    assert _ids(idx, "summary.loss.max<0") == ["r0000"]
    assert _ids(idx, "summary_max.loss>1") == ["r0000", "r0001"]
    assert _ids(idx, "config.a.b=7") == ["r0001"]  # no collision: the plain name
    page = idx.query(RunsQuery(sort="summary_max.loss", order="asc"))
    assert [r["run_id"] for r in page.runs] == ["r0001", "r0000"]
    with pytest.raises(UserInputError, match="unknown column"):
        idx.query(RunsQuery(sort="nope.x"))


# -- 5. minmax ----------------------------------------------------------------------------------
def test_minmax_never_returns_more_than_max_points() -> None:
    rng = np.random.default_rng(0)
    for n in range(1, 14):
        for cap in range(1, 12):
            for y in (rng.normal(size=n), np.full(n, np.nan), np.where(np.arange(n) % 2, np.inf, 1.0)):
                idx = minmax(y, cap)
                assert len(idx) <= cap and idx[0] == 0
                assert list(idx) == sorted(set(idx.tolist()))
    y = np.array([0, 5, -9, 0, 0, 0], dtype=float)
    assert minmax(y, 3).tolist() == [0, 2, 5]  # first, the extreme, last
    c = Curve(np.arange(6), y, np.zeros(6))
    assert len(downsample(c, 3, Method.MINMAX)) == 3 and len(downsample(c, 2, Method.MINMAX)) == 2


# -- 6. stream cursors ------------------------------------------------------------------------
def test_stream_cursor_of_thousands_of_runs_round_trips(tmp_path: Path) -> None:
    store = ServerStore(tmp_path)
    hub = StreamHub(RunsIndex(store), store)
    small = _Client(runs=None, project=None, keys=None, cursor={"a1": 3}, max_points=100)
    cid = hub.cursor_id(small)
    assert cid.startswith("z") and hub.resume(cid) == ({"a1": 3}, False)
    legacy = base64.urlsafe_b64encode(b'{"a1":3}').decode().rstrip("=")  # the dashboard's form
    assert hub.resume(legacy) == ({"a1": 3}, False)
    big = {f"run{i:07d}x": i * 7 for i in range(5000)}
    c = _Client(runs=None, project=None, keys=None, cursor=dict(big), max_points=100)
    ids = [hub.cursor_id(c) for _ in range(12)]
    assert all(len(i) <= INLINE_MAX for i in ids) and ids[-1].startswith("@")
    assert hub.resume(ids[-1]) == (big, False)
    assert hub.resume(ids[0]) == ({}, True)  # beyond the per-connection few: lost, and said so
    with pytest.raises(UserInputError, match="malformed"):
        hub.resume("@bad token!")
    huge = {f"run{i:07d}x": i for i in range(60_000)}  # held: no cap on the server's own
    c = _Client(runs=None, project=None, keys=None, cursor=dict(huge), max_points=100)
    assert hub.resume(hub.cursor_id(c)) == (huge, False)
    bomb = "z" + base64.urlsafe_b64encode(zlib.compress(b'{"a":1}' + b" " * (4 << 20))).decode()
    with pytest.raises(UserInputError, match="malformed"):
        hub.resume(bomb.rstrip("="))  # a client's id may not decompress past the cap


def _events(url: str, token: str, params: dict[str, Any], until: Callable[[list[dict[str, Any]]], bool],
            last_event_id: str | None = None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    events: list[dict[str, Any]] = []
    with httpx.Client(timeout=httpx.Timeout(30.0)) as c, \
            c.stream("GET", f"{url}/api/stream", params=params, headers=headers) as resp:
        assert resp.status_code == 200
        for ev in sse_events(resp.iter_lines()):
            events.append(ev)
            if until(events):
                return events
    return events


def _points(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for e in events:
        if e["event"] == "delta":
            for rid, d in e["data"]["runs"].items():
                if "points" in d:
                    out.setdefault(rid, []).extend(d["points"]["loss"]["step"])
    return out


@pytest.mark.integration
def test_a_thousand_run_stream_has_event_ids_and_resumes_without_gaps(
        server, tokens, data_dir: Path) -> None:
    n = 1000
    store = _store(data_dir, [_run(i, project="big", ingested_seq=0) for i in range(n)])
    params = {"project": "big", "min_interval": 0.1}
    snap = _events(server.url, tokens["viewer"], params, lambda ev: True)[0]
    assert snap["event"] == "snapshot" and len(snap["data"]["runs"]) == n
    assert snap.get("id"), "a large subscription still gets a resumable id"
    # While the client is away, three runs get points.
    moved = ["r0003", "r0500", "r0999"]
    store.append_metrics(pa.table({
        "run_id": moved, "key": ["loss"] * 3, "seq": [1] * 3, "step_min": [1] * 3,
        "step_max": [2] * 3, "step": [[1, 2]] * 3, "value": [[0.5, 0.25]] * 3,
        "time": [[1.0, 2.0]] * 3}, schema=METRICS_SCHEMA))
    with IngestLock(data_dir):
        store.upsert_runs([_run(int(r[1:]), project="big", ingested_seq=1,
                                updated_at=time.time() + 1000) for r in moved])
    got = _events(server.url, tokens["viewer"], params,
                  lambda ev: sorted(_points(ev)) == moved, last_event_id=snap["id"])
    assert got[0]["event"] == "snapshot"
    assert _points(got) == {r: [1, 2] for r in moved}
    # A token the server does not hold: told so, then a fresh snapshot.
    lost = _events(server.url, tokens["viewer"], params, lambda ev: len(ev) >= 2,
                   last_event_id="@" + "A" * 24)
    assert [e["event"] for e in lost] == ["reset", "snapshot"] and "hint" in lost[0]["data"]


# -- 7. MLflow ----------------------------------------------------------------------------------
def test_mlflow_comparisons_never_match_runs_lacking_the_key() -> None:
    view = {"params": {"lr": "0.1"}, "metrics": {"acc": 0.5}, "tags": {}, "attributes": {}}
    assert matches(view, parse_filter("params.lr != '0.5'"))
    for f in ("params.depth != '3'", "metrics.loss != 1", "tags.team != 'x'",
              "attributes.end_time != 5"):
        assert not matches(view, parse_filter(f)), f


@pytest.mark.integration
def test_mlflow_log_batch_rejects_duplicate_param_keys_and_negative_steps(server, client) -> None:
    c = client("researcher")
    exp = c.post("/api/2.0/mlflow/experiments/create", json={"name": "dups"}).json()
    rid = c.post("/api/2.0/mlflow/runs/create",
                 json={"experiment_id": exp["experiment_id"]}).json()["run"]["info"]["run_id"]
    for values in (("1", "2"), ("1", "1")):  # MLflow refuses both
        r = c.post("/api/2.0/mlflow/runs/log-batch", json={
            "run_id": rid, "params": [{"key": "p", "value": v} for v in values]})
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "duplicate" in r.json()["message"]
    run = c.get("/api/2.0/mlflow/runs/get", params={"run_id": rid}).json()["run"]
    assert run["data"].get("params", []) == []  # nothing of the refused batch was kept
    r = c.post("/api/2.0/mlflow/runs/log-metric",
               json={"run_id": rid, "key": "m", "value": 1.0, "step": -1, "timestamp": 0})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "steps >= 0" in r.json()["message"]
