"""Routes that keep a remote agent's control store (server feature ``agent_store``).

An agent started on another machine (``assay run`` with ``$ASSAY_SERVER``) keeps its row,
decisions, overrides' outcomes and config leases here through
:class:`~assay.store.control_remote.RemoteControlStore`, so the fleet overview, supervisors'
overrides and the other agents of its project see them as those of agents the server
started. Values travel as :func:`~assay.store.control_remote.encode_value` writes them (NaN
and infinities as strings, look-alike strings NUL-escaped), so they come back as sent.

Who may do what: viewers read. Registering an agent is a researcher's; the server sets the
row's ``spec["owner"]`` to the token's name (a supervisor may name another owner). After
that only the owner or a supervisor writes the agent's row, decisions, overrides' outcomes
and leases; the owner stays (only a supervisor changes it) and so does the project. Every
write is idempotent, so a client retrying after a lost answer changes nothing twice.

Each write here takes a lock object of its own (an ``flock`` on its own file description,
which excludes other threads as well as other processes): the app's shared ``IngestLock``
used to count re-entries without regard to threads, so two request threads both "held" it
and a lease was handed out twice (it is re-entrant per thread now).
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConflictError, NotFoundError, PermissionDeniedError, UserInputError
from ..store.control import (
    AgentRow,
    AgentStatus,
    ControlStore,
    Decision,
    LanceControlStore,
    Override,
    OverrideStatus,
)
from ..store.control_remote import decode_value, encode_value
from ..store.ingest import IngestLock
from .agents import AgentId, _agent_or_404, control_store
from .auth import Principal, Researcher, Role, Viewer
from .http import ERROR_RESPONSES, SafeJSONResponse, StrictJSONRoute, ok

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["agent store"], route_class=StrictJSONRoute,
                   responses=ERROR_RESPONSES)

OverrideId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$", description="an override id")]
Key = Annotated[str, Field(min_length=1, max_length=1024)]
_PAGE = 5000


_MAX_AHEAD_MS = 60 * 60 * 1000
"""How far ahead of this server's clock a client's HLC may be: more is a broken clock (or
an attempt to sort first and drag every clock that merges it into the future)."""


def _check_hlc(text: str, what: str) -> None:
    """Refuse a malformed HLC, or one far ahead of this server's clock (400): stored, it
    would sort after every real one and fail or drag whoever merges it."""
    from ..agents.hlc import HLC

    h = HLC.parse(text)  # UserInputError: not an HLC
    if h.ms < 0 or h.counter < 0 or not h.node:
        raise UserInputError(f"{what}: not an HLC timestamp: {text!r}",
                             hint="HLC strings look like '1732700000000.000003.node'")
    ahead = h.ms - time.time_ns() // 1_000_000
    if ahead > _MAX_AHEAD_MS:
        raise UserInputError(f"{what}: HLC {text!r} is {ahead / 1000:.0f} s ahead of the "
                             "server's clock", hint="sync the client's clock (NTP); an HLC "
                             "may be at most an hour ahead of the server's")


_MU = threading.RLock()  # for a control store other than the directory's (tests' in-memory one)


#: Seconds a write waits for the data directory's writer lock (a long ingest pass holds
#: it) before answering 503 with Retry-After, which the client retries: request threads
#: never pile up behind an ingest.
LOCK_WAIT_S = 10.0


def _writer(request: Request) -> tuple[ControlStore, Any]:
    """The app's control store with a lock of this request's own (see the module doc)."""
    ctl = control_store(request)
    if isinstance(ctl, LanceControlStore):
        ctl = LanceControlStore(ctl.store, IngestLock(request.app.state.data_dir))
        return ctl, _Bounded(ctl.lock)
    return ctl, _Bounded(_MU)


class _Bounded:
    """``with`` a lock, waiting at most :data:`LOCK_WAIT_S`, else a 503 to retry."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        if not self.lock.acquire(timeout=LOCK_WAIT_S):
            from fastapi import HTTPException

            raise HTTPException(503, "the data directory is busy (a long ingest pass holds "
                                     "its writer lock); retry", headers={"Retry-After": "2"})

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _may_write(who: Principal, a: AgentRow) -> None:
    if who.can(Role.SUPERVISOR) or a.spec.get("owner") == who.name:
        return
    raise PermissionDeniedError(
        f"{who.name} ({who.role}) may not write agent {a.agent_id}: it is "
        f"{a.spec.get('owner') or 'nobody'}'s",
        hint="only the token that registered an agent (its owner) or a supervisor writes it; "
             "run the agent with its owner's token")


def _row_json(a: AgentRow) -> dict[str, Any]:
    return {"agent_id": a.agent_id, "objective": a.objective, "project": a.project,
            "spec": encode_value(a.spec), "status": str(a.status),
            "state": encode_value(a.state), "hlc": a.hlc, "updated_at": a.updated_at,
            "host": a.host, "pid": a.pid}


def _decision_json(d: Decision) -> dict[str, Any]:
    return {"decision_id": d.decision_id, "agent_id": d.agent_id, "project": d.project,
            "trial_id": d.trial_id, "kind": d.kind, "summary": d.summary,
            "explanation": encode_value(d.explanation), "hlc": d.hlc, "time": d.time}


def _override_json(o: Override) -> dict[str, Any]:
    return {"override_id": o.override_id, "agent_id": o.agent_id, "action": o.action,
            "params": encode_value(o.params), "actor": o.actor, "reason": o.reason,
            "hlc": o.hlc, "time": o.time, "status": str(o.status), "result": o.result}


# -- agents' rows ---------------------------------------------------------------------------
class RowBody(BaseModel):
    """An agent's row (``AgentRow`` less its id and ``updated_at``, which the store sets)."""

    model_config = ConfigDict(extra="forbid")
    objective: str = Field(max_length=256)
    project: str = Field(min_length=1, max_length=128)
    spec: dict[str, Any]
    status: str = Field(default="running", max_length=32)
    state: dict[str, Any] = Field(default_factory=dict)
    hlc: str = Field(default="", max_length=128)
    host: str = Field(default="", max_length=256)
    pid: int = Field(default=0, ge=0, le=2**31)


@router.put("/agents/{agent_id}/row", summary="Register an agent or replace its row")
def put_row(request: Request, who: Researcher, agent_id: AgentId,
            body: RowBody) -> SafeJSONResponse:
    if body.status not in set(AgentStatus):
        raise UserInputError(f"unknown agent status {body.status!r}",
                             hint="one of: " + ", ".join(AgentStatus))
    spec = decode_value(body.spec)
    if (request.app.state.data_dir / "objectives" / f"{agent_id}.json").exists():
        raise ConflictError(f"agent {agent_id} is run by this server (declared through POST "
                            "/api/objectives): its own process writes its row",
                            hint="steer it with POST /api/agents/{agent_id}/overrides; an "
                                 "agent started elsewhere registers under a new id")
    ctl, lock = _writer(request)
    with lock:  # read, check and write as one: two first registrations make one owner
        old = ctl.get_agent(agent_id)
        if old is None:
            given = spec.get("owner")
            keep = who.can(Role.SUPERVISOR) and isinstance(given, str) and given
            spec["owner"] = given if keep else who.name
        else:
            _may_write(who, old)
            if body.project != old.project:
                raise ConflictError(
                    f"agent {agent_id} belongs to project {old.project!r}, not "
                    f"{body.project!r}", hint="an agent keeps its project: register a new "
                                              "agent (a new id) for another project")
            if not (who.can(Role.SUPERVISOR) and isinstance(spec.get("owner"), str)
                    and spec["owner"]):
                spec["owner"] = old.spec.get("owner", who.name)  # only supervisors change it
        row = AgentRow(agent_id, body.objective, body.project, spec, AgentStatus(body.status),
                       decode_value(body.state), body.hlc, 0.0, body.host, body.pid)
        ctl.save_agent(row)
    if old is None:
        request.app.state.audit.record(
            who.name, "agent.register", f"agent:{agent_id}", f"registered {body.objective}",
            {"project": body.project, "owner": spec["owner"], "host": body.host,
             "pid": body.pid})
    return ok({"agent_id": agent_id, "owner": spec["owner"], "created": old is None})


@router.get("/agents/{agent_id}/row", summary="An agent's raw row (for the agent itself)")
def get_row(request: Request, who: Viewer, agent_id: AgentId) -> SafeJSONResponse:
    return ok({"agent": _row_json(_agent_or_404(request, agent_id))})


@router.get("/agent-rows", summary="Agents' raw rows in HLC order")
def list_rows(request: Request, who: Viewer,
              project: Annotated[str | None, Query(max_length=128)] = None) -> SafeJSONResponse:
    return ok({"agents": [_row_json(a) for a in control_store(request).list_agents(project)]})


# -- decisions ------------------------------------------------------------------------------
class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_id: str = Field(max_length=64)
    project: str = Field(max_length=128)
    trial_id: str = Field(max_length=128)
    kind: str = Field(min_length=1, max_length=32)
    summary: str = Field(max_length=20_000)
    explanation: dict[str, Any]
    hlc: str = Field(max_length=128)
    time: float
    decision_id: str = Field(min_length=1, max_length=128)


class DecisionsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decisions: list[DecisionBody] = Field(max_length=_PAGE)


@router.post("/agents/{agent_id}/decisions", summary="Append an agent's decisions (by id, once)")
def add_decisions(request: Request, who: Researcher, agent_id: AgentId,
                  body: DecisionsBody) -> SafeJSONResponse:
    """Decisions whose id is stored already are skipped: a client retrying after a lost
    answer does not duplicate them."""
    a = _agent_or_404(request, agent_id)
    _may_write(who, a)
    for d in body.decisions:
        if d.agent_id != agent_id or d.project != a.project:
            raise UserInputError(
                f"decision {d.decision_id} is for agent {d.agent_id} in project {d.project!r}; "
                f"this route takes agent {agent_id}'s, in project {a.project!r}",
                hint="post each agent's decisions to its own /api/agents/{agent_id}/decisions")
        _check_hlc(d.hlc, f"decision {d.decision_id}")
    ctl, lock = _writer(request)
    with lock:
        have = ctl.stored_decisions(agent_id, [d.decision_id for d in body.decisions])
        # A run is launched by one agent: the one that stops it, reads it and answers for
        # it. Another agent's launch of the same trial id is refused (it would take over
        # the run's stop route).
        for d in body.decisions:
            if d.kind != "launch" or not d.trial_id or d.decision_id in have:
                continue
            others = sorted({x.agent_id for x in ctl.decisions(trial_id=d.trial_id)
                             if x.kind == "launch" and x.agent_id != agent_id})
            if others:
                raise ConflictError(
                    f"trial {d.trial_id} was launched by agent {others[0]}; agent "
                    f"{agent_id} cannot launch it too",
                    hint="each trial id is launched by one agent: draw a new trial id")
        new: dict[str, Decision] = {}
        for d in body.decisions:
            if d.decision_id not in have:
                new.setdefault(d.decision_id, Decision(**{
                    **d.model_dump(), "explanation": decode_value(d.explanation)}))
        ctl.add_decisions(list(new.values()))
    return ok({"added": len(new), "skipped": len(body.decisions) - len(new)})


@router.get("/decisions/raw", summary="Decisions as stored, in HLC order, by pages")
def list_decisions_raw(
        request: Request, who: Viewer,
        agent_id: Annotated[str | None, Query(max_length=64)] = None,
        project: Annotated[str | None, Query(max_length=128)] = None,
        trial_id: Annotated[str | None, Query(max_length=128)] = None,
        offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=_PAGE)] = _PAGE) -> SafeJSONResponse:
    """``limit`` decisions from ``offset`` (from the oldest) and ``total``; unlike
    ``GET /api/decisions``, explanations keep NaN apart from the string ``"NaN"``."""
    ds = control_store(request).decisions(agent_id=agent_id, project=project, trial_id=trial_id)
    return ok({"decisions": [_decision_json(d) for d in ds[offset:offset + limit]],
               "total": len(ds)})


# -- overrides ------------------------------------------------------------------------------
class OverrideRowBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    override_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    agent_id: str = Field(max_length=64)
    action: str = Field(min_length=1, max_length=32)
    params: dict[str, Any] = Field(default_factory=dict)
    actor: str = Field(max_length=64)
    reason: str = Field(max_length=2000)
    hlc: str = Field(max_length=128)
    time: float
    status: Literal["pending", "applied", "rejected"] = "pending"
    result: str = Field(default="", max_length=20_000)


@router.post("/agents/{agent_id}/overrides/raw", summary="Store an override as sent (audited)")
def add_override_raw(request: Request, who: Researcher, agent_id: AgentId,
                     body: OverrideRowBody) -> SafeJSONResponse:
    """What ``ControlStore.add_override`` stores, for the agent's owner or a supervisor,
    named as its actor; an override id stored already is not stored again."""
    a = _agent_or_404(request, agent_id)
    _may_write(who, a)
    if body.agent_id != agent_id or body.actor != who.name:
        raise UserInputError(
            f"an override posted here is for agent {agent_id}, sent by {who.name}",
            hint="set agent_id to the path's and actor to the token's name")
    _check_hlc(body.hlc, f"override {body.override_id}")
    if body.status != "pending" or body.result:
        raise UserInputError("an override is stored pending, without a result: the agent "
                             "records what became of it",
                             hint='send status "pending" and result ""')
    from .agents import _check

    ctl, lock = _writer(request)
    if any(o.override_id == body.override_id for o in ctl.overrides(agent_id)):
        return ok({"override_id": body.override_id, "added": False})  # a retry: not checked
    _check(request, a, body.action, decode_value(body.params))  # as POST .../overrides
    with lock:
        if any(o.override_id == body.override_id for o in ctl.overrides(agent_id)):
            return ok({"override_id": body.override_id, "added": False})
        o = Override(**{**body.model_dump(), "params": decode_value(body.params),
                        "status": OverrideStatus(body.status)})
        ctl.add_override(o)
    request.app.state.audit.record(who.name, f"override.{o.action}", f"agent:{agent_id}",
                                   o.reason, {"params": o.params, "override_id": o.override_id})
    return ok({"override_id": o.override_id, "added": True})


@router.get("/agents/{agent_id}/overrides/raw", summary="An agent's overrides as stored")
def list_overrides_raw(request: Request, who: Viewer, agent_id: AgentId,
                       status: OverrideStatus | None = None) -> SafeJSONResponse:
    _agent_or_404(request, agent_id)
    rows = control_store(request).overrides(agent_id, status)
    return ok({"overrides": [_override_json(o) for o in rows]})


@router.get("/overrides/raw", summary="One override by id, as stored (its agent included)")
def find_override_raw(request: Request, who: Viewer,
                      override_id: Annotated[str, Query(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
                      ) -> SafeJSONResponse:
    ctl = control_store(request)
    for a in ctl.list_agents():
        for o in ctl.overrides(a.agent_id):
            if o.override_id == override_id:
                return ok({"overrides": [_override_json(o)]})
    return ok({"overrides": []})


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["applied", "rejected"]
    result: str = Field(max_length=20_000)


@router.post("/agents/{agent_id}/overrides/{override_id}/resolve",
             summary="Record what became of an override")
def resolve_override(request: Request, who: Researcher, agent_id: AgentId,
                     override_id: OverrideId, body: ResolveBody) -> SafeJSONResponse:
    a = _agent_or_404(request, agent_id)
    _may_write(who, a)
    ctl, lock = _writer(request)
    with lock:
        o = next((o for o in ctl.overrides(agent_id) if o.override_id == override_id), None)
        if o is None:
            raise NotFoundError(f"agent {agent_id} has no override {override_id!r}",
                                hint=f"list them with GET /api/agents/{agent_id}/overrides")
        if o.status is not OverrideStatus.PENDING:
            if str(o.status) == body.status and o.result == body.result:
                return ok({"override_id": override_id, "status": body.status})  # a retry
            raise ConflictError(
                f"override {override_id} was resolved already ({o.status}: {o.result[:200]})",
                hint="an override's outcome is recorded once, by the agent that applied it")
        ctl.resolve_override(override_id, OverrideStatus(body.status), body.result)
    request.app.state.audit.record(
        who.name, f"override.{body.status}", f"agent:{agent_id}", body.result[:500],
        {"override_id": override_id, "action": o.action, "actor": o.actor})
    return ok({"override_id": override_id, "status": body.status})


# -- leases ---------------------------------------------------------------------------------
class ClaimBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: Key
    agent_id: str = Field(pattern=r"^[A-Za-z0-9]{4,64}$")
    trial_id: str = Field(max_length=128)
    hlc: str = Field(max_length=128)
    limit: tuple[Key, Annotated[int, Field(ge=0, le=2**62)]] | None = None


@router.post("/leases/claim", summary="Claim a config lease for an agent (atomic)")
def claim_lease(request: Request, who: Researcher, body: ClaimBody) -> SafeJSONResponse:
    """``holder``: null when the key is the agent's now (or was already), else the holder's
    trial id, or ``"project budget"`` when ``limit`` ``[prefix, n]`` leases exist."""
    from ..agents.overrides import PROJECT_BUDGET_KEY

    a = _agent_or_404(request, body.agent_id)
    _may_write(who, a)
    _own_project(a, body.key, "key")
    _check_hlc(body.hlc, f"the claim of {body.key}")
    budget_key = PROJECT_BUDGET_KEY + a.project
    if body.key == budget_key and not (body.trial_id.isdigit()
                                       and 0 < int(body.trial_id) <= 10**7):
        raise UserInputError(f"a project budget is a number of trials from 1 to 10,000,000, "
                             f"got {body.trial_id[:40]!r}",
                             hint="project_budget: {trials: N} in the objective")
    ctl, lock = _writer(request)
    with lock:
        # The project's budget, as declared (first declaration holds), bounds every claim of
        # a config, whatever limit the client sent: a client cannot claim past it.
        limit = None
        if body.key != budget_key:
            held = ctl.lease(budget_key)
            if held is not None and held[1].isdigit():
                limit = (f"{a.project}/", int(held[1]))
        holder = ctl.claim_lease(body.key, body.agent_id, body.trial_id, body.hlc, limit)
    return ok({"holder": holder})


def _own_project(a: AgentRow, key: str, what: str) -> None:
    """An agent claims leases of its own project only: configs (``<project>/...``) and the
    project's budget. Another project's keys would block that project's agents."""
    from ..agents.overrides import PROJECT_BUDGET_KEY

    if key.startswith(f"{a.project}/") or key == PROJECT_BUDGET_KEY + a.project:
        return
    raise PermissionDeniedError(
        f"agent {a.agent_id} of project {a.project!r} may not claim the lease {what} "
        f"{key[:100]!r}", hint=f"its leases are '{a.project}/<config>' and "
                               f"'{PROJECT_BUDGET_KEY}{a.project}'")


@router.get("/leases/count", summary="How many leases have keys starting with a prefix")
def count_leases(request: Request, who: Viewer,
                 prefix: Annotated[str, Query(max_length=1024)] = "") -> SafeJSONResponse:
    return ok({"count": control_store(request).count_leases(prefix)})


@router.get("/leases/one", summary="Who holds a lease")
def one_lease(request: Request, who: Viewer,
              key: Annotated[str, Query(min_length=1, max_length=1024)]) -> SafeJSONResponse:
    held = control_store(request).lease(key)
    return ok({"holder": None} if held is None else {"agent_id": held[0], "trial_id": held[1]})
