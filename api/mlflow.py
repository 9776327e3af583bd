"""The MLflow tracking REST protocol, so ``MLFLOW_TRACKING_URI=http://host:port`` works.

Mounted under ``/api/2.0/mlflow`` and ``/ajax-api/2.0/mlflow``: experiments
(create, get, get-by-name, search, update, delete, restore, set-experiment-tag), runs (create,
get, update, search, delete, restore, log-batch, log-metric, log-parameter, set-tag,
delete-tag) and metrics/get-history, with the payloads ``mlflow.MlflowClient`` sends
(mlflow 3.x ``RestStore``). Experiments map to projects; runs are assay runs written through
the same WAL and ingest path as remote logging (params become config, tags ``env.mlflow_tags``),
and reads overlay what is written but not yet ingested, so MLflow's read-your-writes holds.
The token comes from ``MLFLOW_TRACKING_TOKEN`` (``Authorization: Bearer``).
Artifacts go through MLflow's artifact proxy (:mod:`.mlflow_artifacts`), MLflow 3's logged models
through :mod:`.mlflow_logged` (and ``runs/outputs`` here), the Model Registry (registered models,
versions, aliases) through :mod:`.mlflow_registry`; datasets/inputs and traces are not served
(404).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, Query, Request

from ..errors import NotFoundError, PermissionDeniedError, UserInputError
from ..sdk.capture import is_secret_param, scrub_text
from ..store.records import validate_name
from .auth import Principal, Researcher, Role, Supervisor, Viewer
from .http import ERROR_RESPONSES, SafeJSONResponse, StrictJSONRoute, ok
from .ingest import RemoteIngest
from .mlflow_logged import check_model_writer, logged_model
from .mlflow_logged import router as logged_models_router
from .mlflow_models import (
    KV,
    CreateExperiment,
    CreateRun,
    DeleteTag,
    ExperimentRef,
    ExperimentTag,
    LogBatch,
    LogMetric,
    LogOutputs,
    LogParam,
    MetricIn,
    RunRef,
    SearchExperiments,
    SearchRuns,
    SetTag,
    UpdateExperiment,
    UpdateRun,
)
from .mlflow_registry import router as registry_router
from .mlflow_search import (
    matches,
    page_offset,
    page_token,
    parse_filter,
    parse_order_by,
    sort_key,
)
from .mlflow_state import MLFLOW_TO_STATUS, MlflowState, project_for
from .mlflow_views import (
    LatestMetrics,
    experiment_json,
    experiment_view,
    latest_metrics,
    metric_history,
    pending_chunks,
    record_detail,
    run_entity,
)
from .query import RunsIndex
from .records import validate_record
from .store_ext import ServerStore

__all__ = ["PREFIXES", "router"]

PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
router = APIRouter(tags=["mlflow"], route_class=StrictJSONRoute, responses=ERROR_RESPONSES)


def _state(request: Request) -> MlflowState:
    return request.app.state.mlflow  # type: ignore[no-any-return]


def _remote(request: Request) -> RemoteIngest:
    return request.app.state.remote  # type: ignore[no-any-return]


_LATEST_LOCK = threading.Lock()


def _latest(request: Request, rid: str, detail: dict[str, Any] | None,
            pending: list[dict[str, Any]]) -> dict[str, tuple[float, int, int]]:
    """MLflow's latest value of each of a run's metrics (stored and not yet ingested)."""
    state = request.app.state
    cache: LatestMetrics | None = getattr(state, "mlflow_latest", None)
    if cache is None:
        with _LATEST_LOCK:
            cache = getattr(state, "mlflow_latest", None)
            if cache is None:
                cache = state.mlflow_latest = LatestMetrics()
    stored = cache.of(state.store, rid, detail["ingested_seq"]) if detail is not None else {}
    return latest_metrics(stored, pending)


def _view_type(v: str | int) -> set[str]:
    v = {1: "ACTIVE_ONLY", 2: "DELETED_ONLY", 3: "ALL"}.get(v, v) if isinstance(v, int) else v
    if v not in ("ACTIVE_ONLY", "DELETED_ONLY", "ALL"):
        raise UserInputError(f"unknown view type {v!r}", hint="ACTIVE_ONLY, DELETED_ONLY or ALL")
    return {"ACTIVE_ONLY": {"active"}, "DELETED_ONLY": {"deleted"}, "ALL": {"active", "deleted"}}[v]


_page = page_offset
_token = page_token


def _sort(items: list[Any], view_of: Any, order: list[tuple[str, str, bool]]) -> list[Any]:
    for kind, key, asc in reversed(order):  # stable sorts, last key first; NaN, missing last
        keyed = [(sort_key(view_of(i), kind, key), i) for i in items]
        have = [ki for ki in keyed if ki[0][0] < 2]
        have.sort(key=lambda ki: ki[0], reverse=not asc)
        items = [i for _, i in have] + [i for k, i in keyed if k[0] == 2] + \
            [i for k, i in keyed if k[0] == 3]
    return items


# -- experiments ------------------------------------------------------------------------------
@router.post("/experiments/create")
def create_experiment(request: Request, body: CreateExperiment, who: Researcher) -> dict[str, Any]:
    e = _state(request).create(body.name, body.artifact_location,
                               {t.key: t.value for t in body.tags}, owner=who.name)
    request.app.state.audit.record(who.name, "mlflow_create_experiment", e["experiment_id"],
                                   "mlflow client", {"name": e["name"], "project": e["project"]})
    return {"experiment_id": e["experiment_id"]}


@router.get("/experiments/get")
def get_experiment(request: Request, who: Viewer,
                   experiment_id: Annotated[str, Query(max_length=32)]) -> dict[str, Any]:
    return {"experiment": experiment_json(_state(request).experiment(experiment_id))}


@router.get("/experiments/get-by-name")
def get_experiment_by_name(request: Request, who: Viewer,
                           experiment_name: Annotated[str, Query(max_length=500)]) -> dict[str, Any]:
    st = _state(request)
    e = st.by_name(experiment_name)
    if e is None:
        index: RunsIndex = request.app.state.index
        st.register_projects([p["project"] for p in index.projects()])
        e = st.by_name(experiment_name)
    if e is None:
        raise NotFoundError(f"no experiment named {experiment_name!r}",
                            hint="create it with experiments/create")
    return {"experiment": experiment_json(e)}


@router.post("/experiments/search")
def search_experiments(request: Request, body: SearchExperiments, who: Viewer) -> dict[str, Any]:
    st = _state(request)
    st.register_projects([p["project"] for p in request.app.state.index.projects()])
    stages = _view_type(body.view_type)
    clauses = parse_filter(body.filter, "attributes", run_aliases=False)
    exps = [e for e in st.experiments() if e["lifecycle_stage"] in stages
            and matches(experiment_view(e), clauses)]
    order = (parse_order_by(body.order_by, run_aliases=False)
             or [("attributes", "last_update_time", False)])
    exps = _sort(exps, experiment_view, order)
    start = _page(body.page_token)
    page = exps[start: start + body.max_results]
    out: dict[str, Any] = {"experiments": [experiment_json(e) for e in page]}
    if start + len(page) < len(exps):
        out["next_page_token"] = _token(start + len(page))
    return out


def _check_experiment_owner(request: Request, who: Principal, exp_id: str) -> None:
    """Researchers rename and tag only the experiments they created; supervisors any (an
    experiment made for a project, or by an older server, has no owner)."""
    if who.can(Role.SUPERVISOR):
        return
    owner = _state(request).experiment(exp_id).get("owner") or ""
    if owner != who.name:
        raise PermissionDeniedError(
            f"experiment {exp_id} belongs to {owner or 'no researcher'}, not {who.name}",
            hint="rename and tag your own experiments, or ask a supervisor")


@router.post("/experiments/update")
def update_experiment(request: Request, body: UpdateExperiment, who: Researcher) -> dict[str, Any]:
    _check_experiment_owner(request, who, body.experiment_id)
    _state(request).update_experiment(body.experiment_id, name=body.new_name)
    request.app.state.audit.record(who.name, "mlflow_rename_experiment", body.experiment_id,
                                   "mlflow client", {"name": body.new_name})
    return {}


@router.post("/experiments/set-experiment-tag")
def set_experiment_tag(request: Request, body: ExperimentTag, who: Researcher) -> dict[str, Any]:
    _check_experiment_owner(request, who, body.experiment_id)
    _state(request).update_experiment(body.experiment_id, tags={body.key: body.value})
    request.app.state.audit.record(who.name, "mlflow_set_experiment_tag", body.experiment_id,
                                   "mlflow client", {"key": body.key})
    return {}


@router.post("/experiments/delete")
def delete_experiment(request: Request, body: ExperimentRef, who: Supervisor) -> dict[str, Any]:
    _state(request).update_experiment(body.experiment_id, lifecycle_stage="deleted")
    request.app.state.audit.record(who.name, "mlflow_delete_experiment", body.experiment_id,
                                   "mlflow client")
    return {}


@router.post("/experiments/restore")
def restore_experiment(request: Request, body: ExperimentRef, who: Supervisor) -> dict[str, Any]:
    _state(request).update_experiment(body.experiment_id, lifecycle_stage="active")
    request.app.state.audit.record(who.name, "mlflow_restore_experiment", body.experiment_id,
                                   "mlflow client")
    return {}


# -- runs: reads ------------------------------------------------------------------------------
def _entity(request: Request, rid: str) -> dict[str, Any]:
    store: ServerStore = request.app.state.store
    side = _state(request).run(rid)
    rec = store.get_run(rid)
    if rec is None and side is None:
        raise NotFoundError(f"no run {rid!r}", hint="list runs with runs/search")
    detail = record_detail(rec) if rec is not None else None
    pend = _remote(request).pending_metrics(rid, rec.ingested_seq if rec else -1)
    exp = _state(request).by_project(rec.project) if rec is not None else None
    exp_id = side["experiment_id"] if side else (exp["experiment_id"] if exp else "0")
    run, _ = run_entity(rid, detail, side, exp_id, _latest(request, rid, detail, pend))
    return run


@router.get("/runs/get")
def get_run(request: Request, who: Viewer,
            run_id: Annotated[str | None, Query(max_length=64)] = None,
            run_uuid: Annotated[str | None, Query(max_length=64)] = None) -> SafeJSONResponse:
    return ok({"run": _entity(request, RunRef(run_id=run_id, run_uuid=run_uuid).rid())})


@router.post("/runs/search")
def search_runs(request: Request, body: SearchRuns, who: Viewer) -> SafeJSONResponse:
    st = _state(request)
    index: RunsIndex = request.app.state.index
    frame = index.refresh()
    st.register_projects([p["project"] for p in index.projects()])
    exps = {e["experiment_id"]: e for e in st.experiments()}
    wanted = {exps[i]["project"]: i for i in body.experiment_ids if i in exps}
    stages = _view_type(body.run_view_type)
    clauses = parse_filter(body.filter, "attributes")
    order = parse_order_by(body.order_by)
    # metric values are computed for every run only when the filter or the order reads them,
    # else for the runs of the page
    by_metric = any(c.kind == "metrics" for c in clauses) or any(k == "metrics" for k, _, _ in order)
    found: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    ids = frame["run_id"].to_list() if frame.height and "run_id" in frame.columns else []
    remote = _remote(request)
    for rid in dict.fromkeys([*ids, *sorted(st.run_ids())]):  # MLflow runs not yet ingested too
        d = index.detail(rid)
        side = st.run(rid)
        if d is not None:
            project = d["project"]
        elif side is not None and side["experiment_id"] in exps:
            project = exps[side["experiment_id"]]["project"]
        else:
            continue
        if project not in wanted:
            continue
        if (side or {}).get("lifecycle_stage", "active") not in stages:
            continue
        pend = remote.pending_metrics(rid, d["ingested_seq"] if d else -1) if side else []
        args = (rid, d, side, wanted[project])
        latest = _latest(request, rid, d, pend) if by_metric else None
        _, view = run_entity(*args, latest)
        if matches(view, clauses):
            found.append(((*args, pend, latest), view))
    # ties as in MLflow's SQL store: the newest start first, then by run id
    found = _sort(found, lambda rv: rv[1],
                  [*order, ("attributes", "start_time", False), ("attributes", "run_id", True)])
    start = _page(body.page_token)
    page = found[start: start + body.max_results]
    runs = []
    for (rid, d, side, exp_id, pend, latest), _ in page:
        if latest is None:
            latest = _latest(request, rid, d, pend)
        runs.append(run_entity(rid, d, side, exp_id, latest)[0])
    out: dict[str, Any] = {"runs": runs}
    if start + len(page) < len(found):
        out["next_page_token"] = _token(start + len(page))
    return ok(out)


def _history(request: Request, rid: str, key: str) -> list[tuple[int, float, int]]:
    """Every (step, value, timestamp ms) of a run's metric, stored and not yet ingested."""
    store: ServerStore = request.app.state.store
    rec = store.get_run(rid)
    stored = store.metric_chunks(rid, [key])
    pend = _remote(request).pending_metrics(rid, rec.ingested_seq if rec else -1)
    extra = pending_chunks(pend, key, set(stored.column("seq").to_pylist()))
    chunks = pa.concat_tables([stored.select(extra.column_names).cast(extra.schema), extra])
    return metric_history(chunks)


@router.get("/metrics/get-history")
def get_metric_history(request: Request, who: Viewer,
                       metric_key: Annotated[str, Query(min_length=1, max_length=250)],
                       run_id: Annotated[str | None, Query(max_length=64)] = None,
                       run_uuid: Annotated[str | None, Query(max_length=64)] = None,
                       max_results: Annotated[int | None, Query(ge=1)] = None,
                       page_token: Annotated[str | None, Query(max_length=100)] = None,
                       ) -> SafeJSONResponse:
    """Every logged point of a metric (repeated steps kept), in the order of MLflow's SQL
    store (timestamp, step, value), ``max_results`` a page (``next_page_token`` for the next
    one, as MLflow's server pages it)."""
    rid = RunRef(run_id=run_id, run_uuid=run_uuid).rid()
    start = _page(page_token)
    store: ServerStore = request.app.state.store
    if store.get_run(rid) is None and _state(request).run(rid) is None:
        raise NotFoundError(f"no run {rid!r}", hint="list runs with runs/search")
    points = _history(request, rid, metric_key)
    end = len(points) if max_results is None else start + max_results
    out: dict[str, Any] = {"metrics": [
        {"key": metric_key, "value": v, "timestamp": t, "step": s}
        for s, v, t in points[start:end]]}
    if end < len(points):
        out["next_page_token"] = _token(end)
    return ok(out)


# -- runs: writes -----------------------------------------------------------------------------
def _writable(request: Request, who: Principal, rid: str) -> dict[str, Any]:
    side = _state(request).run(rid)
    if side is None:
        if request.app.state.store.get_run(rid) is not None:
            raise UserInputError(f"run {rid} was not created through MLflow",
                                 hint="log to it with assay (assay.init(resume=...))")
        raise NotFoundError(f"no run {rid!r}", hint="create it with runs/create")
    if side["lifecycle_stage"] != "active":
        raise UserInputError(f"run {rid} is deleted", hint="restore it with runs/restore")
    _remote(request).check_writer(who, rid)
    return side


def _append(request: Request, who: Principal, rid: str, records: list[dict[str, Any]],
            why: str) -> None:
    for rec in records:  # the same checks as remote records: nothing unappliable is stored
        validate_record({"time": 0.0, **rec, "seq": 1}, rid)
    if records:
        _remote(request).append_records(who, rid, records, why, track_pending=True)


def _tags_record(tags: dict[str, str]) -> dict[str, Any]:
    """The tags' copy in the run's signed environment, scrubbed as a captured environment
    is (``mlflow.source.git.repoURL`` may carry ``user:token@``); MLflow reads get the tags
    as logged, from the run's MLflow state."""
    clean = {k: "***" if is_secret_param(k) and v else scrub_text(v) for k, v in tags.items()}
    return {"k": "env", "env": {"source": "mlflow", "mlflow_tags": clean}}


@router.post("/runs/create")
def create_run(request: Request, body: CreateRun, who: Researcher) -> SafeJSONResponse:
    st = _state(request)
    exp = st.experiment(body.experiment_id)
    if exp["lifecycle_stage"] != "active":
        raise UserInputError(f"experiment {exp['name']!r} is deleted",
                             hint="restore it with experiments/restore")
    rid = uuid.uuid4().hex
    tags = {t.key: t.value for t in body.tags}
    name = body.run_name or tags.get("mlflow.runName") or f"mlflow-{rid[:8]}"
    tags["mlflow.runName"] = name
    if body.user_id:
        tags.setdefault("mlflow.user", body.user_id)
    start = body.start_time or int(time.time() * 1000)
    try:
        assay_name = validate_name("run", name)
    except UserInputError:
        assay_name = project_for(name, set(), rid[:8])
    run_rec = {"k": "run", "run_id": rid, "project": exp["project"], "name": assay_name,
               "group": "", "tags": [], "notes": "", "config": {}, "host": "mlflow", "pid": 0,
               "attach": 0, "time": start / 1000}
    side = {"experiment_id": exp["experiment_id"], "run_name": name, "user_id": body.user_id,
            "status": "RUNNING", "start_time": start, "end_time": None,
            "lifecycle_stage": "active", "tags": tags, "params": {}}
    with _remote(request).run_lock(rid):
        _append(request, who, rid, [run_rec, _tags_record(tags)], "mlflow create_run")
        st.save_run(rid, side)
    return ok({"run": _entity(request, rid)})


@router.post("/runs/update")
def update_run(request: Request, body: UpdateRun, who: Researcher) -> SafeJSONResponse:
    rid = body.rid()
    with _remote(request).run_lock(rid):
        side = _writable(request, who, rid)
        recs: list[dict[str, Any]] = []
        if body.run_name:
            side["run_name"] = body.run_name
            side["tags"]["mlflow.runName"] = body.run_name
            recs.append(_tags_record(side["tags"]))
        if body.status and body.status != side["status"]:
            new = MLFLOW_TO_STATUS[body.status]
            if new == "running":
                exp = _state(request).experiment(side["experiment_id"])
                recs.append({"k": "run", "run_id": rid, "project": exp["project"],
                             "name": side["run_name"], "host": "mlflow", "pid": 0, "attach": 0})
                side["end_time"] = None
            else:
                end = body.end_time or int(time.time() * 1000)
                recs.append({"k": "status", "status": new, "error": "", "time": end / 1000})
                side["end_time"] = end
            side["status"] = body.status
        elif body.end_time is not None:
            side["end_time"] = body.end_time
        _append(request, who, rid, recs, "mlflow update_run")
        _state(request).save_run(rid, side)
    return ok({"run_info": _entity(request, rid)["info"]})


def _log(request: Request, who: Principal, rid: str, metrics: list[MetricIn],
         params: list[KV], tags: list[KV], why: str) -> dict[str, Any]:
    keys = [p.key for p in params]
    if len(set(keys)) < len(keys):  # as MLflow's stores do, even for equal values
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise UserInputError(f"duplicate parameter keys in one request: {dupes}",
                             hint="send one value per param key")
    for_models = [m for m in metrics if m.model_id]
    models = {m.model_id: logged_model(request, m.model_id) for m in for_models if m.model_id}
    for model in models.values():
        check_model_writer(who, model)
    with _remote(request).run_lock(rid):
        side = _writable(request, who, rid)
        if for_models:
            metrics = _without_repeats(request, rid, metrics)
        recs: list[dict[str, Any]] = []
        new_params = {}
        for p in params:
            old = side["params"].get(p.key)
            if old is not None and old != p.value:
                raise UserInputError(
                    f"param {p.key!r} of run {rid} is {old!r}; changing it to {p.value!r} is "
                    "not allowed", hint="params are immutable in MLflow; log a new key")
            if old is None:
                new_params[p.key] = p.value
        if new_params:
            recs.append({"k": "config", "update": new_params})
        if tags:
            side["tags"].update({t.key: t.value for t in tags})
            recs.append(_tags_record(side["tags"]))
        if metrics:
            by_key: dict[str, list[MetricIn]] = defaultdict(list)
            for m in metrics:
                by_key[m.key].append(m)
            recs.append({"k": "metrics", "chunks": [
                {"keys": [k], "step": [m.step for m in ms],
                 "time": [m.timestamp / 1000 for m in ms], "vals": [[m.value for m in ms]]}
                for k, ms in by_key.items()]})
        _append(request, who, rid, recs, why)
        side["params"].update(new_params)
        if new_params or tags:
            _state(request).save_run(rid, side)
    for mid in models:
        points = [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step,
                   "model_id": mid, "run_id": rid,
                   **({"dataset_name": m.dataset_name} if m.dataset_name else {}),
                   **({"dataset_digest": m.dataset_digest} if m.dataset_digest else {})}
                  for m in for_models if m.model_id == mid]

        def add(model: dict[str, Any], points: list[dict[str, Any]] = points) -> None:
            have = model.setdefault("metrics", [])
            have.extend(p for p in points if p not in have)

        _state(request).models.update(mid, add)
    return {}


def _without_repeats(request: Request, rid: str, metrics: list[MetricIn]) -> list[MetricIn]:
    """The metrics less those of a logged model that repeat a point the run has: MLflow 3's
    ``log_model`` logs the run's metrics of its step again, with the model's id, and MLflow's
    store keeps one row per (key, value, timestamp, step), so the run's history stays as it
    was (here, a point appended twice would show twice)."""
    seen: dict[str, set[tuple[int, float, int]]] = {}
    out = []
    for m in metrics:
        if m.model_id:
            if m.key not in seen:
                seen[m.key] = set(_history(request, rid, m.key))
            point = (m.step, m.value, m.timestamp)
            if point in seen[m.key]:
                continue
            seen[m.key].add(point)
        out.append(m)
    return out


@router.post("/runs/log-batch")
def log_batch(request: Request, body: LogBatch, who: Researcher) -> dict[str, Any]:
    return _log(request, who, body.rid(), body.metrics, body.params, body.tags, "mlflow log_batch")


@router.post("/runs/log-metric")
def log_metric(request: Request, body: LogMetric, who: Researcher) -> dict[str, Any]:
    m = MetricIn(key=body.key, value=body.value, timestamp=body.timestamp, step=body.step,
                 model_id=body.model_id, dataset_name=body.dataset_name,
                 dataset_digest=body.dataset_digest)
    return _log(request, who, body.rid(), [m], [], [], "mlflow log_metric")


@router.post("/runs/log-parameter")
def log_param(request: Request, body: LogParam, who: Researcher) -> dict[str, Any]:
    return _log(request, who, body.rid(), [], [KV(key=body.key, value=body.value)], [],
                "mlflow log_param")


@router.post("/runs/set-tag")
def set_tag(request: Request, body: SetTag, who: Researcher) -> dict[str, Any]:
    return _log(request, who, body.rid(), [], [], [KV(key=body.key, value=body.value)],
                "mlflow set_tag")


@router.post("/runs/delete-tag")
def delete_tag(request: Request, body: DeleteTag, who: Researcher) -> dict[str, Any]:
    rid = body.rid()
    with _remote(request).run_lock(rid):
        side = _writable(request, who, rid)
        if body.key not in side["tags"]:
            raise NotFoundError(f"run {rid} has no tag {body.key!r}", hint="see runs/get")
        del side["tags"][body.key]
        _append(request, who, rid, [_tags_record(side["tags"])], "mlflow delete_tag")
        _state(request).save_run(rid, side)
    return {}


def _set_stage(request: Request, who: Principal, rid: str, stage: str) -> dict[str, Any]:
    with _remote(request).run_lock(rid):
        side = _state(request).run(rid)
        if side is None:
            raise NotFoundError(f"no MLflow run {rid!r}", hint="list runs with runs/search")
        _remote(request).check_writer(who, rid)
        side["lifecycle_stage"] = stage
        _state(request).save_run(rid, side)
    request.app.state.audit.record(who.name, f"mlflow_{'delete' if stage == 'deleted' else 'restore'}_run",
                                   rid, "mlflow client")
    return {}


@router.post("/runs/delete")
def delete_run(request: Request, body: RunRef, who: Researcher) -> dict[str, Any]:
    return _set_stage(request, who, body.rid(), "deleted")


@router.post("/runs/restore")
def restore_run(request: Request, body: RunRef, who: Researcher) -> dict[str, Any]:
    return _set_stage(request, who, body.rid(), "active")


@router.post("/runs/outputs")
def log_outputs(request: Request, body: LogOutputs, who: Researcher) -> dict[str, Any]:
    """Record logged models as outputs of a run (``log_model`` does, for the model it makes);
    they show in the run's ``outputs.model_outputs``."""
    rid = body.rid()
    for out in body.models:
        logged_model(request, out.model_id)  # 404 for a model there is not
    with _remote(request).run_lock(rid):
        side = _writable(request, who, rid)
        have = side.setdefault("outputs", [])
        new = [o for o in ({"model_id": m.model_id, "step": m.step} for m in body.models)
               if o not in have]
        if new:
            have.extend(new)
            _state(request).save_run(rid, side)
    return {}


# MLflow 3's logged models (their own module), under the same prefixes
router.include_router(logged_models_router)
router.include_router(registry_router)  # the Model Registry (:mod:`.mlflow_registry`)
