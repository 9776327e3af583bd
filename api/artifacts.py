"""Write routes over artifacts: delete a version, collect unreferenced blobs.

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

from ..errors import PermissionDeniedError
from ..store.gc import DEFAULT_GRACE
from .auth import Admin, Principal, Researcher, Role
from .graph import _api
from .http import ERROR_RESPONSES, SafeJSONResponse, StrictJSONRoute, ok

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
        _check_owner(request, who, graph.artifacts.get(f"{name}:{version}", include_deleted=True))
    av = graph.artifacts.delete(f"{name}:{version}", actor=who.name, reason=reason,
                                delete_aliases=delete_aliases)
    return ok({"deleted": av.id, "name": av.name, "version": av.version,
               "digest": av.digest, "aliases_removed": list(av.aliases)})


def _check_owner(request: Request, who: Principal, av: Any) -> None:
    remote, run_id = request.app.state.remote, av.created_by
    owner = remote.owner(run_id) if run_id else None
    if owner != who.name:
        whose = (f"run {run_id}, which belongs to {owner}" if owner else
                 f"run {run_id}, which no token of this server created" if run_id else
                 "no run")
        raise PermissionDeniedError(
            f"artifact version {av.id} was logged by {whose}, not by a run of {who.name}",
            hint="delete versions your own runs logged, or ask a supervisor")
    # Clients choose run ids: a run id that logged a version outside the server can be
    # started on it later. Only a run owned before the version was logged counts as its own.
    since = remote.owned_since(run_id)
    if since is None or since > av.created_at:
        raise PermissionDeniedError(
            f"artifact version {av.id} was logged before {who.name} started run {run_id} on "
            "this server, so it is not that run's version",
            hint="ask a supervisor to delete it")


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
