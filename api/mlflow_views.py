"""Assay runs and experiments as MLflow's JSON entities (what ``Run.from_proto`` parses).

A run's ``data.metrics`` follow MLflow's ``SqlAlchemyStore`` (``latest_metrics``): per key the
point with the highest ``(step, timestamp, value)``, NaN comparing as 0 and +-inf as the
largest finite floats (its ``sanitize_metric_value``), the first logged winning a full tie;
not assay's summary (the last point logged). :class:`LatestMetrics` keeps that per stored run
and reads only the chunks stored since its last read.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..store.records import RunRecord
from ..store.wal import SEQ_BITS
from .mlflow_state import STATUS_TO_MLFLOW
from .store_ext import ServerStore

__all__ = [
    "LatestMetrics",
    "experiment_json",
    "experiment_view",
    "latest_metrics",
    "metric_history",
    "pending_chunks",
    "record_detail",
    "run_entity",
]


def experiment_json(e: Mapping[str, Any]) -> dict[str, Any]:
    return {"experiment_id": e["experiment_id"], "name": e["name"],
            "artifact_location": e["artifact_location"],
            "lifecycle_stage": e["lifecycle_stage"], "creation_time": e["creation_time"],
            "last_update_time": e["last_update_time"],
            "tags": [{"key": k, "value": v} for k, v in e.get("tags", {}).items()]}


def experiment_view(e: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    attrs = {k: e[k] for k in ("experiment_id", "name", "creation_time", "last_update_time",
                               "lifecycle_stage")}
    return {"attributes": attrs, "tags": dict(e.get("tags", {}))}


def record_detail(r: RunRecord) -> dict[str, Any]:
    """A stored run in the shape :class:`~.query.RunsIndex` details have."""
    return {"run_id": r.run_id, "project": r.project, "name": r.name, "status": str(r.status),
            "tags": list(r.tags), "created_at": r.created_at, "updated_at": r.updated_at,
            "finished_at": r.finished_at, "config": r.config, "summary_stats": r.summary,
            "ingested_seq": r.ingested_seq}


def _flat_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(_flat_params(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v if isinstance(v, str) else json.dumps(v, default=str)
    return out


# -- MLflow's latest metric values -------------------------------------------------------------
Latest = tuple[int, float, float, float]
"""One key's latest point: (step, timestamp in ms, value as MLflow compares it, value)."""

_MAX = sys.float_info.max


def _rank(v: float) -> float:
    """A value as MLflow's SQL store compares it: NaN is stored as 0, +-inf as +-max float."""
    return 0.0 if math.isnan(v) else min(max(v, -_MAX), _MAX)


def _ms(t: float) -> float:
    ms = round(t * 1000) if math.isfinite(t) else 0
    return float(ms)


def _offer(latest: dict[str, Latest], key: str, point: Latest) -> None:
    """Keep ``point`` if it is strictly later than the key's (the first logged wins a tie)."""
    cur = latest.get(key)
    if cur is None or point[:3] > cur[:3]:
        latest[key] = point


@dataclass(frozen=True)
class _Points:
    """The points of metric chunks in log order (chunk ``seq``, then position)."""

    names: list[str]
    code: np.ndarray  # index into names, per point
    step: np.ndarray
    ms: np.ndarray  # timestamp in ms (0 where not finite), float64
    value: np.ndarray
    max_seq: int


def _points(chunks: pa.Table) -> _Points:
    if chunks.num_rows == 0:
        e = np.empty(0)
        return _Points([], e.astype(np.int64), e.astype(np.int64), e, e, -1)
    t = chunks.take(pc.sort_indices(chunks, sort_keys=[("seq", "ascending")]))
    lens = pc.list_value_length(t.column("step")).to_numpy(zero_copy_only=False)
    names: dict[str, int] = {}
    codes = [names.setdefault(k, len(names)) for k in t.column("key").to_pylist()]

    def flat(col: str, dtype: type) -> np.ndarray:
        arr = t.column(col).combine_chunks()
        return np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=dtype)

    with np.errstate(invalid="ignore"):
        ms = np.round(flat("time", np.float64) * 1000)
    return _Points(list(names), np.repeat(np.asarray(codes, dtype=np.int64), lens),
                   flat("step", np.int64), np.where(np.isfinite(ms), ms, 0.0),
                   flat("value", np.float64), int(pc.max(t.column("seq")).as_py()))


def _fold(latest: dict[str, Latest], chunks: pa.Table) -> int:
    """Fold stored chunks into ``latest`` (after what it holds); the highest ``seq`` seen."""
    p = _points(chunks)
    if not len(p.step):
        return p.max_seq
    rank = np.clip(np.nan_to_num(p.value, nan=0.0), -_MAX, _MAX)
    first = -np.arange(len(p.step))  # sorts the first logged of a full tie last: it wins
    idx = np.lexsort((first, rank, p.ms, p.step, p.code))
    c = p.code[idx]
    last = np.ones(len(idx), dtype=bool)
    last[:-1] = c[1:] != c[:-1]
    for i in idx[last].tolist():
        _offer(latest, p.names[p.code[i]],
               (int(p.step[i]), float(p.ms[i]), float(rank[i]), float(p.value[i])))
    return p.max_seq


@dataclass(frozen=True)
class _Cached:
    ingested_seq: int
    seen_seq: int
    latest: dict[str, Latest]


class LatestMetrics:
    """MLflow's latest value of each metric of stored runs, cached per run (thread-safe).

    The runs table keeps, per key, only the last point logged (and min and max), which is not
    MLflow's latest, so it is computed from the run's chunks: once, then only from the chunks
    stored after the last read (:meth:`~assay.store.base.Store.metric_chunks_after`) when the
    run's ``ingested_seq`` moved. A run whose ingested records reach a new attach is read in
    full again (a resumed attach may rewind, dropping stored points).
    """

    def __init__(self, max_runs: int = 20_000) -> None:
        self.max_runs = max_runs
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, _Cached] = OrderedDict()

    def of(self, store: ServerStore, run_id: str, ingested_seq: int) -> dict[str, Latest]:
        """The run's latest points as of ``ingested_seq`` (do not modify the dict)."""
        with self._lock:
            e = self._runs.get(run_id)
            if e is not None:
                self._runs.move_to_end(run_id)
        if e is not None and e.ingested_seq == ingested_seq:
            return e.latest
        attach = ingested_seq >> SEQ_BITS
        latest: dict[str, Latest] = {}
        seen = -1
        if e is not None and e.ingested_seq >> SEQ_BITS == attach and ingested_seq > e.ingested_seq:
            new = store.metric_chunks_after(run_id, e.seen_seq)
            seqs = new.column("seq").to_numpy() if new.num_rows else np.empty(0, np.int64)
            if not bool(np.all(seqs >> SEQ_BITS == attach)):  # a later attach (a rewind?)
                e = None
            else:
                latest = dict(e.latest)
                seen = max(e.seen_seq, _fold(latest, new))
        else:
            e = None
        if e is None:
            latest = {}
            seen = _fold(latest, store.metric_chunks(run_id))
        with self._lock:
            self._runs[run_id] = _Cached(ingested_seq, seen, latest)
            self._runs.move_to_end(run_id)
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        return latest


def latest_metrics(stored: Mapping[str, Latest], records: list[dict[str, Any]],
                   ) -> dict[str, tuple[float, int, int]]:
    """Per key MLflow's latest (value, step, timestamp ms): the stored latest points folded
    with those of not-yet-ingested metric records (in log order)."""
    latest = dict(stored)
    for rec in records:
        for ch in rec["chunks"]:
            for key, col in zip(ch["keys"], ch["vals"], strict=True):
                for st, v, t in zip(ch["step"], col, ch["time"], strict=True):
                    v = float(v)
                    _offer(latest, key, (int(st), _ms(float(t)), _rank(v), v))
    return {k: (v, st, int(ms)) for k, (st, ms, _, v) in latest.items()}


def metric_history(chunks: pa.Table) -> list[tuple[int, float, int]]:
    """One key's points (step, value, timestamp ms) as MLflow's ``SqlAlchemyStore`` answers
    ``get-history``: ordered by timestamp, step, value (log order within a tie), a point
    logged again with the same timestamp, step and value listed once (MLflow's primary key
    for a metric point is key, timestamp, step, stored value and ``is_nan``)."""
    p = _points(chunks)
    if not len(p.step):
        return []
    nan = np.isnan(p.value)
    rank = np.clip(np.where(nan, 0.0, p.value), -_MAX, _MAX)
    idx = np.lexsort((nan, rank, p.step, p.ms))
    ms, step, rank, nan = p.ms[idx], p.step[idx], rank[idx], nan[idx]
    keep = np.ones(len(idx), dtype=bool)
    keep[1:] = ((ms[1:] != ms[:-1]) | (step[1:] != step[:-1]) | (rank[1:] != rank[:-1])
                | (nan[1:] != nan[:-1]))
    idx = idx[keep]
    return list(zip(p.step[idx].tolist(), p.value[idx].tolist(),
                    p.ms[idx].astype(np.int64).tolist(), strict=True))


def pending_chunks(records: list[dict[str, Any]], key: str, skip: set[int]) -> pa.Table:
    """One key's chunks from pending records (seqs in ``skip`` are already in the store)."""
    rows: dict[str, list[Any]] = {"key": [], "seq": [], "step": [], "value": [], "time": []}
    for rec in records:
        if rec["seq"] in skip:
            continue
        for ch in rec["chunks"]:
            for k, col in zip(ch["keys"], ch["vals"], strict=True):
                if k == key:
                    rows["key"].append(k)
                    rows["seq"].append(rec["seq"])
                    rows["step"].append(ch["step"])
                    rows["value"].append([float(v) for v in col])
                    rows["time"].append([float(t) for t in ch["time"]])
    return pa.table(rows, schema=pa.schema([
        ("key", pa.string()), ("seq", pa.int64()), ("step", pa.list_(pa.int64())),
        ("value", pa.list_(pa.float64())), ("time", pa.list_(pa.float64()))]))


def run_entity(run_id: str, detail: Mapping[str, Any] | None, side: Mapping[str, Any] | None,
               experiment_id: str, latest: Mapping[str, tuple[float, int, int]] | None = None,
               ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The MLflow ``Run`` JSON of a run, and its view for search filters.

    ``detail`` is the stored run (None until its first records are ingested), ``side`` the
    MLflow sidecar (None for runs logged with ``assay.init``), ``latest`` MLflow's latest
    (value, step, timestamp ms) of each metric (:func:`latest_metrics`; None leaves metrics
    out, for a view that no clause reads them from).
    """
    d = detail or {}
    s = side or {}
    name = s.get("run_name") or d.get("name", "")
    status = s.get("status") or STATUS_TO_MLFLOW.get(d.get("status", "running"), "RUNNING")
    start = s.get("start_time") or int((d.get("created_at") or 0) * 1000)
    end = s.get("end_time")
    if end is None and d.get("finished_at") and not side:
        end = int(d["finished_at"] * 1000)
    info: dict[str, Any] = {
        "run_id": run_id, "run_uuid": run_id, "run_name": name,
        "experiment_id": s.get("experiment_id", experiment_id),
        "user_id": s.get("user_id", ""), "status": status, "start_time": start,
        "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
        "lifecycle_stage": s.get("lifecycle_stage", "active"),
    }
    if end is not None:
        info["end_time"] = end
    latest = latest or {}
    metrics = [{"key": k, "value": v, "timestamp": t, "step": st}
               for k, (v, st, t) in sorted(latest.items())]
    if side is not None:
        params = dict(s.get("params", {}))
        tags = dict(s.get("tags", {}))
    else:
        params = _flat_params(d.get("config") or {})
        tags = {"mlflow.runName": name, **{t: "" for t in d.get("tags", [])}}
    run = {"info": info,
           "data": {"metrics": metrics,
                    "params": [{"key": k, "value": v} for k, v in params.items()],
                    "tags": [{"key": k, "value": v} for k, v in tags.items()]},
           "inputs": {}}
    if s.get("outputs"):  # MLflow 3: the logged models the run output
        run["outputs"] = {"model_outputs": [dict(o) for o in s["outputs"]]}
    view = {"metrics": {k: v for k, (v, _, _) in latest.items()}, "params": params,
            "tags": tags, "attributes": {**info, "name": name}}
    return run, view
