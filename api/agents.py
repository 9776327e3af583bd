"""Routes for objectives, agents, decisions and human overrides.

Reading is for viewers. Declaring an objective is for researchers (it starts an agent in a
background process, as ``assay run --detach`` does). Overriding an agent (pause, resume,
stop, budget, concurrency, space, pin, stop a run) is for supervisors, and for the
researcher who declared that objective. Every override names who and why: it is stored for
the agent (applied at its next step) and appended to the audit trail.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..agents.hlc import HybridLogicalClock
from ..agents.objective import Objective
from ..agents.overrides import check_sendable, idempotent_override_id, replay, send_override
from ..agents.public import agent_public, decision_public, override_public
from ..errors import ConflictError, NotFoundError, PermissionDeniedError
from ..scheduler.base import is_import_target
from ..store.control import AgentRow, AgentStatus, ControlStore, LanceControlStore
from ..store.ingest import IngestLock
from ..store.lance import LanceStore
from .auth import Principal, Researcher, Role, Viewer
from .http import ERROR_RESPONSES, SafeJSONResponse, StrictJSONRoute, ok

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["agents"], route_class=StrictJSONRoute,
                   responses=ERROR_RESPONSES)
AgentId = Annotated[str, Path(pattern=r"^[A-Za-z0-9]{4,64}$", description="an agent id")]
_hlc = HybridLogicalClock("api")


def control_store(request: Request) -> ControlStore:
    ctl = getattr(request.app.state, "control", None)
    if ctl is None:
        root = request.app.state.data_dir
        ctl = request.app.state.control = LanceControlStore(LanceStore(root), IngestLock(root))
    return ctl  # type: ignore[no-any-return]


def _agent_or_404(request: Request, agent_id: str, *, declared: bool = False) -> AgentRow:
    """The agent's saved row. With ``declared``, an agent declared here (POST
    /api/objectives) whose process has not saved its first row yet (10-25 s on a busy
    machine) is answered from its declaration, status ``starting``: a script that declares
    an objective and at once pauses it or reads it must not get a 404."""
    a = control_store(request).get_agent(agent_id)
    if a is None and declared:
        a = _declared(request, agent_id)
    if a is None:
        raise NotFoundError(f"no agent {agent_id!r}", hint="list agents with GET /api/agents")
    return a


def _declared(request: Request, agent_id: str) -> AgentRow | None:
    if not re.fullmatch(r"[A-Za-z0-9]{4,64}", agent_id):
        return None
    path = request.app.state.data_dir / "objectives" / f"{agent_id}.json"
    try:
        spec = json.loads(path.read_text())
        return AgentRow(agent_id, str(spec["name"]), str(spec["project"]), spec,
                        AgentStatus.RUNNING, {}, "", 0.0)
    except (OSError, ValueError, KeyError, TypeError):
        return None


@router.get("/agents", summary="Agents and their progress")
def list_agents(request: Request, who: Viewer,
                project: Annotated[str | None, Query(max_length=128)] = None) -> SafeJSONResponse:
    rows = control_store(request).list_agents(project)
    return ok({"agents": [agent_public(a) for a in rows]})


@router.get("/agents/{agent_id}", summary="One agent: objective, trials, best")
def get_agent(request: Request, who: Viewer, agent_id: AgentId) -> SafeJSONResponse:
    a = _agent_or_404(request, agent_id, declared=True)
    out = agent_public(a, trials=True)
    if not a.updated_at:  # declared, its process not started yet
        out["status"] = "starting"
    return ok(out)


@router.get("/decisions", summary="Decisions with their evidence (newest last)")
def list_decisions(request: Request, who: Viewer,
                   agent_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9]{4,64}$")] = None,
                   project: Annotated[str | None, Query(max_length=128)] = None,
                   trial_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9]{1,64}$")] = None,
                   kind: Annotated[str | None, Query(max_length=32)] = None,
                   limit: Annotated[int, Query(ge=1, le=5000)] = 200,
                   offset: Annotated[int | None, Query(
                       ge=0, le=2**62, description="from the oldest: the decisions from this "
                                                   "position on (default: the newest limit)")
                   ] = None) -> SafeJSONResponse:
    """Decisions oldest first, with ``total``: the newest ``limit``, or ``limit`` from
    ``offset`` (counted from the oldest; stable while agents append newer ones) to page
    through them all."""
    ds = control_store(request).decisions(agent_id=agent_id, project=project, trial_id=trial_id)
    if kind:
        ds = [d for d in ds if d.kind == kind]
    page = ds[-limit:] if offset is None else ds[offset:offset + limit]
    return ok({"decisions": [decision_public(d) for d in page], "total": len(ds)})


class ObjectiveBody(BaseModel):
    """An objective as in YAML (see ``assay.agents.objective``)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(max_length=128)
    project: str = Field(max_length=128)
    train: str | list[str]
    metric: str = Field(max_length=256)


@router.post("/objectives", summary="Declare an objective: starts an agent", status_code=202)
def create_objective(request: Request, who: Researcher, body: ObjectiveBody) -> SafeJSONResponse:
    spec = {**body.model_dump(), "owner": who.name}  # the declaring token owns the agent
    obj = Objective.from_dict(spec)  # every key checked; 400 with a hint on a bad one
    from ..agents.runner import check_resources

    # The agent runs on a local Ray started for it: a trial larger than this machine could
    # never start. 400 now, naming what it asks for and what there is.
    check_resources(obj, running=False)
    if not is_import_target(body.train) and not who.can(Role.SUPERVISOR):
        # A command line runs as the server's user, which can read every token's record and
        # the signing key: that is a supervisor's trust, not a researcher's.
        raise PermissionDeniedError(
            "a command-line train target runs any program on the server; researchers name a "
            "training function (\"package.module:function\") instead",
            hint="use a module:function target, or ask a supervisor to declare it")
    if obj.project_budget:
        from ..agents.overrides import PROJECT_BUDGET_KEY

        held = control_store(request).lease(PROJECT_BUDGET_KEY + obj.project)
        n = obj.project_budget["trials"]
        if held is not None and held[1] != str(n):  # its agent would refuse to start
            raise ConflictError(
                f"project {obj.project!r} has a project_budget of {held[1]} trials already; "
                f"this objective declares {n}",
                hint=f"declare project_budget: {{trials: {held[1]}}}, or leave it out to "
                "share the project's")
    root = request.app.state.data_dir
    agent_id = "ag" + secrets.token_hex(5)
    folder = root / "objectives"
    folder.mkdir(exist_ok=True)
    path = folder / f"{agent_id}.json"
    path.write_text(json.dumps(obj.to_dict()))
    (root / "logs").mkdir(exist_ok=True)
    with open(root / "logs" / f"agent-{agent_id}.log", "ab") as out:
        subprocess.Popen([sys.executable, "-m", "assay.cli", "run", str(path), "--dir", str(root),
                          "--agent-id", agent_id, "--new-agent"],
                         stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                         start_new_session=True, env=_agent_env())
    request.app.state.audit.record(who.name, "objective.create", f"agent:{agent_id}",
                                   f"declared {obj.name}", {"objective": obj.name,
                                                            "project": obj.project})
    return ok({"agent_id": agent_id, "objective": obj.name, "status": "starting"}, 202)


def _agent_env() -> dict[str, str]:
    """The environment of an agent this server starts: its own, less ``$ASSAY_SERVER`` and
    ``$ASSAY_TOKEN`` (an operator's, pointing back here): the agent and its trials keep
    everything in the server's data directory, where the server reads it, not through HTTP
    to themselves (which would also refuse the agent its own row)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ASSAY_SERVER", "ASSAY_TOKEN")}
    return {**env, "COLUMNS": "160"}


Action = Literal["pause", "resume", "stop", "stop_run", "budget", "concurrency", "space", "pin"]


# A reason of blanks says nothing in the audit trail: it is refused like an empty one.
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class OverrideBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Action
    reason: Reason = Field(description="why: goes into the audit trail and the agent's "
                                       "decisions")
    params: dict[str, Any] = Field(default_factory=dict)


def _may_override(who: Principal, a: AgentRow) -> None:
    if who.can(Role.SUPERVISOR):
        return
    if who.can(Role.RESEARCHER) and a.spec.get("owner") == who.name:
        return
    raise PermissionDeniedError(
        f"{who.name} ({who.role}) may not override agent {a.agent_id}",
        hint="supervisors may override any agent; researchers only the ones they declared")


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=128, pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
    description="a key of the caller's choosing: the same request sent again with it (a "
                "retry after a lost answer) stores nothing new and answers the first one's "
                "override and its status")]
_SEND_MU = threading.Lock()  # check-then-store of an idempotency key, as one


def _send(request: Request, who: Principal, a: AgentRow, action: str, params: dict[str, Any],
          reason: str, key: str | None = None) -> SafeJSONResponse:
    """Store the override (202), or with an ``Idempotency-Key`` this caller sent for this
    agent before, answer that first override (200) and store nothing."""
    oid = None if not key else idempotent_override_id(who.name, a.agent_id, key)
    with _SEND_MU:
        if oid is not None and key:
            again = replay(control_store(request), a.agent_id, oid, action, params, key)
            if again is not None:
                return ok(again)
        _check(request, a, action, params)  # 400/404/409, and nothing stored
        o = send_override(control_store(request), request.app.state.audit, a, action, params,
                          who.name, reason, _hlc, override_id=oid)
    out: dict[str, Any] = {"override_id": o.override_id, "agent_id": a.agent_id,
                           "action": action, "status": "pending"}
    # An agent saves its state at least once a minute while it runs: one silent for longer
    # may be dead, and the override waits until it (or an agent resumed under its id)
    # steps again. Said at once, so that a script does not wait on it blindly.
    from ..store.control import AGENT_HEARTBEAT_S as HEARTBEAT_S

    silent = time.time() - a.updated_at if a.updated_at else 0.0
    if str(a.status) in ("running", "paused") and silent > 3 * HEARTBEAT_S:
        out["warning"] = (f"agent {a.agent_id} has not reported for {silent:.0f} s (it saves "
                          f"its state every {HEARTBEAT_S:.0f} s while it runs): it may be "
                          "dead, and this override waits until it steps again")
    return ok(out, 202)


def _check(request: Request, a: AgentRow, action: str, params: dict[str, Any]) -> None:
    """What the agent would reject, refused before anything is stored (409 for an agent
    that ended): :func:`~assay.agents.overrides.check_sendable`."""
    check_sendable(a, action, params, control=control_store(request))


@router.post("/agents/{agent_id}/overrides", summary="Override an agent (applied at its next step)",
             status_code=202)
def override_agent(request: Request, who: Researcher, agent_id: AgentId,
                   body: OverrideBody, key: IdempotencyKey = None) -> SafeJSONResponse:
    a = _agent_or_404(request, agent_id, declared=True)  # one starting reads it at once
    _may_override(who, a)
    return _send(request, who, a, body.action, body.params, body.reason, key)


class StopRunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


@router.post("/runs/{run_id}/stop", summary="Stop a running trial through its agent",
             status_code=202)
def stop_run(request: Request, who: Researcher,
             run_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,64}$")],
             body: StopRunBody, key: IdempotencyKey = None) -> SafeJSONResponse:
    owners = [d.agent_id for d in control_store(request).decisions(trial_id=run_id)
              if d.kind == "launch"]
    if not owners:
        if request.app.state.store.get_run(run_id) is None:
            raise NotFoundError(f"no run {run_id!r}",
                                hint="check the id: GET /api/runs lists runs, GET "
                                     "/api/agents/{agent_id} an agent's trials")
        raise NotFoundError(f"run {run_id!r} was not launched by an agent",
                            hint="only agent trials can be stopped through the API")
    agents = list(dict.fromkeys(owners))
    if len(agents) > 1:  # stored before a server refused a second launch of a trial id
        raise ConflictError(
            f"run {run_id!r} was launched by several agents: {', '.join(agents)}",
            hint="stop it through the agent that runs it: POST "
                 "/api/agents/{agent_id}/overrides with action stop_run")
    a = _agent_or_404(request, agents[0])
    _may_override(who, a)
    return _send(request, who, a, "stop_run", {"trial_id": run_id}, body.reason, key)


@router.get("/agents/{agent_id}/overrides", summary="An agent's overrides and their outcome")
def list_overrides(request: Request, who: Viewer, agent_id: AgentId) -> SafeJSONResponse:
    _agent_or_404(request, agent_id, declared=True)
    rows = control_store(request).overrides(agent_id)
    return ok({"overrides": [override_public(o) for o in rows]})
