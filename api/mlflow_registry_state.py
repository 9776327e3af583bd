"""MLflow's Model Registry less its routes: the stored records, the rules names, tags,
aliases and stages follow (MLflow's ``utils/validation.py``), the records' MLflow JSON, the
search helpers and the request bodies. The routes are :mod:`.mlflow_registry`.

One file per registered model, ``<data dir>/mlflow/registry/<id>.json``, holding the model,
its tags and aliases and every live version. The file is named by an id that never changes,
so every registry write (a rename included) replaces exactly one file, atomically (temporary
file, fsync, rename, as :mod:`.mlflow_state` writes): a crash leaves the old record or the
new one, never half of either. Deleting a model unlinks its file. Records are read once and
kept in memory, under one lock (like :class:`.mlflow_state.LoggedModels`), so a name is
checked for uniqueness and a version number allocated under the same lock that writes it.

A record: ``id``, ``name``, ``creation_timestamp``, ``last_updated_timestamp`` (ms),
``description``, ``user_id``, ``owner`` (the researcher who may change it: its creator),
``tags``, ``aliases`` (alias to version number), ``next_version`` (version numbers are never
reused, as in MLflow's SQL store) and ``versions`` (version number as a string to a version:
``version``, timestamps, ``description``, ``user_id``, ``current_stage``, ``source``,
``storage_location`` (what the client downloads), ``run_id``, ``run_link``, ``model_id``,
``status``, ``tags``).
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConflictError, NotFoundError, UserInputError
from .mlflow_search import Clause, page_offset, page_token, parse_filter
from .mlflow_state import _write_json

__all__ = ["MV_ATTRS", "MV_ORDER", "PROMPT_TAG", "RM_ATTRS", "RM_ORDER", "STAGES", "AliasRef",
           "CreateModelVersion", "CreateRegisteredModel", "LatestVersions", "ModelRef",
           "ModelRegistry", "ModelTag", "ModelTagRef", "RenameRegisteredModel", "SetAlias", "Tag",
           "TransitionStage", "UpdateDescription", "UpdateVersion", "VersionRef", "VersionTag",
           "VersionTagRef", "bad_input", "by_alias", "canonical_stage", "check_alias",
           "check_name", "check_tag", "latest_per_stage", "max_results_of", "model_json",
           "new_model", "not_found", "order_keys", "page_of", "search_clauses", "sort_by",
           "tags_of", "version_json", "version_no", "version_of", "without_prompt_clause"]


def _copy(x: Any) -> Any:
    return json.loads(json.dumps(x))


def new_model(name: str, *, owner: str, description: str = "",
              tags: dict[str, str] | None = None) -> dict[str, Any]:
    """A registered model's record, with no versions yet."""
    now = int(time.time() * 1000)
    return {"id": uuid.uuid4().hex, "name": name, "creation_timestamp": now,
            "last_updated_timestamp": now, "description": description, "user_id": owner,
            "owner": owner, "tags": dict(tags or {}), "aliases": {}, "next_version": 1,
            "versions": {}}


class ModelRegistry:
    """Registered models by name (thread-safe; one server process writes a data directory).

    Callers get copies; changes go through :meth:`add`, :meth:`update` and :meth:`delete`,
    each one atomic file replacement.
    """

    def __init__(self, mlflow_dir: Path) -> None:
        self.dir = Path(mlflow_dir) / "registry"
        self._mutex = threading.RLock()
        self._by_name: dict[str, dict[str, Any]] | None = None

    def _all(self) -> dict[str, dict[str, Any]]:
        with self._mutex:
            if self._by_name is None:
                models: dict[str, dict[str, Any]] = {}
                for p in sorted(self.dir.glob("*.json")):
                    if not p.name.startswith("."):  # a temporary file a crash left
                        m = json.loads(p.read_text())
                        models[m["name"]] = m
                self._by_name = models
            return self._by_name

    def get(self, name: str) -> dict[str, Any] | None:
        """A copy of the registered model's record, None if there is none."""
        with self._mutex:
            m = self._all().get(name)
            return None if m is None else _copy(m)  # type: ignore[no-any-return]

    def all(self) -> list[dict[str, Any]]:
        with self._mutex:
            return _copy(list(self._all().values()))  # type: ignore[no-any-return]

    def add(self, model: dict[str, Any]) -> dict[str, Any]:
        """Store a new registered model (ConflictError if its name is taken)."""
        with self._mutex:
            if model["name"] in self._all():
                raise ConflictError(f"Registered Model (name={model['name']}) already exists.",
                                    hint="create a version of it (model-versions/create), "
                                         "or pick another name")
            self._save(model)
            return _copy(model)  # type: ignore[no-any-return]

    def update(self, name: str, fn: Callable[[dict[str, Any]], Any]) -> tuple[dict[str, Any], Any]:
        """Apply ``fn`` to a copy of the record and store the result; ``fn`` may raise to
        refuse (nothing is stored then) and may rename (``record["name"]``; ConflictError if
        the new name is taken). Returns the new record and what ``fn`` returned."""
        with self._mutex:
            models = self._all()
            old = models.get(name)
            if old is None:
                raise not_found(name)
            m = _copy(old)
            out = fn(m)
            if m["name"] != name and m["name"] in models:
                raise ConflictError(f"Registered Model (name={m['name']}) already exists.",
                                    hint="pick another name")
            m["last_updated_timestamp"] = int(time.time() * 1000)
            self._save(m)
            if m["name"] != name:
                del models[name]
            return _copy(m), out

    def delete(self, name: str,
               check: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
        """Remove the registered model (its versions, tags and aliases with it) unless
        ``check`` raises; returns what it was."""
        with self._mutex:
            models = self._all()
            m = models.get(name)
            if m is None:
                raise not_found(name)
            if check is not None:
                check(_copy(m))
            try:
                os.unlink(self.dir / f"{m['id']}.json")
            except FileNotFoundError:
                pass
            del models[name]
            return m

    def _save(self, model: dict[str, Any]) -> None:
        _write_json(self.dir / f"{model['id']}.json", model)
        self._all()[model["name"]] = _copy(model)


def not_found(name: str) -> NotFoundError:
    return NotFoundError(f"Registered Model with name={name} not found",
                         hint="list them with registered-models/search")


STAGES = ("None", "Staging", "Production", "Archived")  # MLflow's ALL_STAGES, in its order
_CANONICAL = {s.lower(): s for s in STAGES}
_ALIAS_RE = re.compile(r"^[\w\-]*$")
_VERSION_ALIAS_RE = re.compile(r"^[vV]\d+$")
_TAG_KEY_RE = re.compile(r"^[/\w.\- :]*$")
PROMPT_TAG = "mlflow.prompt.is_prompt"
_STRING_OPS = {"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"}
_TAG_OPS = {"=", "!=", "LIKE", "ILIKE"}
_NUMERIC_OPS = {"=", "!=", ">", ">=", "<", "<="}
_TIMESTAMPS = {"creation_timestamp", "last_updated_timestamp"}
RM_ATTRS = {"name"} | _TIMESTAMPS
MV_ATTRS = {"name", "run_id", "source_path", "version_number"} | _TIMESTAMPS
RM_ORDER = {"name": "name", "timestamp": "last_updated_timestamp",
            "last_updated_timestamp": "last_updated_timestamp",
            "creation_timestamp": "creation_timestamp"}
MV_ORDER = {**RM_ORDER, "version_number": "version"}


# -- validation (MLflow's utils/validation.py rules) -----------------------------------------------
def bad_input(msg: str, hint: str) -> UserInputError:
    return UserInputError(msg, hint=hint)


def check_name(name: str, what: str = "name") -> str:
    if not name or not name.strip():
        raise bad_input(f"Missing value for required parameter '{what}'.",
                        "registered model names are non-empty")
    if len(name) > 256:
        raise bad_input(f"Registered model name is {len(name)} characters long, over 256",
                        "pick a shorter name")
    if "/" in name or ":" in name:
        raise bad_input(f"Invalid model name '{name}'. Names cannot contain '/' or ':'.",
                        "pick a name without '/' or ':'")
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith(".."):
        raise bad_input(f"Invalid value '{name}' for parameter '{what}'",
                        "names that are not plain paths ('.', '..', repeated or trailing "
                        "separators) are refused, as MLflow does")
    return name


def version_no(version: str) -> int:
    try:
        return int(version)
    except (TypeError, ValueError):
        raise bad_input(f"Parameter 'version' must be an integer, got '{version}'.",
                        "versions are numbers: 1, 2, ...") from None


def check_tag(key: str, value: str) -> None:
    if not key or not _TAG_KEY_RE.match(key):
        raise bad_input(f"Invalid value '{key}' for parameter 'key' supplied: Names may only "
                        "contain alphanumerics, underscores (_), dashes (-), periods (.), "
                        "spaces ( ), colon(:) and slashes (/).", "pick another tag key")
    norm = posixpath.normpath(key)
    if norm != key or norm == "." or norm.startswith(("..", "/")):
        raise bad_input(f"Invalid value '{key}' for parameter 'key': not a plain path",
                        "pick another tag key")
    if len(key) > 250 or len(value) > 100_000:
        raise bad_input("a model registry tag's key has at most 250 characters and its value at "
                        "most 100000", "shorten the tag")


def check_alias(alias: str, *, setting: bool) -> None:
    if not alias:
        raise bad_input("Registered model alias name cannot be empty.", "name the alias")
    if not _ALIAS_RE.match(alias) or len(alias) > 255:
        raise bad_input(f"Invalid alias name: '{alias}'. Names may only contain alphanumerics, "
                        "underscores (_), and dashes (-).", "pick another alias (255 characters "
                        "at most)")
    if setting and alias.lower() == "latest":
        raise bad_input("'latest' alias name (case insensitive) is reserved.", "pick another alias")
    if setting and _VERSION_ALIAS_RE.match(alias):
        raise bad_input(f"Version alias name '{alias}' is reserved.", "pick another alias")


def canonical_stage(stage: str) -> str:
    s = _CANONICAL.get((stage or "").lower())
    if s is None:
        raise bad_input(f"Invalid Model Version stage: {stage}. Value must be one of "
                        f"{', '.join(STAGES)}.", "stages are legacy; prefer aliases")
    return s


# -- records to MLflow's JSON ----------------------------------------------------------------------
def _kvs(d: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in d.items()]


def version_json(rm: dict[str, Any], v: dict[str, Any]) -> dict[str, Any]:
    """MLflow's ``ModelVersion`` JSON of a version of ``rm``."""
    out: dict[str, Any] = {
        "name": rm["name"], "version": str(v["version"]),
        "creation_timestamp": v["creation_timestamp"],
        "last_updated_timestamp": v["last_updated_timestamp"],
        "user_id": v.get("user_id", ""), "current_stage": v["current_stage"],
        "source": v["source"], "status": v.get("status", "READY"), "tags": _kvs(v["tags"]),
        "run_link": v.get("run_link", ""),
        "aliases": sorted(a for a, n in rm["aliases"].items() if n == v["version"])}
    for k in ("description", "run_id", "model_id"):  # unset ones are absent, as in MLflow
        if v.get(k):
            out[k] = v[k]
    return out


def latest_per_stage(rm: dict[str, Any], stages: set[str] | None = None
                      ) -> list[dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for v in rm["versions"].values():
        s = v["current_stage"]
        if (stages is None or s in stages) and (s not in best or v["version"] >
                                                best[s]["version"]):
            best[s] = v
    return sorted(best.values(), key=lambda v: v["version"])


def model_json(rm: dict[str, Any]) -> dict[str, Any]:
    """MLflow's ``RegisteredModel`` JSON (``latest_versions``: the newest of each stage)."""
    out: dict[str, Any] = {
        "name": rm["name"], "creation_timestamp": rm["creation_timestamp"],
        "last_updated_timestamp": rm["last_updated_timestamp"], "user_id": rm.get("user_id", ""),
        "latest_versions": [version_json(rm, v) for v in latest_per_stage(rm)],
        "tags": _kvs(rm["tags"]),
        "aliases": [{"alias": a, "version": str(n)} for a, n in sorted(rm["aliases"].items())]}
    if rm.get("description"):
        out["description"] = rm["description"]
    return out


# -- lookups ---------------------------------------------------------------------------------------
def version_of(rm: dict[str, Any], version: str | int) -> dict[str, Any]:
    v = rm["versions"].get(str(version_no(str(version))))
    if v is None:
        raise NotFoundError(f"Model Version (name={rm['name']}, version={version}) not found",
                            hint="list its versions with model-versions/search")
    return v  # type: ignore[no-any-return]

def by_alias(rm: dict[str, Any], alias: str) -> dict[str, Any]:
    if alias.lower() == "latest":
        if not rm["versions"]:
            raise NotFoundError(f"Latest version not found for model {rm['name']}.",
                                hint="create a version with model-versions/create")
        newest: dict[str, Any] = max(rm["versions"].values(), key=lambda v: v["version"])
        return newest
    number = rm["aliases"].get(alias)
    if number is None:  # MLflow's SQL store answers INVALID_PARAMETER_VALUE here
        raise bad_input(f"Registered model alias {alias} not found.",
                        "see the model's aliases with registered-models/get")
    return version_of(rm, number)


# -- search ----------------------------------------------------------------------------------------
def search_clauses(text: str | None, attrs: set[str]) -> list[Clause]:
    clauses = parse_filter(text, "attributes", run_aliases=False, attrs=attrs)
    for c in clauses:
        if c.kind == "attributes" and (c.key in _TIMESTAMPS or c.key == "version_number"):
            ok_ops = _NUMERIC_OPS
        elif c.kind == "attributes":
            ok_ops = _STRING_OPS
        elif c.kind == "tags":
            ok_ops = _TAG_OPS
        else:
            raise bad_input(f"Invalid search expression type '{c.kind}'",
                            "filter on name, tags.<key> (and, for versions, run_id, source_path, "
                            "version_number)")
        if c.op not in ok_ops:
            raise bad_input(f"Invalid comparator '{c.op}' for {c.kind}.{c.key}",
                            f"use one of {sorted(ok_ops)}")
    return clauses


def without_prompt_clause(clauses: list[Clause]) -> tuple[list[Clause], bool]:
    """MLflow's stores return prompts only when the filter asks for them
    (``tags.`mlflow.prompt.is_prompt` = 'true'``, or ``!= 'false'``); otherwise a clause on
    that tag (the client adds ``!= 'true'`` to every search) is dropped and prompts are left
    out. Returns the other clauses and whether prompts are wanted."""
    for c in clauses:
        if c.kind == "tags" and c.key == PROMPT_TAG and isinstance(c.value, str):
            if (c.op == "=" and c.value.lower() == "true") or (
                    c.op == "!=" and c.value.lower() == "false"):
                return clauses, True
            break
    return [c for c in clauses if not (c.kind == "tags" and c.key == PROMPT_TAG)], False


def order_keys(items: list[str] | None, allowed: dict[str, str]) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for item in items or []:
        parts = item.split()
        asc = True
        if len(parts) == 2 and parts[1].upper() in ("ASC", "DESC"):
            asc = parts[1].upper() == "ASC"
            parts = parts[:1]
        key = parts[0].strip("`") if len(parts) == 1 else ""
        key = key.removeprefix("attributes.").removeprefix("attribute.")
        if key not in allowed:
            raise bad_input(f"Invalid order by key '{item}' specified. Valid keys are "
                            f"{sorted(allowed)}", "order by '<key> [ASC|DESC]'")
        if any(k == allowed[key] for k, _ in out):
            raise bad_input(f"`order_by` contains duplicate fields: {items}", "name each key once")
        out.append((allowed[key], asc))
    return out


def sort_by(items: list[Any], order: list[tuple[str, bool]],
            value: Callable[[Any, str], Any]) -> list[Any]:
    for key, asc in reversed(order):  # stable sorts, the last key first
        items = sorted(items, key=functools.partial(_swap, value, key), reverse=not asc)
    return items


def _swap(value: Callable[[Any, str], Any], key: str, item: Any) -> Any:
    return value(item, key)


def max_results_of(n: int | None, default: int, limit: int) -> int:
    if n is None:
        return default
    if n < 1 or n > limit:
        raise bad_input(f"Invalid value for max_results: {n}. It must be between 1 and {limit}.",
                        f"ask for at most {limit} per page and follow next_page_token")
    return n


def page_of(found: list[Any], token: str | None, size: int) -> tuple[list[Any], str | None]:
    start = page_offset(token)
    page = found[start: start + size]
    return page, page_token(start + len(page)) if start + len(page) < len(found) else None


# -- bodies ----------------------------------------------------------------------------------------
class _M(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Tag(_M):
    key: Annotated[str, Field(max_length=250)]
    value: Annotated[str, Field(max_length=100_000)] = ""


class CreateRegisteredModel(_M):
    name: Annotated[str, Field(max_length=1000)]
    tags: list[Tag] = Field(default_factory=list, max_length=1000)
    description: str | None = Field(default=None, max_length=100_000)


class ModelRef(_M):
    name: Annotated[str, Field(max_length=1000)]


class RenameRegisteredModel(ModelRef):
    new_name: Annotated[str, Field(max_length=1000)] = ""


class UpdateDescription(ModelRef):
    description: str | None = Field(default=None, max_length=100_000)


class ModelTag(ModelRef):
    key: Annotated[str, Field(max_length=250)]
    value: Annotated[str, Field(max_length=100_000)] = ""


class ModelTagRef(ModelRef):
    key: Annotated[str, Field(max_length=250)]


class LatestVersions(ModelRef):
    stages: list[Annotated[str, Field(max_length=40)]] = Field(default_factory=list,
                                                               max_length=10)


class SetAlias(ModelRef):
    alias: Annotated[str, Field(max_length=1000)]
    version: Annotated[str, Field(max_length=40)]


class AliasRef(ModelRef):
    alias: Annotated[str, Field(max_length=1000)]


class CreateModelVersion(ModelRef):
    source: Annotated[str, Field(max_length=4000)]
    run_id: str | None = Field(default=None, max_length=64)
    tags: list[Tag] = Field(default_factory=list, max_length=1000)
    run_link: str | None = Field(default=None, max_length=4000)
    description: str | None = Field(default=None, max_length=100_000)
    model_id: str | None = Field(default=None, max_length=200)


class VersionRef(ModelRef):
    version: Annotated[str, Field(max_length=40)]


class UpdateVersion(VersionRef):
    description: str | None = Field(default=None, max_length=100_000)


class VersionTag(VersionRef):
    key: Annotated[str, Field(max_length=250)]
    value: Annotated[str, Field(max_length=100_000)] = ""


class VersionTagRef(VersionRef):
    key: Annotated[str, Field(max_length=250)]


class TransitionStage(VersionRef):
    stage: Annotated[str, Field(max_length=40)]
    archive_existing_versions: bool = False


def tags_of(tags: list[Tag]) -> dict[str, str]:
    for t in tags:
        check_tag(t.key, t.value)
    return {t.key: t.value for t in tags}  # the last value of a repeated key, as MLflow
