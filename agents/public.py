"""Agents, decisions and overrides as people see them: the JSON the API serves and the rows
``assay.Api`` returns, from a server or a local data directory alike."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import UserInputError
from ..store.control import AgentRow, Decision, Override

__all__ = ["agent_public", "decision_public", "override_public"]


def agent_public(a: AgentRow, *, trials: bool = False) -> dict[str, Any]:
    """An agent's objective, status, trial counts by status, budget and best trial; with
    ``trials``, also its objective spec and every trial (id, status, config, final, ...)."""
    ts = a.state.get("trials", {})
    counts: dict[str, int] = {}
    for t in ts.values():
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    best_id = a.state.get("best")
    best = ts.get(best_id) if best_id else None
    out: dict[str, Any] = {
        "agent_id": a.agent_id, "objective": a.objective, "project": a.project,
        "status": str(a.status), "metric": a.spec.get("metric"), "mode": a.spec.get("mode"),
        "owner": a.spec.get("owner", ""), "updated_at": a.updated_at, "hlc": a.hlc,
        "counts": counts, "trials_total": len(ts),
        "budget": a.state.get("budget", a.spec.get("budget")),
        "budget_limits": _limits(a.state.get("budget", a.spec.get("budget"))),
        "concurrency": a.state.get("concurrency"),
        "best": None if best is None else {"trial_id": best_id, "value": best.get("final"),
                                           "config": best.get("config")},
    }
    if trials:
        out["spec"] = a.spec  # as declared
        # The space the agent searches now (a space override replaces the declared one).
        out["space"] = a.state.get("space") or a.spec.get("space")
        out["trials"] = [{"trial_id": k, **v} for k, v in ts.items()]
    return out


def _limits(budget: Any) -> dict[str, float | int] | None:
    """The budget as numbers (``wall_clock: "30m"`` as ``wall_clock_s: 1800.0``), only the
    limits it sets; None when it cannot be read (the agent refused it, or an old row)."""
    from ..scheduler.budget import Budget

    if not budget:
        return {}
    try:
        b = Budget.from_mapping(budget)
    except (UserInputError, TypeError):
        return None
    return {k: v for k, v in dataclasses.asdict(b).items() if v is not None}


def decision_public(d: Decision) -> dict[str, Any]:
    """One decision with its evidence (``explanation``)."""
    return {"decision_id": d.decision_id, "agent_id": d.agent_id, "project": d.project,
            "trial_id": d.trial_id, "kind": d.kind, "summary": d.summary,
            "explanation": d.explanation, "hlc": d.hlc, "time": d.time}


def override_public(o: Override) -> dict[str, Any]:
    """One override: what, who and why, and what became of it (pending, applied,
    rejected, with the agent's ``result``)."""
    return {"override_id": o.override_id, "action": o.action, "params": o.params,
            "actor": o.actor, "reason": o.reason, "status": str(o.status),
            "result": o.result, "hlc": o.hlc, "time": o.time}
