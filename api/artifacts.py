"""Write routes over artifacts: log and use versions from runs that log to this server,
delete a version, collect unreferenced blobs.

``POST /api/runs/{run_id}/artifacts`` commits a version whose files were uploaded with the
blob routes (:mod:`.blobs`); ``POST /api/runs/{run_id}/used-artifacts`` records that a run
consumes one. Both are for the run's owner (the token that started it on this server), or a
supervisor.

``DELETE /api/artifacts/{name}/v{n}`` follows the rule for runs: a researcher may delete a
version that one of their own runs logged (the run's owner is the token that created it on
this server); a supervisor or admin may delete any version, including those logged straight
into the data directory, whose runs have no owner here. The deletion records the token's name
as its actor, in the version's tombstone and in the audit trail. ``POST /api/artifacts/gc`` frees the blobs of the
whole data directory, so it is for admins. Both go through the data directory's artifact
registry, whose writes commit under the single-writer ingest lock (see
:mod:`assay.store.artifacts` and :mod:`assay.store.gc`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConflictError, NotFoundError, PermissionDeniedError, UserInputError
from ..store.gc import DEFAULT_GRACE
from ..store.manifests import Manifest, ManifestEntry
from ..store.records import RunStatus
from .auth import Admin, Principal, Researcher, Role
from .graph import _api, _artifact_public
from .http import ERROR_RESPONSES, SafeJSONResponse, StrictJSONRoute, ok
from .runs import RunId

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["artifacts"], route_class=StrictJSONRoute,
                   responses=ERROR_RESPONSES)

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
_SELECTOR = r"^(v\d{1,9}|[A-Za-z][A-Za-z0-9_.\-]{0,63})$"


@router.delete("/artifacts/{name}/{version}", summary="Delete an artifact version")
def delete_artifact(request: Request, who: Researcher,
                    name: Annotated[str, Path(pattern=_NAME)],
                    version: Annotated[str, Path(pattern=_SELECTOR,
                                                 description="the exact version, v3")],
                    reason: Annotated[str, Query(max_length=2000,
                                                 description="why (audited)")] = "",
                    delete_aliases: Annotated[bool, Query(description=(
                        "also remove its aliases; without it a version with aliases "
                        "(latest included) is refused with 409"))] = False,
                    ) -> SafeJSONResponse:
    """Tombstone one version: it no longer resolves or lists; its record and lineage stay.

    An alias instead of ``vN`` is a 400 (aliases move); an unknown version a 404; a version
    already deleted, or one that still has aliases without ``delete_aliases``, a 409.
    """
    graph = _api(request)._graph()
    if re.fullmatch(r"v\d+", version) and not who.can(Role.SUPERVISOR):  # an alias: 400 below
        check_version_owner(request, who,
                            graph.artifacts.get(f"{name}:{version}", include_deleted=True))
    av = graph.artifacts.delete(f"{name}:{version}", actor=who.name, reason=reason,
                                delete_aliases=delete_aliases)
    return ok({"deleted": av.id, "name": av.name, "version": av.version,
               "digest": av.digest, "aliases_removed": list(av.aliases)})


def check_version_owner(request: Request, who: Principal, av: Any, what: str = "delete it",
                        own: str = "delete") -> None:
    """Refuse a researcher whose runs did not log version ``av``: it must have been logged by
    a run this researcher started on this server before the version was logged (``what``
    they may not do; ``own`` what they may do to their own versions)."""
    remote, run_id = request.app.state.remote, av.created_by
    owner = remote.owner(run_id) if run_id else None
    if owner != who.name:
        whose = (f"run {run_id}, which belongs to {owner}" if owner else
                 f"run {run_id}, which no token of this server created" if run_id else
                 "no run")
        raise PermissionDeniedError(
            f"artifact version {av.id} was logged by {whose}, not by a run of {who.name}, "
            f"so {who.name} may not {what}",
            hint=f"{own} versions your own runs logged, or ask a supervisor")
    # Clients choose run ids: a run id that logged a version outside the server can be
    # started on it later. Only a run owned before the version was logged counts as its own.
    since = remote.owned_since(run_id)
    if since is None or since > av.created_at:
        raise PermissionDeniedError(
            f"artifact version {av.id} was logged before {who.name} started run {run_id} on "
            f"this server, so it is not that run's version and {who.name} may not {what}",
            hint="ask a supervisor")


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=4096)
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    size: int = Field(ge=0)


class LogArtifactBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME)
    type: str = Field(default="dataset", pattern=_NAME)
    project: str | None = Field(default=None, pattern=_NAME,
                                description="the run's project (checked; it is taken from the run)")
    files: list[FileEntry] = Field(max_length=1_000_000)
    aliases: list[str] = Field(default_factory=list, max_length=100)
    metadata: dict[str, Any] = Field(default_factory=dict)
    description: str = Field(default="", max_length=100_000)
    folder: bool = Field(default=False, description=(
        "a folder was logged: its download is the folder even when it holds one file "
        "(several files, or nested paths, are a folder anyway)"))


class UseArtifactBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: str = Field(min_length=1, max_length=200)


def _check_run_writer(request: Request, who: Principal, run_id: str) -> str:
    """A running run's artifacts are written by its owner (a supervisor: any run this server
    has). Returns the run's project.

    A finished run is refused: its signed record is sealed with the artifacts it produced
    and used, so a later edge would make ``assay verify`` report it as tampered with.
    """
    remote = request.app.state.remote
    if remote.owner(run_id) is not None:
        remote.check_writer(who, run_id)
        project, finished = remote.run_state(run_id)
    elif who.can(Role.SUPERVISOR):
        run = _api(request).run(run_id)  # a run written straight into the data directory
        project, finished = run.project, RunStatus(run.status).finished
    else:
        raise NotFoundError(
            f"run {run_id} has no owner on this server: it was not started here with a token",
            hint="log artifacts from a run started on this server (assay.init(server=...)); "
                 "its first records must arrive before its artifacts")
    if finished:
        raise ConflictError(
            f"run {run_id} is finished: its signed record already lists the artifacts it "
            "produced and used",
            hint=f"resume it to add more (assay.init(project=..., resume={run_id!r}))")
    return str(project)


def _version_public(av: Any) -> dict[str, Any]:
    return {**_artifact_public({**av.__dict__, "aliases": av.aliases}),
            "manifest_blob": av.manifest_blob}


@router.post("/runs/{run_id}/artifacts", summary="Log an artifact version a run produced",
             max_body_size=256 << 20)
def log_artifact(request: Request, who: Researcher, run_id: RunId,
                 body: LogArtifactBody) -> SafeJSONResponse:
    """Commit a version from its manifest (each file's relative path, digest and size),
    after the files' blobs were uploaded (``PUT /api/blobs/{digest}``).

    Content equal to the latest version's makes no new version. A blob that is not stored
    is a 404 naming the file (upload it, then commit again); a size that differs from the
    stored blob's is a 400; a finished run is a 409. Versions and aliases of a name are
    shared by the researchers of this server, as in a W&B team project: anyone's run may
    log the next version and move ``latest`` or a user alias to it (each move is audited);
    only deleting a version is kept to the runs that logged it.
    """
    project = _check_run_writer(request, who, run_id)
    if body.project is not None and body.project != project:
        raise UserInputError(f"run {run_id} belongs to project {project!r}, not {body.project!r}",
                             hint="leave project out: a version goes to its run's project")
    entries = Manifest((ManifestEntry(f.path, f.digest, f.size) for f in body.files),
                       folder=body.folder)
    graph = _api(request)._graph()
    av = graph.artifacts.log_manifest(
        entries, body.name, body.type, project=project, run_id=run_id,
        aliases=body.aliases, metadata=body.metadata, description=body.description,
        actor=who.name)
    return ok(_version_public(av))


@router.post("/runs/{run_id}/used-artifacts", summary="Record that a run uses an artifact")
def use_artifact(request: Request, who: Researcher, run_id: RunId,
                 body: UseArtifactBody) -> SafeJSONResponse:
    """Resolve ``spec`` (``name``, ``name:v3``, ``name:latest``, ``name:prod``), add the
    lineage edge version -> run, and answer the version with its manifest blob's digest
    (``GET /api/blobs/{manifest_blob}`` gives the file list)."""
    _check_run_writer(request, who, run_id)
    graph = _api(request)._graph()
    return ok(_version_public(graph.artifacts.use(body.spec, run_id)))


class GcBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = False
    grace_seconds: float = Field(default=DEFAULT_GRACE, ge=0, le=10 * 365 * 86400)


@router.post("/artifacts/gc", summary="Collect blobs no live version or run references")
def collect_garbage(request: Request, who: Admin, body: GcBody) -> SafeJSONResponse:
    """Mark and sweep the blob store; ``dry_run`` reports what would go. Blobs written or
    reused within ``grace_seconds`` always stay (uploads in flight)."""
    graph = _api(request)._graph()
    rep = graph.artifacts.gc(grace=body.grace_seconds, dry_run=body.dry_run, actor=who.name)
    out = rep.to_dict()
    out["digests"] = out["digests"][:1000]
    return ok(out)
