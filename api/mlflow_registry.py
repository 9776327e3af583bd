"""MLflow's Model Registry, so ``mlflow.register_model`` and ``models:/<name>@<alias>`` work.

Served under the MLflow prefixes (:mod:`.mlflow`) with MLflow's routes and JSON shapes
(``model_registry.proto``, as mlflow 3.x's registry ``RestStore`` sends them):

* ``registered-models/``: ``create``, ``get``, ``rename`` (its versions and aliases follow),
  ``update`` (description), ``delete`` (with its versions), ``search`` (filter ``name`` with
  ``= != LIKE ILIKE IN``, ``creation_timestamp``/``last_updated_timestamp`` as numbers,
  ``tags.<key>`` with ``= != LIKE ILIKE``; ``order_by`` ``name``, ``timestamp``,
  ``last_updated_timestamp``, ``creation_timestamp``, then by name; ``max_results`` 1-1000,
  default 100; offset page tokens), ``set-tag``, ``delete-tag``, ``get-latest-versions``
  (legacy stages) and ``alias`` (POST sets, DELETE removes, GET resolves, ``latest`` too).
* ``model-versions/``: ``create``, ``get``, ``update`` (description), ``delete``, ``search``
  (``name``, ``run_id``, ``source_path``, ``version_number``, timestamps, ``tags.<key>``;
  ``version_number`` and the timestamps compare as numbers, quoted or not, and a value that
  is not a whole number is a 400, as MLflow's SQL store; a ``name =``/``IN`` filter looks
  the models up by name;
  ``order_by`` ``name``, ``version_number`` and the timestamps, by default the newest
  update first, then name, then the highest version; ``max_results`` up to 200000, default
  10000), ``set-tag``, ``delete-tag``, ``get-download-uri`` and ``transition-stage`` (legacy;
  ``archive_existing_versions`` archives the others in Staging or Production).

A version's ``source`` is a logged model (``models:/m-<id>``, MLflow 3's ``log_model``;
the version keeps its ``model_id`` and ``run_id``, and the logged model gets MLflow's
``mlflow.modelVersions`` tag, as MLflow's server sets it), another version
(``models:/<name>/<version>``, ``@alias``, ``latest``, parsed as MLflow's client does, so a
name may hold ``#``, ``@`` or ``\\``: ``copy_model_version``), a run's
artifacts (``runs:/<run id>/<path>``) or a path this server's artifact proxy serves inside
a run's or a logged model's artifacts (``mlflow-artifacts:/<experiment>/<run id>/artifacts/
...``, ``.../models/<model id>/artifacts/...``); a ``run_id``/``model_id`` sent with it must
name the same run or model. Other sources (local paths, other stores) are refused: this
server could not serve their files. A version is ``READY`` at once (its files are stored
already); ``get-download-uri`` answers the logged model's or artifact's location (for
``runs:/<run id>/<path>``: the run's files at that path if it has them, else, as MLflow 3's
``log_model`` stores them, the run's logged model of that name), so
``mlflow.pyfunc.load_model("models:/<name>@<alias>")`` downloads through
:mod:`.mlflow_artifacts`. (``mlflow.register_model`` of *another* researcher's logged model
creates the version, then the client's own write of that tag is refused by
:mod:`.mlflow_logged`, so the call raises PERMISSION_DENIED after the version exists.)
A prompt version (MLflow 3's ``mlflow.genai.register_prompt``: the version's
``mlflow.prompt.is_prompt`` tag is ``true``) takes only the client's placeholder source
(``dummy-source``, ``prompt-template``), as MLflow's server; its template is a tag and it has
no files. ``last_updated_timestamp`` moves as in MLflow's SQL store: a model's on create,
update, rename, a version's creation, transition or deletion; a version's on update and
transition; tags and aliases move neither.

Roles: reads need a viewer. Writes need a researcher: the registered model's creator owns it
and its versions; another researcher's model takes writes only from a supervisor. Every
write is in the audit trail. Errors are MLflow's: ``RESOURCE_DOES_NOT_EXIST`` (404),
``RESOURCE_ALREADY_EXISTS`` (409), ``INVALID_PARAMETER_VALUE`` (400; also an unknown alias,
as MLflow's SQL store answers), ``PERMISSION_DENIED`` (403); a refused request stores
nothing. Records live in ``<data dir>/mlflow/registry/`` (:mod:`.mlflow_registry_state`).
"""

from __future__ import annotations

import contextlib
import json
import operator
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

from fastapi import APIRouter, Query, Request

from ..errors import NotFoundError, PermissionDeniedError, UserInputError
from .auth import Principal, Researcher, Role, Viewer
from .http import ERROR_RESPONSES, SafeJSONResponse, StrictJSONRoute, ok
from .mlflow_logged import logged_model, model_id_ok
from .mlflow_registry_state import (
    MV_ATTRS,
    MV_ORDER,
    PROMPT_TAG,
    RM_ATTRS,
    RM_ORDER,
    AliasRef,
    CreateModelVersion,
    CreateRegisteredModel,
    LatestVersions,
    ModelRef,
    ModelRegistry,
    ModelTag,
    ModelTagRef,
    RenameRegisteredModel,
    SetAlias,
    TransitionStage,
    UpdateDescription,
    UpdateVersion,
    VersionRef,
    VersionTag,
    VersionTagRef,
    bad_input,
    by_alias,
    candidates,
    canonical_stage,
    check_alias,
    check_name,
    check_tag,
    latest_per_stage,
    max_results_of,
    model_json,
    new_model,
    not_found,
    order_keys,
    search_clauses,
    tags_of,
    top_page,
    version_filter,
    version_json,
    version_no,
    version_of,
    without_prompt_clause,
)
from .mlflow_search import matches
from .mlflow_state import MlflowState

__all__ = ["router"]

router = APIRouter(tags=["mlflow"], route_class=StrictJSONRoute, responses=ERROR_RESPONSES)

_RUN_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_MODELS_VERSIONS_TAG = "mlflow.modelVersions"
_PROMPT_SOURCES = ("dummy-source", "prompt-template")  # mlflow/prompt/constants.py
_INIT = threading.Lock()

Name = Annotated[str, Query(max_length=1000)]
VersionQ = Annotated[str, Query(max_length=40)]


def _registry(request: Request) -> ModelRegistry:
    state = request.app.state
    reg: ModelRegistry | None = getattr(state, "mlflow_registry", None)
    if reg is None:
        with _INIT:
            reg = getattr(state, "mlflow_registry", None)
            if reg is None:
                mlflow: MlflowState = state.mlflow
                reg = state.mlflow_registry = ModelRegistry(mlflow.dir)
    return reg


def _audit(request: Request, who: Principal, action: str, name: str,
           details: dict[str, Any] | None = None) -> None:
    request.app.state.audit.record(who.name, f"mlflow_{action}", name, "mlflow client", details)


def _model_json(request: Request, rm: dict[str, Any]) -> dict[str, Any]:
    return model_json(rm, _registry(request).latest(rm))


# -- lookups and ownership -------------------------------------------------------------------------
def _model(request: Request, name: str) -> dict[str, Any]:
    rm = _registry(request).get(name)
    if rm is None:
        raise not_found(name)
    return rm


def _check_owner(who: Principal, rm: dict[str, Any]) -> None:
    if who.can(Role.SUPERVISOR) or rm.get("owner") == who.name:
        return
    raise PermissionDeniedError(
        f"registered model {rm['name']!r} belongs to {rm.get('owner') or 'another researcher'}"
        f", not {who.name}", hint="change your own registered models, or use a supervisor token")


def _change(request: Request, who: Principal, name: str, fn: Callable[[dict[str, Any]], Any],
            *, touch: bool = True) -> tuple[dict[str, Any], Any]:
    """Apply ``fn`` to the registered model ``name`` if ``who`` may change it (``touch``: set
    its ``last_updated_timestamp``, as MLflow's SQL store does for every change but tags,
    aliases and a version's description)."""
    _check_owner(who, _model(request, name))

    def checked(rm: dict[str, Any]) -> Any:
        _check_owner(who, rm)  # again under the lock: the record read above may be stale
        return fn(rm)

    return _registry(request).update(name, checked, touch=touch)


# -- registered models -----------------------------------------------------------------------------
@router.post("/registered-models/create", summary="Create a registered model (MLflow)")
def create_registered_model(request: Request, body: CreateRegisteredModel,
                            who: Researcher) -> SafeJSONResponse:
    name = check_name(body.name)
    rm = _registry(request).add(new_model(name, owner=who.name, tags=tags_of(body.tags),
                                          description=body.description or ""))
    _audit(request, who, "create_registered_model", name)
    return ok({"registered_model": _model_json(request, rm)})


@router.get("/registered-models/get", summary="Get a registered model (MLflow)")
def get_registered_model(request: Request, who: Viewer, name: Name) -> SafeJSONResponse:
    return ok({"registered_model": _model_json(request, _model(request, name))})


@router.post("/registered-models/rename", summary="Rename a registered model (MLflow)")
def rename_registered_model(request: Request, body: RenameRegisteredModel,
                            who: Researcher) -> SafeJSONResponse:
    new = check_name(body.new_name, "new_name")

    def rename(rm: dict[str, Any]) -> None:
        now = int(time.time() * 1000)
        rm["name"] = new
        for v in rm["versions"].values():  # as MLflow's store: the versions were updated too
            v["last_updated_timestamp"] = now

    rm, _ = _change(request, who, body.name, rename)
    _audit(request, who, "rename_registered_model", body.name, {"new_name": new})
    return ok({"registered_model": _model_json(request, rm)})


@router.patch("/registered-models/update", summary="Update a registered model (MLflow)")
def update_registered_model(request: Request, body: UpdateDescription,
                            who: Researcher) -> SafeJSONResponse:
    def upd(rm: dict[str, Any]) -> None:
        rm["description"] = body.description or ""

    rm, _ = _change(request, who, body.name, upd)
    _audit(request, who, "update_registered_model", body.name)
    return ok({"registered_model": _model_json(request, rm)})


@router.delete("/registered-models/delete", summary="Delete a registered model (MLflow)")
def delete_registered_model(request: Request, body: ModelRef, who: Researcher) -> dict[str, Any]:
    """Delete the registered model with its versions, tags and aliases (the files its
    versions point to stay: they belong to their runs and logged models)."""
    rm = _registry(request).delete(body.name, lambda rm: _check_owner(who, rm))
    _audit(request, who, "delete_registered_model", body.name,
           {"versions": sorted(int(n) for n in rm["versions"])})
    return {}


@router.get("/registered-models/search", summary="Search registered models (MLflow)")
def search_registered_models(
        request: Request, who: Viewer,
        filter: Annotated[str | None, Query(max_length=10_000)] = None,
        max_results: Annotated[int | None, Query()] = None,
        order_by: Annotated[list[str] | None, Query(max_length=20)] = None,
        page_token: Annotated[str | None, Query(max_length=100)] = None) -> SafeJSONResponse:
    clauses, prompts = without_prompt_clause(search_clauses(filter, RM_ATTRS))
    order = order_keys(order_by, RM_ORDER)
    size = max_results_of(max_results, 100, 1000)
    models, clauses = candidates(_registry(request), clauses)
    found = [rm for rm in models
             if (prompts or rm["tags"].get(PROMPT_TAG) != "true") and matches(
                 {"attributes": {k: rm[k] for k in RM_ATTRS}, "tags": rm["tags"]}, clauses)]
    if not any(k == "name" for k, _ in order):
        order.append(("name", True))
    page, token = top_page(found, order, page_token, size, operator.getitem)
    out: dict[str, Any] = {"registered_models": [_model_json(request, rm) for rm in page]}
    if token:
        out["next_page_token"] = token
    return ok(out)


@router.post("/registered-models/set-tag", summary="Set a registered model tag (MLflow)")
def set_registered_model_tag(request: Request, body: ModelTag, who: Researcher) -> dict[str, Any]:
    check_tag(body.key, body.value)
    _change(request, who, body.name, lambda rm: rm["tags"].update({body.key: body.value}),
            touch=False)
    _audit(request, who, "set_registered_model_tag", body.name, {"key": body.key})
    return {}


@router.delete("/registered-models/delete-tag", summary="Delete a registered model tag (MLflow)")
def delete_registered_model_tag(request: Request, body: ModelTagRef,
                                who: Researcher) -> dict[str, Any]:
    """As MLflow's store: deleting a tag the model lacks is not an error."""
    check_tag(body.key, "")
    _change(request, who, body.name, lambda rm: rm["tags"].pop(body.key, None), touch=False)
    _audit(request, who, "delete_registered_model_tag", body.name, {"key": body.key})
    return {}


def _latest_versions(request: Request, name: str, stages: list[str]) -> SafeJSONResponse:
    rm = _model(request, name)
    wanted = {canonical_stage(s) for s in stages} if stages else None
    return ok({"model_versions": [version_json(rm, v) for v in latest_per_stage(rm, wanted)]})


@router.post("/registered-models/get-latest-versions",
             summary="The newest version in each stage (MLflow, legacy)")
def get_latest_versions(request: Request, body: LatestVersions, who: Viewer) -> SafeJSONResponse:
    return _latest_versions(request, body.name, body.stages)


@router.get("/registered-models/get-latest-versions",
            summary="The newest version in each stage (MLflow, legacy)")
def get_latest_versions_get(request: Request, who: Viewer, name: Name,
                            stages: Annotated[list[str] | None, Query(max_length=10)] = None,
                            ) -> SafeJSONResponse:
    return _latest_versions(request, name, stages or [])


@router.post("/registered-models/alias", summary="Point an alias at a model version (MLflow)")
def set_registered_model_alias(request: Request, body: SetAlias, who: Researcher) -> dict[str, Any]:
    check_alias(body.alias, setting=True)
    number = version_no(body.version)

    def point(rm: dict[str, Any]) -> None:
        version_of(rm, number)
        rm["aliases"][body.alias] = number

    _change(request, who, body.name, point, touch=False)
    _audit(request, who, "set_registered_model_alias", body.name,
           {"alias": body.alias, "version": number})
    return {}


@router.delete("/registered-models/alias", summary="Delete a registered model alias (MLflow)")
def delete_registered_model_alias(request: Request, body: AliasRef,
                                  who: Researcher) -> dict[str, Any]:
    """As MLflow's store: deleting an alias the model lacks is not an error."""
    check_alias(body.alias, setting=False)
    _change(request, who, body.name, lambda rm: rm["aliases"].pop(body.alias, None),
            touch=False)
    _audit(request, who, "delete_registered_model_alias", body.name, {"alias": body.alias})
    return {}




@router.get("/registered-models/alias", summary="The model version an alias points to (MLflow)")
def get_model_version_by_alias(request: Request, who: Viewer, name: Name,
                               alias: Annotated[str, Query(max_length=1000)]) -> SafeJSONResponse:
    check_alias(alias, setting=False)
    rm = _model(request, name)
    return ok({"model_version": version_json(rm, by_alias(rm, alias))})


# -- model versions: the source --------------------------------------------------------------------
_SOURCE_HINT = ("register models:/<logged model id>, runs:/<run id>/<path>, "
                "models:/<name>/<version> or a mlflow-artifacts:/ URI inside a run's or a "
                "logged model's artifacts")


def _bad_source(source: str, why: str) -> UserInputError:
    return bad_input(f"Invalid model version source: '{source}'. {why}", _SOURCE_HINT)


def _run_experiment(request: Request, source: str, rid: str) -> str:
    """The experiment of a run (400 if there is no such run, as MLflow's server answers)."""
    if not _RUN_ID_RE.fullmatch(rid):
        raise _bad_source(source, f"There is no run {rid!r}.")
    state: MlflowState = request.app.state.mlflow
    side = state.run(rid)
    if side is not None:
        return str(side["experiment_id"])
    rec = request.app.state.store.get_run(rid)
    if rec is None:
        raise _bad_source(source, f"There is no run {rid!r}.")
    exp = state.by_project(rec.project)
    return exp["experiment_id"] if exp else "0"


def _run_path(request: Request, source: str, rid: str, path: list[str]) -> tuple[str, str]:
    """Where ``runs:/<rid>/<path>`` is, as the client's ``RunsArtifactRepository`` finds it:
    the run's own artifacts if that path holds files, else (MLflow 3, where ``log_model``
    stores the files with the logged model) the run's newest logged model named ``path``.
    Returns ``(download URI, logged model id or "")``."""
    exp_id = _run_experiment(request, source, rid)
    own = f"mlflow-artifacts:/{exp_id}/{rid}/artifacts" + "".join(f"/{p}" for p in path)
    files = Path(request.app.state.data_dir) / "mlflow-artifacts" / "files"  # .mlflow_artifacts
    if not path or files.joinpath(exp_id, rid, "artifacts", *path).exists():
        return own, ""
    state: MlflowState = request.app.state.mlflow
    models = [m for m in state.models.all() if m.get("source_run_id") == rid and
              m["name"] == "/".join(path) and m.get("lifecycle_stage") != "deleted"]
    if not models:
        return own, ""
    newest = max(models, key=lambda m: (m["creation_timestamp_ms"], m["model_id"]))
    return newest["artifact_location"], newest["model_id"]


def _source_model(request: Request, source: str, mid: str) -> dict[str, Any]:
    try:
        return logged_model(request, mid)
    except NotFoundError:
        raise _bad_source(source, f"There is no logged model {mid!r}.") from None


def _improper(source: str) -> UserInputError:
    return _bad_source(source, f"Not a proper models:/ URI: {source}. Models URIs must be of "
                               "the form 'models:/name/suffix' or 'models:/name@alias' where "
                               "suffix is a version, stage, or the string 'latest' and where "
                               "alias is a registered model alias. Only one of suffix or alias "
                               "can be defined at a time.")


def _models_source(request: Request, body: CreateModelVersion, source: str
                   ) -> tuple[str, str, str, str]:
    """A ``models:/`` source, parsed as MLflow's ``_parse_model_uri``: ``models:/<model
    id>`` (a logged model), ``models:/<name>/<version|stage|latest>`` or
    ``models:/<name>@<alias>`` (the alias after the last ``@``). No fragment is split off,
    so a name may hold ``#``, ``@`` or a backslash."""
    run_id, model_id = body.run_id or "", body.model_id or ""
    url = urlparse(source, allow_fragments=False)
    path = url.path
    if url.netloc or url.params or url.query or not path.startswith("/") or len(path) <= 1:
        raise _improper(source)
    parts = path.lstrip("/").split("/")
    if len(parts) > 2 or not parts[0].strip() or (len(parts) == 2 and not parts[1].strip()):
        raise _improper(source)
    if len(parts) == 1 and "@" not in path:
        if not model_id_ok(parts[0]):
            raise _bad_source(source, f"There is no logged model {parts[0]!r}.")
        m = _source_model(request, source, parts[0])
        if model_id and model_id != m["model_id"]:
            raise _bad_source(source, "The model_id request parameter must identify the "
                                      "logged model of the source.")
        if run_id and m.get("source_run_id") and run_id != m["source_run_id"]:
            raise _bad_source(source, "The run_id request parameter must be the logged "
                                      "model's run.")
        return source, m["artifact_location"], run_id or m.get("source_run_id") or "", \
            m["model_id"]
    name, tail = parts if len(parts) == 2 else parts[0].rsplit("@", 1)  # tail: suffix, alias
    if len(parts) == 1 and not tail.strip():
        raise _improper(source)
    rm = _registry(request).get(name)
    if rm is None:
        raise _bad_source(source, f"There is no registered model {name!r}.")
    if len(parts) == 1:
        v = by_alias(rm, tail)
    elif tail.isdigit():
        v = version_of(rm, tail)
    else:
        stage = None if tail.lower() == "latest" else {canonical_stage(tail)}
        latest = latest_per_stage(rm, stage)
        if not latest:
            raise _bad_source(source, f"Model {name!r} has no version in that stage.")
        v = max(latest, key=lambda x: x["version"])
    if (run_id and run_id != v.get("run_id")) or (model_id and model_id != v.get("model_id")):
        raise _bad_source(source, "The run_id and model_id request parameters must match "
                                  "the referenced model version.")
    if not v.get("storage_location"):
        raise _bad_source(source, "That version is a prompt, which has no files to copy.")
    return f"models:/{rm['name']}/{v['version']}", v["storage_location"], \
        v.get("run_id", ""), v.get("model_id", "")


def _resolve_source(request: Request, body: CreateModelVersion
                    ) -> tuple[str, str, str, str]:
    """``(source, storage_location, run_id, model_id)`` of a version to create; 400 for a
    source this server cannot serve, or one that names another run or model than
    ``run_id``/``model_id``."""
    source, run_id, model_id = body.source.strip(), body.run_id or "", body.model_id or ""
    if urlparse(source, allow_fragments=False).scheme == "models":
        return _models_source(request, body, source)
    url = urlparse(source)
    if url.netloc or url.params or url.query or url.fragment:
        raise _bad_source(source, "Sources name this server's own registry, runs and "
                                  "artifacts (no host, query or fragment).")
    parts = [p for p in url.path.split("/") if p]
    if any(p in (".", "..") for p in parts) or "\\" in url.path or "\x00" in url.path:
        raise _bad_source(source, "Relative path components are not allowed.")
    if url.scheme == "runs" and parts:
        if run_id and run_id != parts[0]:
            raise _bad_source(source, "The run_id request parameter must identify the run of "
                                      "the source.")
        storage, found = _run_path(request, source, parts[0], parts[1:])
        if model_id and model_id != found:
            raise _bad_source(source, "The model_id request parameter must identify the "
                                      "logged model the source names.")
        return source, storage, parts[0], found
    if url.scheme == "mlflow-artifacts" and len(parts) >= 4 and parts[1] == "models":
        if parts[3] != "artifacts":
            raise _bad_source(source, "Model files are under <experiment>/models/<model id>/"
                                      "artifacts.")
        m = _source_model(request, source, parts[2])
        if m["experiment_id"] != parts[0] or (model_id and model_id != m["model_id"]):
            raise _bad_source(source, "The model_id request parameter must identify the "
                                      "logged model whose artifacts contain the source.")
        return source, source, run_id or m.get("source_run_id") or "", m["model_id"]
    if url.scheme == "mlflow-artifacts" and len(parts) >= 3 and parts[2] == "artifacts":
        if model_id or (run_id and run_id != parts[1]):
            raise _bad_source(source, "The run_id request parameter must identify the run "
                                      "whose artifacts contain the source.")
        if _run_experiment(request, source, parts[1]) != parts[0]:
            raise _bad_source(source, f"Run {parts[1]} is not in experiment {parts[0]}.")
        return source, source, parts[1], ""
    raise _bad_source(source, "This server serves the files of its own runs and logged "
                              "models only.")


def _link_logged_model(request: Request, model_id: str, name: str, version: int) -> None:
    """Add the version to the logged model's ``mlflow.modelVersions`` tag (MLflow's server
    does; the client then adds it again, as it does against MLflow's own server)."""
    entry = {"name": name, "version": str(version)}

    def add(m: dict[str, Any]) -> None:
        try:
            have = json.loads(m["tags"].get(_MODELS_VERSIONS_TAG) or "[]")
        except ValueError:
            have = []
        if not isinstance(have, list):
            have = []
        if entry not in have:
            m["tags"][_MODELS_VERSIONS_TAG] = json.dumps([*have, entry])

    state: MlflowState = request.app.state.mlflow
    with contextlib.suppress(NotFoundError):  # deleted meanwhile: the version stands
        state.models.update(model_id, add)


# -- model versions --------------------------------------------------------------------------------
@router.post("/model-versions/create", summary="Create a model version (MLflow)")
def create_model_version(request: Request, body: CreateModelVersion,
                         who: Researcher) -> SafeJSONResponse:
    """A new version (numbered after the highest ever given), READY at once."""
    _check_owner(who, _model(request, body.name))
    tags = tags_of(body.tags)
    prompt = tags.get(PROMPT_TAG, "false").lower() == "true"  # as MLflow's server decides
    if prompt and body.source not in _PROMPT_SOURCES:
        raise bad_input(f"Invalid prompt source: '{body.source}'. Prompt sources must use an "
                        "MLflow placeholder.", "register prompts with mlflow.genai."
                        "register_prompt: its template is a tag, it has no files")
    source, storage, run_id, model_id = (body.source, "", body.run_id or "", "") if prompt \
        else _resolve_source(request, body)

    def add(rm: dict[str, Any]) -> dict[str, Any]:
        number = max(int(rm.get("next_version", 1)),
                     max((int(n) for n in rm["versions"]), default=0) + 1)
        rm["next_version"] = number + 1
        now = int(time.time() * 1000)
        v = {"version": number, "creation_timestamp": now, "last_updated_timestamp": now,
             "description": body.description or "", "user_id": who.name,
             "current_stage": "None", "source": source, "storage_location": storage,
             "run_id": run_id, "run_link": body.run_link or "", "model_id": model_id,
             "status": "READY", "tags": tags}
        rm["versions"][str(number)] = v
        return v

    rm, v = _change(request, who, body.name, add)
    if model_id:
        _link_logged_model(request, model_id, rm["name"], v["version"])
    _audit(request, who, "create_model_version", rm["name"],
           {"version": v["version"], "source": source})
    return ok({"model_version": version_json(rm, v)})


@router.get("/model-versions/get", summary="Get a model version (MLflow)")
def get_model_version(request: Request, who: Viewer, name: Name,
                      version: VersionQ) -> SafeJSONResponse:
    rm = _model(request, name)
    return ok({"model_version": version_json(rm, version_of(rm, version))})


def _change_version(request: Request, who: Principal, name: str, version: str,
                    fn: Callable[[dict[str, Any], dict[str, Any]], Any], *,
                    touch: bool = True, touch_model: bool = False) -> SafeJSONResponse:
    """Apply ``fn`` to a version; ``touch``/``touch_model``: set the version's/the model's
    ``last_updated_timestamp`` (MLflow's SQL store: not for tags; the model's only for a
    stage transition)."""
    number = version_no(version)

    def upd(rm: dict[str, Any]) -> dict[str, Any]:
        v = version_of(rm, number)
        fn(rm, v)
        if touch:
            v["last_updated_timestamp"] = int(time.time() * 1000)
        return v

    rm, v = _change(request, who, name, upd, touch=touch_model)
    return ok({"model_version": version_json(rm, v)})


@router.patch("/model-versions/update", summary="Update a model version (MLflow)")
def update_model_version(request: Request, body: UpdateVersion,
                         who: Researcher) -> SafeJSONResponse:
    out = _change_version(request, who, body.name, body.version,
                          lambda rm, v: v.update(description=body.description or ""))
    _audit(request, who, "update_model_version", body.name, {"version": body.version})
    return out


@router.delete("/model-versions/delete", summary="Delete a model version (MLflow)")
def delete_model_version(request: Request, body: VersionRef, who: Researcher) -> dict[str, Any]:
    """Delete the version and the aliases pointing to it (its number is not given again)."""
    number = version_no(body.version)

    def delete(rm: dict[str, Any]) -> None:
        version_of(rm, number)
        del rm["versions"][str(number)]
        rm["aliases"] = {a: n for a, n in rm["aliases"].items() if n != number}

    _change(request, who, body.name, delete)
    _audit(request, who, "delete_model_version", body.name, {"version": number})
    return {}


@router.get("/model-versions/search", summary="Search model versions (MLflow)")
def search_model_versions(
        request: Request, who: Viewer,
        filter: Annotated[str | None, Query(max_length=10_000)] = None,
        max_results: Annotated[int | None, Query()] = None,
        order_by: Annotated[list[str] | None, Query(max_length=20)] = None,
        page_token: Annotated[str | None, Query(max_length=100)] = None) -> SafeJSONResponse:
    clauses, prompts = without_prompt_clause(search_clauses(filter, MV_ATTRS))
    order = order_keys(order_by, MV_ORDER) or [("last_updated_timestamp", False)]
    size = max_results_of(max_results, 10_000, 200_000)
    models, clauses = candidates(_registry(request), clauses)
    passes = version_filter(clauses)
    found = ((rm, v) for rm in models for v in rm["versions"].values()  # shared: no copies
             if (prompts or v["tags"].get(PROMPT_TAG) != "true") and passes(rm, v))
    keys = {k for k, _ in order}
    order += [k for k in (("name", True), ("version", False)) if k[0] not in keys]
    page, token = top_page(found, order, page_token, size,
                       lambda rv, k: rv[0]["name"] if k == "name" else rv[1][k])
    out: dict[str, Any] = {"model_versions": [version_json(rm, v) for rm, v in page]}
    if token:
        out["next_page_token"] = token
    return ok(out)


@router.post("/model-versions/set-tag", summary="Set a model version tag (MLflow)")
def set_model_version_tag(request: Request, body: VersionTag, who: Researcher) -> dict[str, Any]:
    check_tag(body.key, body.value)
    _change_version(request, who, body.name, body.version,
                    lambda rm, v: v["tags"].update({body.key: body.value}), touch=False)
    _audit(request, who, "set_model_version_tag", body.name,
           {"version": body.version, "key": body.key})
    return {}


@router.delete("/model-versions/delete-tag", summary="Delete a model version tag (MLflow)")
def delete_model_version_tag(request: Request, body: VersionTagRef,
                             who: Researcher) -> dict[str, Any]:
    """As MLflow's store: deleting a tag the version lacks is not an error."""
    check_tag(body.key, "")
    _change_version(request, who, body.name, body.version,
                    lambda rm, v: v["tags"].pop(body.key, None), touch=False)
    _audit(request, who, "delete_model_version_tag", body.name,
           {"version": body.version, "key": body.key})
    return {}


@router.get("/model-versions/get-download-uri",
            summary="Where a model version's files are downloaded from (MLflow)")
def get_model_version_download_uri(request: Request, who: Viewer, name: Name,
                                   version: VersionQ) -> SafeJSONResponse:
    v = version_of(_model(request, name), version)
    return ok({"artifact_uri": v["storage_location"]})


@router.post("/model-versions/transition-stage",
             summary="Move a model version to a stage (MLflow, legacy)")
def transition_model_version_stage(request: Request, body: TransitionStage,
                                   who: Researcher) -> SafeJSONResponse:
    stage = canonical_stage(body.stage)
    if body.archive_existing_versions and stage not in ("Staging", "Production"):
        raise bad_input(f"Model version transition cannot archive existing model versions "
                        f"because '{body.stage}' is not an Active stage. Valid stages are "
                        "['Staging', 'Production']",
                        "archive_existing_versions only with Staging or Production")

    def move(rm: dict[str, Any], v: dict[str, Any]) -> None:
        if body.archive_existing_versions:
            now = int(time.time() * 1000)
            for other in rm["versions"].values():
                if other is not v and other["current_stage"] == stage:
                    other["current_stage"] = "Archived"
                    other["last_updated_timestamp"] = now
        v["current_stage"] = stage

    out = _change_version(request, who, body.name, body.version, move, touch_model=True)
    _audit(request, who, "transition_model_version_stage", body.name,
           {"version": body.version, "stage": stage})
    return out
