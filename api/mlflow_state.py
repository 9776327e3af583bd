"""What MLflow needs beyond assay's run graph: experiments and per-run MLflow fields.

* Experiments live in ``<data dir>/mlflow/experiments.json`` (ids are MLflow's decimal
  strings; ``"0"`` is ``Default``). Each maps to one assay project: the name itself when it
  is a valid project name, else a slug of it. Projects that have runs but no experiment
  (runs logged with ``assay.init``) are registered on sight, so they show up in MLflow too.
* A run created through MLflow has a sidecar ``<data dir>/mlflow/runs/<run_id>.json`` with
  its MLflow-only fields (tags, lifecycle stage, user, start and end times in ms, params as
  strings, and ``outputs``: the logged models the run output). Params, metrics, tags and
  status also go through the WAL into the run graph (params as config, tags in
  ``env.mlflow_tags``), so the run is an ordinary assay run.
* MLflow 3's logged models (:class:`LoggedModels`) live in
  ``<data dir>/mlflow/models/<model_id>.json``.

Every file is replaced atomically (temporary file, fsync, rename); ``experiments.json``
under an ``flock``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConflictError, NotFoundError, UserInputError

__all__ = ["MLFLOW_TO_STATUS", "MODEL_STATUSES", "STATUS_TO_MLFLOW", "LoggedModels", "MlflowState",
           "project_for"]

STATUS_TO_MLFLOW = {"running": "RUNNING", "completed": "FINISHED", "failed": "FAILED",
                    "stopped": "KILLED", "crashed": "FAILED"}
MLFLOW_TO_STATUS = {"RUNNING": "running", "SCHEDULED": "running", "FINISHED": "completed",
                    "FAILED": "failed", "KILLED": "stopped"}
_PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def project_for(name: str, taken: set[str], exp_id: str) -> str:
    """The assay project of an experiment name (unique among ``taken``)."""
    if _PROJECT_RE.match(name) and name not in taken:
        return name
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "-", name).strip("-_.")[:100] or "experiment"
    if not slug[0].isalnum():
        slug = "x" + slug
    return slug if slug not in taken else f"{slug}-{exp_id}"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class MlflowState:
    """Experiments and MLflow run sidecars of a data directory (thread-safe)."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "mlflow"
        self.exp_path = self.dir / "experiments.json"
        self._mutex = threading.RLock()
        self._exp_stat: tuple[int, int, int] | None = None
        self._exp: dict[str, Any] = {}
        self._runs: dict[str, dict[str, Any] | None] = {}
        self._run_ids: set[str] | None = None
        self.models = LoggedModels(self.dir)

    @contextmanager
    def _flock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "state.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- experiments ----------------------------------------------------------------------
    def _experiments(self) -> dict[str, Any]:
        with self._mutex:
            try:
                st = os.stat(self.exp_path)
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                key = None
            if key is None:
                now = int(time.time() * 1000)
                self._exp = {"next_id": 1, "experiments": {"0": {
                    "experiment_id": "0", "name": "Default", "project": "Default",
                    "artifact_location": "mlflow-artifacts:/0", "lifecycle_stage": "active",
                    "creation_time": now, "last_update_time": now, "tags": {}}}}
            elif key != self._exp_stat:
                self._exp = json.loads(self.exp_path.read_text())
            self._exp_stat = key
            return self._exp

    def _mutate(self, fn: Callable[[dict[str, Any]], Any]) -> Any:
        with self._mutex, self._flock():
            self._exp_stat = None
            data = json.loads(json.dumps(self._experiments()))
            out = fn(data)
            _write_json(self.exp_path, data)
            self._exp_stat = None
            return out

    def experiments(self) -> list[dict[str, Any]]:
        return list(self._experiments()["experiments"].values())

    def experiment(self, exp_id: str) -> dict[str, Any]:
        e = self._experiments()["experiments"].get(str(exp_id))
        if e is None:
            raise NotFoundError(f"no experiment with id {exp_id!r}",
                                hint="list experiments with experiments/search")
        return dict(e)

    def by_name(self, name: str) -> dict[str, Any] | None:
        for e in self._experiments()["experiments"].values():
            if e["name"] == name:
                return dict(e)
        return None

    def by_project(self, project: str) -> dict[str, Any] | None:
        for e in self._experiments()["experiments"].values():
            if e["project"] == project:
                return dict(e)
        return None

    def create(self, name: str, artifact_location: str | None = None,
               tags: dict[str, str] | None = None, *, exists_ok: bool = False,
               owner: str = "") -> dict[str, Any]:
        """Create an experiment (``exists_ok``: return the one with that name instead).
        ``owner`` is the creating token's name: researchers change only their own.

        Raises:
            UserInputError: empty name. ConflictError: the name exists.
        """
        if not isinstance(name, str) or not name.strip() or len(name) > 500:
            raise UserInputError(f"invalid experiment name {name!r}",
                                 hint="a non-empty name of at most 500 characters")

        def add(data: dict[str, Any]) -> dict[str, Any]:
            exps = data["experiments"]
            for e in exps.values():
                if e["name"] == name:
                    if exists_ok:
                        return dict(e)
                    raise ConflictError(f"experiment {name!r} already exists",
                                        hint="use experiments/get-by-name")
            eid = str(data["next_id"])
            data["next_id"] += 1
            now = int(time.time() * 1000)
            e = {"experiment_id": eid, "name": name,
                 "project": project_for(name, {x["project"] for x in exps.values()}, eid),
                 "artifact_location": artifact_location or f"mlflow-artifacts:/{eid}",
                 "lifecycle_stage": "active", "creation_time": now, "last_update_time": now,
                 "tags": dict(tags or {}), "owner": owner}
            exps[eid] = e
            return dict(e)

        return self._mutate(add)  # type: ignore[no-any-return]

    def update_experiment(self, exp_id: str, **changes: Any) -> dict[str, Any]:
        """Rename, tag, delete or restore (``lifecycle_stage``) an experiment."""
        def upd(data: dict[str, Any]) -> dict[str, Any]:
            e = data["experiments"].get(str(exp_id))
            if e is None:
                raise NotFoundError(f"no experiment with id {exp_id!r}",
                                    hint="list experiments with experiments/search")
            if "name" in changes and any(x["name"] == changes["name"] and x is not e
                                         for x in data["experiments"].values()):
                raise ConflictError(f"experiment {changes['name']!r} already exists",
                                    hint="pick another name")
            tags = changes.pop("tags", None)
            e.update(changes)
            if tags:
                e["tags"].update(tags)
            e["last_update_time"] = int(time.time() * 1000)
            return dict(e)

        return self._mutate(upd)  # type: ignore[no-any-return]

    def register_projects(self, projects: list[str]) -> None:
        """Give every project without an experiment one, named after it."""
        have = {e["project"] for e in self.experiments()}
        missing = [p for p in projects if p not in have]
        if not missing:
            return

        def add(data: dict[str, Any]) -> None:
            exps = data["experiments"]
            known = {e["project"] for e in exps.values()}
            names = {e["name"] for e in exps.values()}
            for p in missing:
                if p in known or p in names:
                    continue
                eid = str(data["next_id"])
                data["next_id"] += 1
                now = int(time.time() * 1000)
                exps[eid] = {"experiment_id": eid, "name": p, "project": p,
                             "artifact_location": f"mlflow-artifacts:/{eid}",
                             "lifecycle_stage": "active", "creation_time": now,
                             "last_update_time": now, "tags": {}}

        self._mutate(add)

    # -- run sidecars ---------------------------------------------------------------------
    def _run_path(self, run_id: str) -> Path:
        return self.dir / "runs" / f"{run_id}.json"

    def run(self, run_id: str) -> dict[str, Any] | None:
        """The MLflow fields of a run created through MLflow (None for other runs)."""
        with self._mutex:
            if run_id not in self._runs:
                p = self._run_path(run_id)
                self._runs[run_id] = json.loads(p.read_text()) if p.exists() else None
            r = self._runs[run_id]
            return None if r is None else json.loads(json.dumps(r))

    def run_ids(self) -> set[str]:
        """Ids of every run created through MLflow (one directory scan, then kept current)."""
        with self._mutex:
            if self._run_ids is None:
                self._run_ids = {p.stem for p in (self.dir / "runs").glob("*.json")}
            return set(self._run_ids)

    def save_run(self, run_id: str, fields: dict[str, Any]) -> None:
        with self._mutex:
            _write_json(self._run_path(run_id), fields)
            self._runs[run_id] = json.loads(json.dumps(fields))
            if self._run_ids is not None:
                self._run_ids.add(run_id)


# -- logged models (MLflow 3) -------------------------------------------------------------------
#: MLflow's LoggedModelStatus, by proto number (the JSON carries the names).
MODEL_STATUSES = ("LOGGED_MODEL_STATUS_UNSPECIFIED", "LOGGED_MODEL_PENDING",
                  "LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED")


class LoggedModels:
    """MLflow 3's logged models, one file each: ``<data dir>/mlflow/models/<model_id>.json``
    (replaced atomically, like run sidecars), read once and then kept in memory.

    A record holds MLflow's fields (``model_id``, ``experiment_id``, ``name``,
    ``artifact_location``, ``creation_timestamp_ms``, ``last_updated_timestamp_ms``,
    ``status`` as its proto number, ``status_message``, ``model_type``, ``source_run_id``,
    ``lifecycle_stage``, ``tags``, ``params``, ``metrics``) and ``owner``: the researcher who
    may change it (the owner of its source run, else its creator).
    """

    def __init__(self, mlflow_dir: Path) -> None:
        self.dir = Path(mlflow_dir) / "models"
        self._mutex = threading.RLock()
        self._models: dict[str, dict[str, Any]] | None = None

    def _all(self) -> dict[str, dict[str, Any]]:
        with self._mutex:
            if self._models is None:
                models: dict[str, dict[str, Any]] = {}
                for p in sorted(self.dir.glob("*.json")):
                    if not p.name.startswith("."):
                        models[p.stem] = json.loads(p.read_text())
                self._models = models
            return self._models

    def get(self, model_id: str) -> dict[str, Any] | None:
        """A copy of the model's record (deleted ones too), None if there is none."""
        with self._mutex:
            m = self._all().get(model_id)
            return None if m is None else json.loads(json.dumps(m))

    def all(self) -> list[dict[str, Any]]:
        with self._mutex:
            return json.loads(json.dumps(list(self._all().values())))  # type: ignore[no-any-return]

    def add(self, model: dict[str, Any]) -> None:
        with self._mutex:
            if model["model_id"] in self._all():
                raise ConflictError(f"logged model {model['model_id']} exists",
                                    hint="create it again (a new id)")
            self._save(model)

    def update(self, model_id: str, fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """Apply ``fn`` to a copy of the record and store it (``fn`` may raise to refuse);
        returns the new record. ``last_updated_timestamp_ms`` is set to now."""
        with self._mutex:
            m = self.get(model_id)
            if m is None:
                raise NotFoundError(f"Logged model with ID '{model_id}' not found.",
                                    hint="search them with logged-models/search")
            fn(m)
            m["last_updated_timestamp_ms"] = int(time.time() * 1000)
            self._save(m)
            return m

    def _save(self, model: dict[str, Any]) -> None:
        _write_json(self.dir / f"{model['model_id']}.json", model)
        self._all()[model["model_id"]] = json.loads(json.dumps(model))
