"""MLflow 3's logged models, so ``mlflow.<flavor>.log_model`` and ``models:/<model_id>`` work.

In MLflow 3 every ``log_model`` creates a *logged model* (``POST /logged-models``, status
PENDING), links it to the run as an output (``POST /runs/outputs``, in :mod:`.mlflow`), uploads
the model's files to its ``artifact_uri`` (``mlflow-artifacts:/<experiment id>/models/<model
id>/artifacts``, through :mod:`.mlflow_artifacts`) and finalizes it (``PATCH
/logged-models/<id>``, READY or UPLOAD_FAILED). Served here, with MLflow's routes and JSON
shapes (``service.proto``): create, get (``?allow_deleted=true``), finalize, delete (soft, as
MLflow's SQL store does), search, set and delete tags, and log params. Metrics that
``log_batch`` carries with a ``model_id`` (``log_model`` copies the run's metrics of its step
so) are kept on the model too (:mod:`.mlflow`).

Search takes MLflow's logged-model filter (``name = 'model' AND tags.k = 'v' AND
params.alpha = '0.1' AND metrics.acc > 0.9``; attributes ``name``, ``model_id``,
``model_type``, ``status``, ``source_run_id``, ``creation_timestamp[_ms]``/``creation_time``,
``last_updated_timestamp[_ms]``), ``order_by`` attributes or ``metrics.<key>`` (nulls last,
then newest first, then by id, as MLflow's SQL store), ``datasets`` (metrics on those
datasets only), ``max_results`` (default 100) and offset page tokens.

Roles: reads need a viewer. Writes need a researcher who owns the model, or a supervisor. A
model belongs to the owner of its source run (creating one for a run needs write access to
the run), or to its creator when it has no run. Records live in
``<data dir>/mlflow/models/<model_id>.json`` (:class:`.mlflow_state.LoggedModels`).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import NotFoundError, PermissionDeniedError, UserInputError
from .auth import Principal, Researcher, Role, Viewer
from .http import ERROR_RESPONSES, SafeJSONResponse, StrictJSONRoute, ok
from .ingest import RemoteIngest
from .mlflow_models import KV
from .mlflow_search import (
    Clause,
    matches,
    page_offset,
    page_token,
    parse_filter,
    sort_key,
)
from .mlflow_state import MODEL_STATUSES, LoggedModels, MlflowState

__all__ = ["check_model_writer", "logged_model", "model_id_ok", "model_json", "router"]

router = APIRouter(tags=["mlflow"], route_class=StrictJSONRoute, responses=ERROR_RESPONSES)

_MODEL_ID_RE = re.compile(r"^m-[0-9a-f]{32}$")
_NAME_BAD = ("/", ":", ".", "%", '"', "'")  # MLflow's _validate_logged_model_name
_ALIASES = {"creation_time": "creation_timestamp_ms", "creation_timestamp": "creation_timestamp_ms",
            "last_updated_timestamp": "last_updated_timestamp_ms",
            "last_updated_time": "last_updated_timestamp_ms"}
_ATTRS = {"name", "model_id", "model_type", "status", "source_run_id", "creation_timestamp_ms",
          "last_updated_timestamp_ms", *_ALIASES}
_STATUS_NAMES = {"LOGGED_MODEL_STATUS_UNSPECIFIED": "UNSPECIFIED",
                 "LOGGED_MODEL_PENDING": "PENDING", "LOGGED_MODEL_READY": "READY",
                 "LOGGED_MODEL_UPLOAD_FAILED": "FAILED"}
DEFAULT_MAX_RESULTS = 100
ModelId = Annotated[str, Path(max_length=200)]


def model_id_ok(model_id: str) -> bool:
    """Whether ``model_id`` has the shape of the ids this server makes (``m-<32 hex>``)."""
    return bool(_MODEL_ID_RE.match(model_id))


def _models(request: Request) -> LoggedModels:
    state: MlflowState = request.app.state.mlflow
    return state.models


def _not_found(model_id: str) -> NotFoundError:
    return NotFoundError(f"Logged model with ID {model_id!r} not found.",
                         hint="search them with logged-models/search")


def logged_model(request: Request, model_id: str, *,
                 allow_deleted: bool = False) -> dict[str, Any]:
    """The model's record; NotFoundError (404) if there is none (or it is deleted)."""
    m = _models(request).get(model_id) if model_id_ok(model_id) else None
    if m is None or (not allow_deleted and m.get("lifecycle_stage") == "deleted"):
        raise _not_found(model_id)
    return m


def check_model_writer(who: Principal, model: dict[str, Any]) -> None:
    """Refuse a researcher who does not own the model (supervisors may change any)."""
    if who.can(Role.SUPERVISOR) or model.get("owner") == who.name:
        return
    raise PermissionDeniedError(
        f"logged model {model['model_id']} belongs to {model.get('owner') or 'another writer'}"
        f", not {who.name}", hint="change your own models, or use a supervisor token")


def _writable(request: Request, who: Principal, model_id: str) -> dict[str, Any]:
    m = logged_model(request, model_id, allow_deleted=True)  # as MLflow: a deleted one takes writes
    check_model_writer(who, m)
    return m


def model_json(m: dict[str, Any]) -> dict[str, Any]:
    """MLflow's ``LoggedModel`` JSON of a record."""
    info: dict[str, Any] = {
        "model_id": m["model_id"], "experiment_id": m["experiment_id"], "name": m["name"],
        "creation_timestamp_ms": m["creation_timestamp_ms"],
        "last_updated_timestamp_ms": m["last_updated_timestamp_ms"],
        "artifact_uri": m["artifact_location"], "status": MODEL_STATUSES[m["status"]],
        "tags": [{"key": k, "value": v} for k, v in m["tags"].items()]}
    for k in ("model_type", "source_run_id", "status_message"):
        if m.get(k):
            info[k] = m[k]
    return {"info": info, "data": {
        "params": [{"key": k, "value": v} for k, v in m["params"].items()],
        "metrics": list(m.get("metrics", []))}}


# -- bodies -------------------------------------------------------------------------------------
class _M(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CreateLoggedModel(_M):
    experiment_id: Annotated[str, Field(min_length=1, max_length=32)]
    name: str | None = Field(default=None, max_length=500)
    model_type: str | None = Field(default=None, max_length=500)
    source_run_id: str | None = Field(default=None, max_length=64)
    params: list[KV] = Field(default_factory=list, max_length=1000)
    tags: list[KV] = Field(default_factory=list, max_length=1000)


class FinalizeLoggedModel(_M):
    status: str | int


class LoggedModelTags(_M):
    tags: list[KV] = Field(default_factory=list, max_length=1000)


class LoggedModelParams(_M):
    params: list[KV] = Field(default_factory=list, max_length=1000)


class DatasetRef(_M):
    dataset_name: Annotated[str, Field(min_length=1, max_length=500)]
    dataset_digest: str | None = Field(default=None, max_length=500)


class OrderBy(_M):
    field_name: Annotated[str, Field(min_length=1, max_length=500)]
    ascending: bool = True
    dataset_name: str | None = Field(default=None, max_length=500)
    dataset_digest: str | None = Field(default=None, max_length=500)


class SearchLoggedModels(_M):
    experiment_ids: list[Annotated[str, Field(max_length=32)]] = Field(max_length=1000)
    filter: str | None = Field(default=None, max_length=10_000)
    datasets: list[DatasetRef] = Field(default_factory=list, max_length=100)
    max_results: int | None = Field(default=None, ge=0, le=50_000)
    order_by: list[OrderBy] = Field(default_factory=list, max_length=20)
    page_token: str | None = Field(default=None, max_length=100)


def _status(v: str | int) -> int:
    if isinstance(v, int) and 0 <= v < len(MODEL_STATUSES):
        return v
    if isinstance(v, str) and v in MODEL_STATUSES:
        return MODEL_STATUSES.index(v)
    raise UserInputError(f"unknown logged model status {v!r}",
                         hint="LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED (or 0-3)")


def _unique(kvs: list[KV]) -> dict[str, str]:
    return {kv.key: kv.value for kv in kvs}  # the last value of a repeated key, as MLflow


# -- routes -------------------------------------------------------------------------------------
@router.post("/logged-models", summary="Create a logged model (MLflow 3)")
def create_logged_model(request: Request, body: CreateLoggedModel,
                        who: Researcher) -> SafeJSONResponse:
    """A new model in PENDING status; ``log_model`` then uploads its files and finalizes it."""
    if body.name is not None and (not body.name or any(c in body.name for c in _NAME_BAD)):
        raise UserInputError(f"Invalid model name ({body.name!r}) provided. Model name must be "
                             "a non-empty string and cannot contain the following characters: "
                             f"{_NAME_BAD}", hint="pick another name")
    state: MlflowState = request.app.state.mlflow
    exp = state.experiment(body.experiment_id)
    if exp["lifecycle_stage"] != "active":
        raise UserInputError(f"experiment {exp['name']!r} is deleted",
                             hint="restore it with experiments/restore")
    owner = who.name
    if body.source_run_id:
        rid = body.source_run_id
        if state.run(rid) is None and request.app.state.store.get_run(rid) is None:
            raise NotFoundError(f"no run {rid!r} (the model's source_run_id)",
                                hint="create the run first, or leave source_run_id out")
        remote: RemoteIngest = request.app.state.remote
        remote.check_writer(who, rid)
        owner = remote.owner(rid) or who.name
    model_id = f"m-{uuid.uuid4().hex}"
    now = int(time.time() * 1000)
    m = {"model_id": model_id, "experiment_id": exp["experiment_id"],
         "name": body.name or f"model-{model_id[2:10]}",
         "artifact_location": f"{exp['artifact_location'].rstrip('/')}/models/{model_id}/artifacts",
         "creation_timestamp_ms": now, "last_updated_timestamp_ms": now, "status": 1,
         "status_message": "", "model_type": body.model_type or "",
         "source_run_id": body.source_run_id or "", "lifecycle_stage": "active",
         "tags": _unique(body.tags), "params": _unique(body.params), "metrics": [],
         "owner": owner}
    _models(request).add(m)
    request.app.state.audit.record(who.name, "mlflow_create_logged_model", model_id,
                                   "mlflow client", {"name": m["name"],
                                                     "experiment_id": m["experiment_id"]})
    return ok({"model": model_json(m)})


@router.post("/logged-models/search", summary="Search logged models (MLflow 3)")
def search_logged_models(request: Request, body: SearchLoggedModels,
                         who: Viewer) -> SafeJSONResponse:
    clauses = parse_filter(body.filter, "attributes", run_aliases=False, attrs=_ATTRS)
    clauses = [Clause(c.kind, _ALIASES.get(c.key, c.key), c.op, c.value) if c.kind == "attributes"
               else c for c in clauses]
    for c in clauses:
        if c.kind == "attributes" and c.key.endswith("_ms") and c.op not in (
                "=", "!=", ">", ">=", "<", "<="):
            raise UserInputError(f"Invalid comparison operator for attributes.{c.key}: {c.op!r}",
                                 hint="compare timestamps with = != < <= > >=")
        if c.kind in ("params", "tags") and c.op not in ("=", "!=", "LIKE", "ILIKE", "IN",
                                                         "NOT IN"):
            raise UserInputError(f"Invalid comparison operator for {c.kind}.{c.key}: {c.op!r}",
                                 hint="compare params and tags with = != LIKE ILIKE IN")
    order: list[tuple[str, str, bool, OrderBy]] = []
    for ob in body.order_by:
        if "." in ob.field_name:
            entity, key = ob.field_name.split(".", 1)
            if entity != "metrics":
                raise UserInputError(f"Invalid order by field name: {ob.field_name}. Only "
                                     "metrics are supported.", hint="metrics.<key> or an "
                                     "attribute such as creation_timestamp")
            order.append(("metrics", key, ob.ascending, ob))
        else:
            key = _ALIASES.get(ob.field_name, ob.field_name)
            if key not in _ATTRS:
                raise UserInputError(f"Invalid order by field name: {ob.field_name}",
                                     hint=f"one of {sorted(_ATTRS)} or metrics.<key>")
            order.append(("attributes", key, ob.ascending, ob))
    wanted = set(body.experiment_ids)
    found = []
    for m in _models(request).all():
        if m["experiment_id"] not in wanted or m.get("lifecycle_stage") == "deleted":
            continue
        metrics = [x for x in m.get("metrics", []) if _on_datasets(x, body.datasets)]
        if body.datasets and not metrics:
            continue
        if _matches(m, metrics, clauses):
            found.append((m, metrics))
    # MLflow's SQL order: the given keys (nulls last), then the newest first, then by id
    found.sort(key=lambda mm: mm[0]["model_id"])
    if not any(k == "creation_timestamp_ms" for _, k, _, _ in order):
        found.sort(key=lambda mm: mm[0]["creation_timestamp_ms"], reverse=True)
    for kind, key, asc, ob in reversed(order):
        keyed = [(sort_key(_view(m, [x for x in metrics if _on_datasets(x, [ob])] if
                                 ob.dataset_name else metrics), kind, key), (m, metrics))
                 for m, metrics in found]
        have = [kv for kv in keyed if kv[0][0] < 2]
        have.sort(key=lambda kv: kv[0], reverse=not asc)
        found = [mm for _, mm in have] + [mm for k, mm in keyed if k[0] >= 2]
    start = page_offset(body.page_token)
    size = body.max_results or DEFAULT_MAX_RESULTS
    page = found[start: start + size]
    out: dict[str, Any] = {"models": [model_json(m) for m, _ in page]}
    if start + len(page) < len(found):
        out["next_page_token"] = page_token(start + len(page))
    return ok(out)


def _on_datasets(metric: dict[str, Any], datasets: list[DatasetRef] | list[OrderBy]) -> bool:
    if not datasets:
        return True
    return any(metric.get("dataset_name") == d.dataset_name and
               (not d.dataset_digest or metric.get("dataset_digest") == d.dataset_digest)
               for d in datasets)


def _latest(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """Each key's value at the latest (timestamp, step), as MLflow's ordering picks it."""
    best: dict[str, tuple[int, int, float]] = {}
    for x in metrics:
        cand = (int(x.get("timestamp", 0)), int(x.get("step", 0)), float(x["value"]))
        if x["key"] not in best or cand[:2] > best[x["key"]][:2]:
            best[x["key"]] = cand
    return {k: v[2] for k, v in best.items()}


def _view(m: dict[str, Any], metrics: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    attrs = {k: m.get(k) or None for k in ("name", "model_id", "model_type", "source_run_id")}
    attrs["status"] = _STATUS_NAMES[MODEL_STATUSES[m["status"]]]
    attrs["creation_timestamp_ms"] = m["creation_timestamp_ms"]
    attrs["last_updated_timestamp_ms"] = m["last_updated_timestamp_ms"]
    return {"attributes": attrs, "params": m["params"], "tags": m["tags"],
            "metrics": _latest(metrics)}


def _matches(m: dict[str, Any], metrics: list[dict[str, Any]], clauses: list[Clause]) -> bool:
    """Every clause holds; a metric clause holds when any of the model's points of that key
    satisfies it (MLflow's SQL store joins the metric rows)."""
    view = _view(m, metrics)
    for c in clauses:
        if c.kind == "metrics":
            vals = [x["value"] for x in metrics if x["key"] == c.key]
            if not any(matches({"metrics": {c.key: v}}, [c]) for v in vals):
                return False
        elif not matches(view, [c]):
            return False
    return True


@router.get("/logged-models/{model_id}", summary="Get a logged model (MLflow 3)")
def get_logged_model(request: Request, who: Viewer, model_id: ModelId,
                     allow_deleted: Annotated[str | None, Query(max_length=10)] = None,
                     ) -> SafeJSONResponse:
    m = logged_model(request, model_id, allow_deleted=(allow_deleted or "").lower() == "true")
    return ok({"model": model_json(m)})


@router.patch("/logged-models/{model_id}", summary="Finalize a logged model (MLflow 3)")
def finalize_logged_model(request: Request, body: FinalizeLoggedModel, who: Researcher,
                          model_id: ModelId) -> SafeJSONResponse:
    """Set its status (``LOGGED_MODEL_READY`` once its files are uploaded)."""
    status = _status(body.status)
    _writable(request, who, model_id)

    def fin(m: dict[str, Any]) -> None:
        m["status"] = status

    return ok({"model": model_json(_models(request).update(model_id, fin))})


@router.delete("/logged-models/{model_id}", summary="Delete a logged model (MLflow 3)")
def delete_logged_model(request: Request, who: Researcher, model_id: ModelId) -> dict[str, Any]:
    """Mark it deleted (MLflow's soft delete): searches and gets no longer show it; its files
    stay where they are."""
    _writable(request, who, model_id)

    def delete(m: dict[str, Any]) -> None:
        m["lifecycle_stage"] = "deleted"

    _models(request).update(model_id, delete)
    request.app.state.audit.record(who.name, "mlflow_delete_logged_model", model_id,
                                   "mlflow client")
    return {}


def _same_tag(key: str, have: str | None, new: str) -> bool:
    """Whether writing ``new`` over ``have`` changes nothing. The registry's link tag
    (``mlflow.modelVersions``, a JSON list) compares as a set: the client appends the entry
    the server already added, so its copy lists it twice."""
    if have == new:
        return True
    if key != "mlflow.modelVersions" or have is None:
        return False
    try:
        a, b = json.loads(have), json.loads(new)
        return isinstance(a, list) and isinstance(b, list) and \
            {json.dumps(x, sort_keys=True) for x in a} == {json.dumps(x, sort_keys=True) for x in b}
    except (ValueError, TypeError):
        return False


@router.patch("/logged-models/{model_id}/tags", summary="Set logged model tags (MLflow 3)")
def set_logged_model_tags(request: Request, body: LoggedModelTags, who: Researcher,
                          model_id: ModelId) -> dict[str, Any]:
    tags = _unique(body.tags)
    m = logged_model(request, model_id, allow_deleted=True)
    if tags and all(_same_tag(k, m["tags"].get(k), v) for k, v in tags.items()):
        # Changes nothing: e.g. the client's own copy of the mlflow.modelVersions tag the
        # registry already set, after registering someone else's model (which is allowed).
        return {}
    check_model_writer(who, m)

    def upd(m: dict[str, Any]) -> None:
        m["tags"].update(tags)

    _models(request).update(model_id, upd)
    return {}


@router.delete("/logged-models/{model_id}/tags/{tag_key:path}",
               summary="Delete a logged model tag (MLflow 3)")
def delete_logged_model_tag(request: Request, who: Researcher, model_id: ModelId,
                            tag_key: str) -> dict[str, Any]:
    _writable(request, who, model_id)

    def upd(m: dict[str, Any]) -> None:
        if tag_key not in m["tags"]:
            raise NotFoundError(f"No tag with key {tag_key!r} found for model with ID "
                                f"{model_id!r}.", hint="see logged-models/<id>")
        del m["tags"][tag_key]

    _models(request).update(model_id, upd)
    return {}


@router.post("/logged-models/{model_id}/params", summary="Log logged model params (MLflow 3)")
def log_logged_model_params(request: Request, body: LoggedModelParams, who: Researcher,
                            model_id: ModelId) -> dict[str, Any]:
    _writable(request, who, model_id)
    params = _unique(body.params)

    def upd(m: dict[str, Any]) -> None:
        m["params"].update(params)

    _models(request).update(model_id, upd)
    return {}
