"""MLflow's Model Registry less its routes: the stored records, the rules names, tags,
aliases and stages follow (MLflow's ``utils/validation.py``), the records' MLflow JSON, the
search helpers and the request bodies. The routes are :mod:`.mlflow_registry`.

One file per registered model, ``<data dir>/mlflow/registry/<id>.json``, holding the model,
its tags and aliases and every live version. The file is named by an id that never changes,
so every registry write (a rename included) replaces exactly one file, atomically (temporary
file, fsync, rename, as :mod:`.mlflow_state` writes): a crash leaves the old record or the
new one, never half of either. Deleting a model unlinks its file. Records are read once and
kept in memory as immutable snapshots (:class:`ModelRegistry`): reads take no lock, and
writes take one, so a name is checked for uniqueness and a version number allocated under
the same lock that writes it.

A record: ``id``, ``name``, ``creation_timestamp``, ``last_updated_timestamp`` (ms),
``description``, ``user_id``, ``owner`` (the researcher who may change it: its creator),
``tags``, ``aliases`` (alias to version number), ``next_version`` (version numbers are never
reused, as in MLflow's SQL store) and ``versions`` (version number as a string to a version:
``version``, timestamps, ``description``, ``user_id``, ``current_stage``, ``source``,
``storage_location`` (what the client downloads), ``run_id``, ``run_link``, ``model_id``,
``status``, ``tags``).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import operator
import os
import posixpath
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConflictError, NotFoundError, UserInputError
from .mlflow_search import Clause, matches, page_offset, page_token, parse_filter

__all__ = ["MV_ATTRS", "MV_ORDER", "PROMPT_TAG", "RM_ATTRS", "RM_ORDER", "STAGES", "AliasRef",
           "CreateModelVersion", "CreateRegisteredModel", "LatestVersions", "ModelRef",
           "ModelRegistry", "ModelTag", "ModelTagRef", "RenameRegisteredModel", "SetAlias", "Tag",
           "TransitionStage", "UpdateDescription", "UpdateVersion", "VersionRef", "VersionTag",
           "VersionTagRef", "bad_input", "by_alias", "candidates", "canonical_stage",
           "check_alias", "check_name", "check_tag", "latest_per_stage", "max_results_of",
           "model_json", "new_model", "not_found", "order_keys", "search_clauses", "tags_of",
           "top_page", "version_filter", "version_json", "version_no", "version_of",
           "without_prompt_clause"]


def _thaw(m: dict[str, Any]) -> dict[str, Any]:
    """A copy of a record that may be changed without touching ``m``: records are two levels
    of dicts of strings and numbers, so this copies each dict (much cheaper than a JSON round
    trip, which dominated every write)."""
    out = dict(m)
    out["tags"], out["aliases"] = dict(m["tags"]), dict(m["aliases"])
    out["versions"] = {n: {**v, "tags": dict(v["tags"])} for n, v in m["versions"].items()}
    return out


def _store(path: Path, record: dict[str, Any]) -> None:
    """Replace ``path`` atomically (temporary file, fsync, rename), as
    :func:`.mlflow_state._write_json`, but encoding in one C call (``json.dump`` streams
    through the pure-Python encoder, several times slower for a model of many versions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = json.dumps(record, separators=(",", ":"))
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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

    Reads are lock-free: the registry publishes an immutable snapshot (a name-to-record map
    that is never changed once published, holding records that are never changed), and a
    write builds the next snapshot from a copy of the one record it changes, stores that
    record's file, then swaps the snapshot in. So a search iterates a consistent snapshot
    without copying it or holding the lock that writes take, and an alias lookup is two dict
    lookups. Callers get these shared records and must not change them; changes go through
    :meth:`add`, :meth:`update` and :meth:`delete`, each one atomic file replacement, one
    writer at a time.
    """

    def __init__(self, mlflow_dir: Path) -> None:
        self.dir = Path(mlflow_dir) / "registry"
        self._writing = threading.RLock()  # re-entered: writers load the first snapshot
        self._models: dict[str, dict[str, Any]] | None = None  # published; never mutated
        # model id -> (record, its latest_per_stage): records never change, so it holds
        # while the record is the published one (checked by identity)
        self._latest: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}

    def _snapshot(self) -> dict[str, dict[str, Any]]:
        models = self._models
        if models is None:
            with self._writing:
                if self._models is None:
                    loaded: dict[str, dict[str, Any]] = {}
                    for p in sorted(self.dir.glob("*.json")):
                        if not p.name.startswith("."):  # a temporary file a crash left
                            m = json.loads(p.read_text())
                            loaded[m["name"]] = m
                    self._models = loaded
                models = self._models
        return models

    def get(self, name: str) -> dict[str, Any] | None:
        """The registered model's record (shared: do not change it), None if there is none."""
        return self._snapshot().get(name)

    def all(self) -> list[dict[str, Any]]:
        """Every record of one snapshot (shared: do not change them)."""
        return list(self._snapshot().values())

    def latest(self, rm: dict[str, Any]) -> list[dict[str, Any]]:
        """:func:`latest_per_stage` of a record this registry gave out, computed once per
        record (a search lists every model's latest versions: each would scan them all)."""
        hit = self._latest.get(rm["id"])
        if hit is not None and hit[0] is rm:
            return hit[1]
        latest = latest_per_stage(rm)
        self._latest[rm["id"]] = (rm, latest)
        return latest

    def add(self, model: dict[str, Any]) -> dict[str, Any]:
        """Store a new registered model (ConflictError if its name is taken)."""
        with self._writing:
            models = self._snapshot()
            if model["name"] in models:
                raise ConflictError(f"Registered Model (name={model['name']}) already exists.",
                                    hint="create a version of it (model-versions/create), "
                                         "or pick another name")
            m = _thaw(model)
            self._publish(models, None, m)
            return m

    def update(self, name: str, fn: Callable[[dict[str, Any]], Any], *,
               touch: bool = True) -> tuple[dict[str, Any], Any]:
        """Apply ``fn`` to a copy of the record and store the result; ``fn`` may raise to
        refuse (nothing is stored then) and may rename (``record["name"]``; ConflictError if
        the new name is taken). ``touch``: set ``last_updated_timestamp`` (MLflow's store
        does for every change but tags and aliases). Returns the new record and what ``fn``
        returned."""
        with self._writing:
            models = self._snapshot()
            old = models.get(name)
            if old is None:
                raise not_found(name)
            m = _thaw(old)
            out = fn(m)
            if m["name"] != name and m["name"] in models:
                raise ConflictError(f"Registered Model (name={m['name']}) already exists.",
                                    hint="pick another name")
            if touch:
                m["last_updated_timestamp"] = int(time.time() * 1000)
            self._publish(models, name, m)
            return m, out

    def delete(self, name: str,
               check: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
        """Remove the registered model (its versions, tags and aliases with it) unless
        ``check`` raises; returns what it was."""
        with self._writing:
            models = self._snapshot()
            m = models.get(name)
            if m is None:
                raise not_found(name)
            if check is not None:
                check(m)
            try:
                os.unlink(self.dir / f"{m['id']}.json")
            except FileNotFoundError:
                pass
            self._publish(models, name, None)
            self._latest.pop(m["id"], None)
            return m

    def _publish(self, models: dict[str, dict[str, Any]], old_name: str | None,
                 record: dict[str, Any] | None) -> None:
        """Store ``record``'s file (first: a failed write publishes nothing), then swap in
        the next snapshot: ``models`` without ``old_name``, with ``record``."""
        if record is not None:
            _store(self.dir / f"{record['id']}.json", record)
        nxt = dict(models)
        if old_name is not None:
            del nxt[old_name]
        if record is not None:
            nxt[record["name"]] = record
        self._models = nxt


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
_NUMERIC_ATTRS = _TIMESTAMPS | {"version_number"}
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


def model_json(rm: dict[str, Any], latest: list[dict[str, Any]] | None = None
               ) -> dict[str, Any]:
    """MLflow's ``RegisteredModel`` JSON (``latest_versions``: the newest of each stage,
    ``latest`` if given: :meth:`ModelRegistry.latest` remembers them)."""
    out: dict[str, Any] = {
        "name": rm["name"], "creation_timestamp": rm["creation_timestamp"],
        "last_updated_timestamp": rm["last_updated_timestamp"], "user_id": rm.get("user_id", ""),
        "latest_versions": [version_json(rm, v) for v in
                            (latest_per_stage(rm) if latest is None else latest)],
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
        if c.kind == "attributes" and c.key in _NUMERIC_ATTRS:
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
    return [_numeric(c) if c.kind == "attributes" and c.key in _NUMERIC_ATTRS else c
            for c in clauses]


def _numeric(c: Clause) -> Clause:
    """The clause comparing as a number, quoted or not (``version_number >= '2'``), as
    MLflow's SQL store converts it with ``int()``; anything else is refused as MLflow does."""
    v = c.value
    try:
        if isinstance(v, float) and not v.is_integer():
            raise ValueError(v)
        n = int(v) if isinstance(v, float) else int(str(v).strip())
    except (TypeError, ValueError, OverflowError):
        raise bad_input(f"Invalid value for numeric attribute '{c.key}': {v!r}",
                        f"compare {c.key} with a whole number, e.g. {c.key} >= 2") from None
    return dataclasses.replace(c, value=float(n))  # float: mlflow_search compares numerically


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


def max_results_of(n: int | None, default: int, limit: int) -> int:
    if n is None:
        return default
    if n < 1 or n > limit:
        raise bad_input(f"Invalid value for max_results: {n}. It must be between 1 and {limit}.",
                        f"ask for at most {limit} per page and follow next_page_token")
    return n


def candidates(reg: ModelRegistry, clauses: list[Clause]
               ) -> tuple[list[dict[str, Any]], list[Clause]]:
    """The records a search need look at and the clauses left to apply to them: a ``name
    =``/``name IN`` clause of names is answered by an index lookup (and so dropped), else
    all records and all clauses."""
    for c in clauses:
        wanted = [c.value] if c.op == "=" else c.value if c.op == "IN" else None
        if c.kind == "attributes" and c.key == "name" and wanted is not None and all(
                isinstance(w, str) for w in wanted):
            got = (reg.get(w) for w in dict.fromkeys(wanted))
            return [rm for rm in got if rm is not None], [o for o in clauses if o is not c]
    return reg.all(), clauses


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
    "<": operator.lt, "<=": operator.le}
_VERSION_FIELDS = {"version_number": "version", "creation_timestamp": "creation_timestamp",
                   "last_updated_timestamp": "last_updated_timestamp"}


def version_filter(clauses: list[Clause]) -> Callable[[dict[str, Any], dict[str, Any]], bool]:
    """Whether a version ``v`` of ``rm`` passes ``clauses`` (from :func:`search_clauses`):
    the numeric ones compared straight on the record, the others by
    :func:`.mlflow_search.matches` on MLflow's view of the version (built only for them)."""
    numeric = [(_VERSION_FIELDS[c.key], _OPS[c.op], c.value) for c in clauses
               if c.kind == "attributes" and c.key in _NUMERIC_ATTRS]
    rest = [c for c in clauses if not (c.kind == "attributes" and c.key in _NUMERIC_ATTRS)]

    def passes(rm: dict[str, Any], v: dict[str, Any]) -> bool:
        for field, op, want in numeric:
            if not op(v[field], want):
                return False
        return not rest or matches({"attributes": {
            "name": rm["name"], "run_id": v.get("run_id") or None, "source_path": v["source"]},
            "tags": v["tags"]}, rest)

    return passes


class _Desc:
    """Sorts its value in reverse (a descending name among ascending numbers)."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Desc) -> bool:
        return bool(self.v > other.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and bool(self.v == other.v)


def top_page(found: Iterable[Any], order: list[tuple[str, bool]], token: str | None,
             size: int, value: Callable[[Any, str], Any]) -> tuple[list[Any], str | None]:
    """The page of ``found`` in ``order`` (keys ascending or not; numbers and names). Only
    the rows up to the page's end are kept (a heap), and ``found`` may be a generator: rows
    that are not kept are never all alive at once (100,000 kept tuples cost more in the
    garbage collector's passes over the registry's records than in the sort)."""
    start = page_offset(token)
    end = start + size
    seen = 0

    def counted() -> Iterator[Any]:
        nonlocal seen
        for item in found:
            seen += 1
            yield item

    def key(item: Any) -> tuple[Any, ...]:
        return tuple([v if asc else -v if isinstance(v, (int, float)) else _Desc(v)
                      for v, asc in zip([value(item, k) for k, _ in order], ascending)])

    ascending = [asc for _, asc in order]
    ranked = heapq.nsmallest(end, counted(), key=key)
    return ranked[start:end], page_token(end) if end < seen else None


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
