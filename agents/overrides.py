"""What people and other agents change in a running agent: human overrides (pause, resume,
stop, stop a run, budget, concurrency, search space, pin a config), the project's shared
trial cap, and cascading re-evaluation when an artifact gets a new version.

Functions of an :class:`~.agent.Agent` (split from ``agent.py``, which stays the step loop);
each is called from one of its steps and works on its state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConflictError, NotFoundError, UserInputError
from ..policies import SearchSpace, TrialStatus
from ..scheduler.budget import Budget
from ..store.control import AgentRow, AgentStatus, ControlStore, Override, OverrideStatus
from .factory import make_searcher
from .hlc import HLC
from .objective import check_override

if TYPE_CHECKING:
    from .agent import Agent
    from .hlc import HybridLogicalClock

__all__ = [
    "OVERRIDE_POLL_S",
    "PROJECT_BUDGET_KEY",
    "apply_pending",
    "check_idempotency_key",
    "check_sendable",
    "declare_project_budget",
    "idempotent_override_id",
    "project_budget",
    "reevaluate",
    "replay",
    "send_override",
    "set_space",
    "stamp",
]

log = logging.getLogger(__name__)
OVERRIDE_POLL_S = 0.25
# The lease row that holds a project's shared trial cap (its trial id is the cap): every
# agent of the project enforces it, whether or not its own objective declares one.
PROJECT_BUDGET_KEY = "#project_budget/"


IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def check_idempotency_key(key: object) -> str:
    if not isinstance(key, str) or not IDEMPOTENCY_KEY.match(key):
        raise UserInputError(f"invalid idempotency key {key!r}",
                             hint="1-128 letters, digits and _ . : - (e.g. a uuid4's hex)")
    return key


def idempotent_override_id(actor: str, agent_id: str, key: str) -> str:
    """The override id an idempotency key stands for: one per sender, agent and key, so the
    same request sent again finds the first one (and another sender's key never does)."""
    return "oi" + hashlib.sha256(f"{actor}\0{agent_id}\0{key}".encode()).hexdigest()[:24]


def replay(control: ControlStore, agent_id: str, override_id: str, action: str,
           params: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """The answer for an override sent again with its idempotency key (its current status,
    ``replayed``), or None when the key is new.

    Raises:
        ConflictError: the key was used for a different override.
    """
    first = next((o for o in control.overrides(agent_id) if o.override_id == override_id),
                 None)
    if first is None:
        return None
    if first.action != action or first.params != dict(params):
        raise ConflictError(
            f"idempotency key {key!r} was used for another override of agent {agent_id} "
            f"({first.action} {first.params})", hint="use a new key for a new override")
    return {"override_id": override_id, "agent_id": agent_id, "action": action,
            "status": str(first.status), "result": first.result, "replayed": True}


def stamp(control: ControlStore, agent_id: str, clock: HybridLogicalClock) -> str:
    """The HLC of a new override for ``agent_id``: after every override already stored for
    it, so overrides apply in the order people sent them even when the senders' clocks
    disagree (a "resume" stamped by a lagging clock must not overtake the "pause" before)."""
    now = clock.now()
    for o in reversed(control.overrides(agent_id)):
        try:
            last = HLC.parse(o.hlc)
        except UserInputError:  # a malformed one stored by an older server: not the last
            continue
        if str(last) >= str(now):  # (the strings sort as the stored rows do)
            # After it, without pulling the shared clock (and every other agent's
            # overrides) along to a clock that ran ahead.
            return str(HLC(last.ms, last.counter + 1, clock.node))
        break
    return str(now)


def send_override(control: ControlStore, audit: Any, a: AgentRow, action: str,
                  params: Mapping[str, Any], actor: str, reason: str,
                  clock: HybridLogicalClock, *, override_id: str | None = None) -> Override:
    """Store an override for agent ``a`` (applied at its next step) and append it to the
    audit trail with who and why. Check it with :func:`check_sendable` first."""
    o = Override(a.agent_id, action, dict(params), actor, reason,
                 stamp(control, a.agent_id, clock), time.time())
    if override_id:
        o = dataclasses.replace(o, override_id=override_id)
    control.add_override(o)
    audit.record(actor, f"override.{action}", f"agent:{a.agent_id}", reason,
                 {"params": dict(params), "override_id": o.override_id})
    return o


_TERMINAL = ("finished", "failed", "stopped")


def check_sendable(a: AgentRow, action: str, params: Mapping[str, object], *,
                   again: str = "declare the objective again (POST /api/objectives) to go on",
                   control: ControlStore | None = None) -> dict[str, object]:
    """What the agent would reject, refused before an override is stored (by the API and
    the CLI alike): an agent that ended (finished, failed, stopped: a 409, nothing stored),
    then the same checks as the agent (:func:`~assay.agents.objective.check_override`)
    against its current budget and space, as its last saved state has them, for
    ``stop_run`` a trial it has and that still runs, and (given ``control``) for ``resume``
    an agent that is paused or has a pause pending. Returns the parsed params.

    Raises:
        ConflictError, NotFoundError, UserInputError: saying what is wrong; ``again`` is
            the hint for an agent that ended.
    """
    if str(a.status) in _TERMINAL:
        raise ConflictError(f"agent {a.agent_id} is {a.status}: overrides no longer apply",
                            hint=again)
    from ..policies.space import as_space

    try:
        space = as_space(a.state.get("space") or a.spec.get("space") or {})
    except UserInputError:
        space = None  # the agent checks the pin against its own space
    budget = a.state.get("budget") or a.spec.get("budget") or {}
    p = check_override(action, params, budget=budget, space=space)
    if action == "resume" and control is not None:
        _refuse_needless_resume(a, control)
    if action == "pin" and space is not None:
        _refuse_duplicate_pin(a, space, p["config"])
    if action == "stop_run":
        t = a.state.get("trials", {}).get(p["trial_id"])
        if t is None:
            raise NotFoundError(f"agent {a.agent_id} has no trial {p['trial_id']!r}",
                                hint=f"GET /api/agents/{a.agent_id} lists its trials")
        if t.get("status") not in ("pending", "running"):
            raise ConflictError(f"trial {p['trial_id']} is {t.get('status')}, not running",
                                hint="only a pending or running trial can be stopped")
    return p


def budget_text(b: Budget, launched: int) -> str:
    """An applied budget as people read it: ``budget now 40 trials, 2h wall clock``, and what
    a trial limit below the trials launched already means."""
    from ..scheduler.budget import format_duration

    parts = []
    if b.trials is not None:
        parts.append(f"{b.trials} trials")
    if b.wall_clock_s is not None:
        parts.append(f"{format_duration(b.wall_clock_s)} wall clock")
    for name, hours in (("CPU", b.cpu_hours), ("GPU", b.gpu_hours)):
        if hours is not None:
            parts.append(f"{hours:g} {name}-hours")
    text = "budget now " + (", ".join(parts) or "unlimited")
    if b.trials is not None and launched >= b.trials:
        text += (f" ({launched} launched already: no new trial starts; running ones go on)")
    return text


def _refuse_needless_resume(a: AgentRow, control: ControlStore) -> None:
    """Refuse a resume the agent would reject: one for an agent that is not paused and has
    no pause pending. A pending pause or resume decides (it applies first); else the saved
    status, unless an applied pause is newer than it (the status lags an applied override
    by up to a step). An agent that restarted from a state saved before it applied a resume
    is paused, and takes a new one."""
    last = None
    for o in control.overrides(a.agent_id):
        if o.action in ("pause", "resume") and o.status != OverrideStatus.REJECTED:
            last = o
    if last is not None and last.status == OverrideStatus.PENDING:
        paused = last.action == "pause"
    else:
        paused = str(a.status) == "paused" or (last is not None and last.action == "pause")
    if not paused:
        pending = last is not None and last.status == OverrideStatus.PENDING
        raise ConflictError(
            f"agent {a.agent_id} is not paused" + (" (a resume is pending already)" if pending
                                                   else f": it is {a.status}") +
            "; there is nothing to resume", hint="pause it first; a resume sent after a "
            "pause, even one still pending, is taken")


def _refuse_duplicate_pin(a: AgentRow, space: Any, config: Mapping[str, Any]) -> None:
    """A pin of a config the agent already ran, or already pinned, would be rejected at its
    next step (as :func:`_apply` does): refuse it when it is sent, from the saved state."""
    key = space.key(config)
    for tid, t in (a.state.get("trials") or {}).items():
        if isinstance(t, Mapping) and isinstance(t.get("config"), Mapping) and \
                space.key(t["config"]) == key:
            raise UserInputError(f"the pinned config duplicates this agent's trial {tid} "
                                 f"({t.get('status')})",
                                 hint="a config runs once per project; pin another one")
    if any(isinstance(q, Mapping) and space.key(q) == key for q in a.state.get("pinned") or ()):
        raise UserInputError("this config is pinned already and waits for a slot",
                             hint="pin another config, or wait for this one to run")


def apply_pending(agent: Agent) -> int:
    """Apply the overrides people sent since the last look; each is recorded as a decision
    with who and why, and resolved applied or rejected (never left pending)."""
    # Overrides come from people: checking 4 times a second is prompt enough, and keeps a
    # store query out of steps that follow each other quickly (simulations, bursts).
    now = time.monotonic()
    if now - agent._overrides_checked < OVERRIDE_POLL_S:
        return 0
    agent._overrides_checked = now
    pending = agent.control.overrides(agent.agent_id, OverrideStatus.PENDING)
    for gone in set(agent._unresolved) - {o.override_id for o in pending}:
        del agent._unresolved[gone]  # its outcome was stored after all (an answer lost)
        agent._dirty = True
    for o in pending:
        done = agent._unresolved.get(o.override_id)
        if done is not None:  # applied at an earlier step; only its outcome was not stored
            agent.control.resolve_override(o.override_id, *done)
            del agent._unresolved[o.override_id]
            agent._dirty = True
            continue
        try:
            agent.hlc.update(o.hlc)
            result = _apply(agent, o)
            status = OverrideStatus.APPLIED
        except UserInputError as e:
            result, status = f"rejected: {e.message}", OverrideStatus.REJECTED
        except Exception as e:  # one bad override must not end the agent
            log.exception("override %s (%s) could not be applied", o.override_id, o.action)
            result = f"rejected: it could not be applied ({type(e).__name__}: {e})"
            status = OverrideStatus.REJECTED
        _settle(agent, o, status, result)
    return len(pending)


def reject_pending(agent: Agent, why: str) -> None:
    """Resolve the overrides still pending when the agent ends (sent after its last look):
    rejected, saying why, instead of pending for good. One applied whose outcome the store
    did not take yet gets that outcome."""
    for o in agent.control.overrides(agent.agent_id, OverrideStatus.PENDING):
        done = agent._unresolved.pop(o.override_id, None)
        if done is not None:
            agent.control.resolve_override(o.override_id, *done)
        else:
            _settle(agent, o, OverrideStatus.REJECTED, f"rejected: {why}")


def _settle(agent: Agent, o: Override, status: OverrideStatus, result: str) -> None:
    """Record an override's outcome as a decision (who and why), then in the store."""
    tid = o.params.get("trial_id") if o.action == "stop_run" \
        and isinstance(o.params, Mapping) else ""
    agent._decide(tid if isinstance(tid, str) else "", "override",
                  f"{o.action} by {o.actor}: {result}",
                  {"action": o.action, "params": o.params, "actor": o.actor,
                   "reason": o.reason, "override_id": o.override_id, "status": str(status)})
    agent._dirty = True
    # Applied and decided first: a store that fails to take the outcome (a server away)
    # leaves it pending, and the next poll stores the outcome without applying it again.
    agent._unresolved[o.override_id] = (status, result)
    agent.control.resolve_override(o.override_id, status, result)
    del agent._unresolved[o.override_id]


def _apply(agent: Agent, o: Override) -> str:
    """Apply one override; a UserInputError rejects it with its message."""
    if agent.status is AgentStatus.STOPPED and o.action != "stop_run":
        raise UserInputError(f"agent is stopped; {o.action} no longer applies",
                             hint="a stopped agent launches nothing more")
    p = check_override(o.action, o.params, budget=agent._budget_spec, space=agent.space)
    if o.action == "pause":
        agent.status = AgentStatus.PAUSED
        return "paused: no new trials; running ones continue"
    if o.action == "resume":
        if agent.status is not AgentStatus.PAUSED:
            raise UserInputError(f"agent is {agent.status}, not paused")
        agent.status = AgentStatus.RUNNING
        return "resumed"
    if o.action == "stop":
        active = list(agent.active)
        why = f"agent stopped by {o.actor}: {o.reason}"
        for t in active:
            agent._stop_trial(t.trial_id, why)
            agent._decide(t.trial_id, "stop", why,
                          {"rule": "override", "actor": o.actor, "reason": o.reason})
        agent.status = AgentStatus.STOPPED
        agent._stopped_at = agent.backend.clock.now()
        agent.close()
        return f"stopped; {len(active)} running trial(s) asked to stop"
    if o.action == "stop_run":
        tid = p["trial_id"]
        if tid not in agent.trials or not agent.trials[tid].status.is_active:
            raise UserInputError(f"run {tid!r} is not a running trial of this agent")
        agent._stop_trial(tid, f"stopped by {o.actor}: {o.reason}")
        return f"stopping run {tid}"
    if o.action == "budget":
        agent._budget_spec = p["budget"]
        agent.budget = Budget.from_mapping(agent._budget_spec)
        agent.ledger.budget = agent.budget
        return budget_text(agent.budget, agent.ledger.trials_launched)
    if o.action == "concurrency":
        agent.concurrency = p["concurrency"]
        return f"concurrency now {agent.concurrency}"
    if o.action == "space":
        return agent._set_space(p["space"])
    cfg = p["config"]  # pin
    key = agent.space.key(cfg)
    for t in agent.trials.values():
        if agent.space.key(t.config) == key:
            raise UserInputError(f"the pinned config duplicates this agent's trial "
                                 f"{t.trial_id} ({t.status})",
                                 hint="a config runs once per project; pin another one")
    if any(agent.space.key(q) == key for q in agent.pinned):
        raise UserInputError("this config is pinned already and waits for a slot")
    agent.pinned.append(cfg)
    agent._searchable()
    return f"pinned {cfg}"


def set_space(agent: Agent, new: SearchSpace) -> str:
    """Search ``new`` from now on: a fresh searcher, the queue of suggestions from the old
    one dropped, and pinned configs outside ``new`` unpinned (each with a decision)."""
    agent.space = new
    agent.searcher = make_searcher(agent.objective, new)
    if agent._suggester is not None:
        agent._suggester.invalidate()
    agent._searchable()
    kept = [c for c in agent.pinned if new.contains(c)]
    for cfg in agent.pinned:
        if not new.contains(cfg):
            agent._decide("", "skip", "pinned config dropped: it is outside the new search "
                          "space", {"config": cfg, "space": new.to_dict()})
    dropped = len(agent.pinned) - len(kept)
    agent.pinned = kept
    return f"space now {new.to_dict()}" + (
        f"; {dropped} pinned config(s) outside it dropped" if dropped else "")


def declare_project_budget(agent: Agent) -> int | None:
    """Store this objective's ``project_budget`` as the project's cap, once for all its
    agents; a different cap declared before is a conflict (which one would hold?)."""
    pb = agent.objective.project_budget
    if not pb:
        return None
    n = int(pb["trials"])
    key = PROJECT_BUDGET_KEY + agent.objective.project
    held = agent.control.claim_lease(key, agent.agent_id, str(n), str(agent.hlc.now()))
    if held is not None and held != str(n):
        raise ConflictError(
            f"project {agent.objective.project!r} has a project_budget of {held} trials "
            f"already; this objective declares {n}",
            hint=f"declare project_budget: {{trials: {held}}}, or leave it out to share "
            "the project's")
    return n


def project_budget(agent: Agent) -> int | None:
    """The project's shared trial cap: this objective's, else one another agent of the
    project declared (read again each step: it may have been declared since)."""
    if agent._project_cap is not None:
        return agent._project_cap
    held = agent.control.lease(PROJECT_BUDGET_KEY + agent.objective.project)
    return int(held[1]) if held is not None and held[1].isdigit() else None


def reevaluate(agent: Agent) -> int:
    """When an artifact the objective names in ``reevaluate_on`` gets a new version, mark
    the trials that used an older one stale and queue re-runs of the top ones on the new
    version: they launch like any config (free slots, budget, leases, the project
    budget), ahead of the searcher's; one that does not fit in the budget is not queued,
    and a decision says so.

    A trial "uses" an artifact through a config value ``"<name>:v<n>"`` (the train
    function passes it to ``run.use_artifact``), which the re-run swaps for the new one.
    """
    if not agent.objective.reevaluate_on or agent.artifacts is None:
        return 0
    now = time.monotonic()
    if now - agent._reeval_checked < 2.0:
        return 0
    agent._reeval_checked = now
    queued = 0
    for name in agent.objective.reevaluate_on:
        latest = agent.artifacts.latest_version(name)
        if latest is None:
            continue
        seen = agent._seen_versions.setdefault(name, latest)
        if latest <= seen:
            continue
        agent._seen_versions[name] = latest
        new_ref = f"{name}:v{latest}"
        users = [(t, k) for t in agent.trials.values() for k, v in t.config.items()
                 if isinstance(v, str) and v.startswith(f"{name}:") and v != new_ref]
        stale = [t for t, _ in users if t.status is TrialStatus.COMPLETED]
        if stale:
            agent.artifacts.mark_stale([t.trial_id for t in stale],
                                       f"{name} has a new version v{latest}")
            for t in stale:
                agent._decide(t.trial_id, "stale", f"stale: {name} is now v{latest}",
                              {"artifact": name, "version": latest})
        sign = 1.0 if agent.objective.mode == "min" else -1.0
        keyed = {t.trial_id: k for t, k in users}
        top = sorted((t for t in stale if t.final is not None and t.final == t.final),
                     key=lambda t: sign * float(t.final or 0.0))[: agent.objective.reevaluate_top]
        for old in top:
            cfg = {**old.config, keyed[old.trial_id]: new_ref}
            why = {"method": "re-evaluation", "reevaluation": True,
                   "reevaluates": old.trial_id, "artifact": new_ref, "was": old.final}
            room = agent._room()
            if room is not None:
                agent._not_launched(cfg, why, "reevaluate", room)
                continue
            agent._reeval.append((cfg, why))
            queued += 1
    agent._dirty = agent._dirty or bool(queued)
    return 0  # queued: _launch starts them as slots, budget and leases allow
