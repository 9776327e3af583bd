"""Routes that move and remove artifact aliases (``prod``, ``best``, ...).

``PUT /api/artifacts/{name}/aliases/{alias}`` with ``{"version": N, "reason": ...}`` points
the alias at version N, moving it from the version it named; ``DELETE`` removes it (the
version stays). ``latest`` is assay's own (it names the newest live version) and is a 400.

Who may: as for deleting a version (:mod:`.artifacts`), a researcher acts on the versions
their own runs logged (started on this server with their token before the version was
logged); a supervisor or admin on any. Setting checks the version the alias will name;
removing, the version it names now. A researcher may thus move ``prod`` from someone else's
version to their own, as logging a version with ``aliases=["prod"]`` does; every move is in
the audit trail with the token's name as actor.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConflictError
from ..sdk.api import _check_user_alias
from .artifacts import check_version_owner
from .auth import Researcher, Role
from .graph import _api
from .http import ERROR_RESPONSES, SafeJSONResponse, StrictJSONRoute, ok

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["artifacts"], route_class=StrictJSONRoute,
                   responses=ERROR_RESPONSES)

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
_ALIAS = r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$"

Name = Annotated[str, Path(pattern=_NAME, description="the artifact's name")]
Alias = Annotated[str, Path(pattern=_ALIAS, description="a user alias, e.g. prod")]


class SetAliasBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=0, le=999_999_999, description="the version number (3 for v3)")
    reason: str = Field(default="", max_length=2000, description="why (audited)")


@router.put("/artifacts/{name}/aliases/{alias}", summary="Point an alias at a version")
def set_alias(request: Request, who: Researcher, name: Name, alias: Alias,
              body: SetAliasBody) -> SafeJSONResponse:
    """Point ``alias`` at ``name:v{version}``, moving it from the version it named.

    ``latest`` or a version-like alias (``v3``) is a 400; an unknown or deleted version a
    404 whose hint lists the versions and aliases; another researcher's version a 403.
    Answers the version with its aliases and the one the alias named before (or null).
    """
    api = _api(request)
    _check_user_alias(name, alias)  # 'latest': 400 before anything is looked up
    target = api._graph().artifacts.get(name, f"v{body.version}")
    if not who.can(Role.SUPERVISOR):
        check_version_owner(request, who, target, f"point {alias!r} at it", own="move aliases on")
    before = _alias_version(api, name, alias)
    art = api.set_alias(f"{name}:v{body.version}", alias, reason=body.reason, actor=who.name)
    return ok({"name": name, "alias": alias, "version": art.version, "id": art.id,
               "previous_version": before, "aliases": list(art.aliases)})


@router.delete("/artifacts/{name}/aliases/{alias}", summary="Remove an alias")
def remove_alias(request: Request, who: Researcher, name: Name, alias: Alias,
                 reason: Annotated[str, Query(max_length=2000,
                                              description="why (audited)")] = "",
                 version: Annotated[int | None, Query(
                     ge=0, le=2**62, description="remove it only while it names this "
                                                 "version (409 otherwise)")] = None,
                 ) -> SafeJSONResponse:
    """Remove ``alias`` from artifact ``name``; the version it named stays.

    ``latest`` is a 400; an alias the artifact lacks a 404 whose hint lists its aliases;
    an alias on another researcher's version a 403; one that names another version than
    ``version`` (the caller looked at) a 409.
    """
    api = _api(request)
    _check_user_alias(name, alias)
    if not who.can(Role.SUPERVISOR):
        named = _alias_version(api, name, alias)
        if named is not None:  # a missing alias is the 404 remove_alias raises
            if version is not None and named != version:
                raise ConflictError(f"{name}:{alias} moved to v{named} meanwhile",
                                    hint="look again and retry")
            version = named
            target = api._graph().artifacts.get(name, f"v{version}")
            check_version_owner(request, who, target, f"remove its alias {alias!r}",
                                own="move aliases on")
    # Removed only if it still names the version whose owner was checked (409 otherwise).
    art = api.remove_alias(name, alias, reason=reason, actor=who.name, expect_version=version)
    return ok({"name": name, "alias": alias, "removed_from": art.version, "id": art.id,
               "aliases": list(art.aliases)})


def _alias_version(api: Any, name: str, alias: str) -> int | None:
    for r in api.artifacts(name=name).iter_rows(named=True):
        if alias in (r.get("aliases") or []):
            return int(r["version"])
    return None
