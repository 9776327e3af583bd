"""Tokens, the audit trail, whoami and health."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from .audit import AuditTrail
from .auth import Admin, Role, Supervisor, TokenStore, Viewer, parse_duration
from .http import ERROR_RESPONSES, StrictJSONRoute

__all__ = ["SERVER_FEATURES", "TokenCreate", "health_router", "router"]

SERVER_FEATURES: tuple[str, ...] = ("rewind", "remote_artifacts", "history_arrow",
                                   "runs_stats", "decisions_offset", "chunks_after",
                                   "agent_store", "run_positions", "override_idempotency")
"""What this server takes beyond plain records, named in ``/api/health`` so a newer SDK can
tell what an older server lacks before sending it (``rewind``: resume_from_step records;
``remote_artifacts``: artifacts of runs that log to the server). A server without the list
predates both."""

router = APIRouter(prefix="/api", tags=["admin"], route_class=StrictJSONRoute,
                   responses=ERROR_RESPONSES)
health_router = APIRouter(prefix="/api", tags=["health"])

Reason = Annotated[str | None, Header(max_length=500,
                                      description="why (recorded in the audit trail)")]


class TokenCreate(BaseModel):
    """A token to create."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="who holds it (audit 'who')")
    role: Role = Role.VIEWER
    expires_in: str | None = Field(default=None, max_length=32,
                                   description="e.g. 30d, 12h; null: never")
    reason: str = Field(default="", max_length=500)


def _tokens(request: Request) -> TokenStore:
    return request.app.state.tokens  # type: ignore[no-any-return]


def _audit(request: Request) -> AuditTrail:
    return request.app.state.audit  # type: ignore[no-any-return]


@health_router.get("/health", summary="Liveness (public)")
def health(request: Request) -> dict[str, Any]:
    """``ok`` while the server answers, its version and features; no authentication, no
    data."""
    return {"status": "ok", "version": __version__, "features": list(SERVER_FEATURES)}


@router.get("/whoami", summary="The caller's token name and role")
def whoami(who: Viewer) -> dict[str, Any]:
    return {"token_id": who.token_id, "name": who.name, "role": str(who.role)}


@router.post("/tokens", summary="Create a token (shown once)", status_code=201)
def create_token(request: Request, body: TokenCreate, who: Admin,
                 x_assay_reason: Reason = None) -> dict[str, Any]:
    """Create a token; the response is the only place the token ever appears."""
    token, rec = _tokens(request).create(body.name, body.role,
                                         expires_in=parse_duration(body.expires_in),
                                         created_by=who.name)
    _audit(request).record(who.name, "create_token", rec.id,
                           body.reason or x_assay_reason or "",
                           {"name": rec.name, "role": str(rec.role), "expires_at": rec.expires_at})
    return {"token": token, **rec.public()}


@router.get("/tokens", summary="List tokens (never their secrets)")
def list_tokens(request: Request, who: Admin) -> dict[str, Any]:
    return {"tokens": [r.public() for r in _tokens(request).list()]}


@router.delete("/tokens/{token_id}", summary="Revoke a token")
def revoke_token(request: Request, who: Admin,
                 token_id: Annotated[str, Path(pattern=r"^[a-z0-9]{10}$")],
                 x_assay_reason: Reason = None) -> dict[str, Any]:
    rec = _tokens(request).revoke(token_id)
    _audit(request).record(who.name, "revoke_token", token_id, x_assay_reason or "",
                           {"name": rec.name})
    return rec.public()


@router.get("/audit", summary="The audit trail, newest first")
def audit_entries(
    request: Request, who: Supervisor,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    target: Annotated[str | None, Query(max_length=128)] = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Who wrote what, when and why (each entry hash-chained and signed)."""
    total, rows = _audit(request).entries(limit=limit, offset=offset, target=target, actor=actor)
    return {"total": total, "entries": rows}


@router.get("/audit/verify", summary="Verify the audit chain")
def audit_verify(request: Request, who: Admin) -> dict[str, Any]:
    """Check every entry's hash, signature and link; lists the problems found."""
    audit = _audit(request)
    problems = audit.verify()
    return {"ok": not problems, "problems": problems, "key_id": audit.key.key_id}
