"""Assay runs and experiments as MLflow's JSON entities (what ``Run.from_proto`` parses)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from ..store.records import RunRecord
from .mlflow_state import STATUS_TO_MLFLOW

__all__ = [
    "experiment_json",
    "experiment_view",
    "pending_chunks",
    "pending_latest",
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


def pending_latest(records: list[dict[str, Any]]) -> dict[str, tuple[float, int, float]]:
    """Per key the last (value, step, time) in not-yet-ingested metric records."""
    out: dict[str, tuple[float, int, float]] = {}
    for rec in records:
        for ch in rec["chunks"]:
            for key, col in zip(ch["keys"], ch["vals"], strict=True):
                out[key] = (col[-1], ch["step"][-1], ch["time"][-1])
    return out


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
               experiment_id: str, pending: dict[str, tuple[float, int, float]] | None = None,
               ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The MLflow ``Run`` JSON of a run, and its view for search filters.

    ``detail`` is the stored run (None until its first records are ingested), ``side`` the
    MLflow sidecar (None for runs logged with ``assay.init``), ``pending`` the latest metric
    values written but not yet ingested.
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
    ts = int((d.get("updated_at") or 0) * 1000)
    latest: dict[str, tuple[float, int, int]] = {
        k: (st.get("last"), int(st.get("step", 0)), ts)
        for k, st in (d.get("summary_stats") or {}).items()}
    for k, (v, step, t) in (pending or {}).items():
        latest[k] = (v, step, round(t * 1000))
    metrics = [{"key": k, "value": v if v is not None else math.nan, "timestamp": t, "step": st}
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
    view = {"metrics": {k: v for k, (v, _, _) in latest.items()}, "params": params,
            "tags": tags, "attributes": {**info, "name": name}}
    return run, view
