"""What an agent does when things go wrong (see :class:`~assay.agents.agent.Agent`).

- Restarted from its saved state: a trial that was running (or queued) when the agent died
  lost its Ray task, not its run. It is relaunched, resuming that run, within
  ``max_retries``; a stop it was asked for, or a spent budget, ends it instead.
- A cluster too small for even one trial (:func:`check_fit`): waited on if it may grow, the
  agent fails at once if it cannot.
- Its loop crashed (:func:`fail`): it ends FAILED with no trial left running.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import UserInputError
from ..policies import TrialStatus, as_space
from ..scheduler.budget import Budget
from ..store.control import AgentRow, AgentStatus, OverrideStatus
from .factory import make_searcher

if TYPE_CHECKING:
    from .agent import Agent, Trial

__all__ = ["check_fit", "end_unrelaunched", "fail", "lost", "relaunch_lost", "restore"]

log = logging.getLogger("assay.agents.agent")


def relaunch_lost(agent: Agent) -> int:
    """Relaunch the trials a restart lost, resuming their runs, while slots are free.

    They count against the concurrency while they wait. Each is a trial admitted before
    (counted in the trial budget once), continuing like a backend retry; but a spent
    wall-clock, CPU-hours or GPU-hours budget ends them stopped instead, since running
    them again would spend what is no longer there.
    """
    n = 0
    while agent._relaunch:
        spent = agent.ledger.launch_blocker(agent.resources, count_trials=False)
        if spent:
            tid = agent._relaunch[0]
            reason = f"lost when the agent restarted, and not relaunched: {spent}"
            agent._stop_trial(tid, reason)
            agent._decide(tid, "stop", reason, {"rule": "budget", "budget": spent,
                                                "relaunches": agent.trials[tid].relaunches})
            continue
        running = len(agent.active) - len(agent._relaunch)
        slots = agent.backend.capacity(agent.resources)
        free = min(agent.concurrency - running, slots)
        if free <= 0:
            if slots <= 0 and running == 0:
                agent._check_fit()
            break
        tid = agent._relaunch.pop(0)
        t = agent.trials[tid]
        t.relaunches += 1
        # Saved before the launch: a trial that takes its agent down with it is then
        # counted, and max_retries ends the cycle.
        agent._persist(force=True)
        spec = agent._spec(tid, t.config, resume=True)
        agent.backend.launch(spec)
        agent.ledger.record_launch(spec, agent=agent.agent_id)  # known: not counted again
        agent._decide(tid, "resume", f"relaunched after the agent restarted (attempt "
                      f"{t.relaunches + 1}); its run goes on from the first step it logs "
                      "again, which replaces the lost attempt's points from there",
                      {"relaunch": t.relaunches, "max_retries": agent.objective.max_retries,
                       "config": t.config, "resume_from_step": "auto"})
        agent._dirty = True
        n += 1
    return n


def lost(agent: Agent, tr: Trial) -> None:
    """A trial that was running (or queued) when the agent died: its Ray task died with
    the agent, its run did not. Queue it to be relaunched, resuming that run, unless it
    was relaunched ``max_retries`` times already."""
    cap = agent.objective.max_retries
    if tr.stop_requested:  # the agent asked it to stop; relaunching would undo that
        tr.status = TrialStatus.STOPPED
        tr.reason = tr.stop_requested
        agent.ledger.record_lost(tr.trial_id, finished=True)
        agent._end_run(tr.trial_id, "stopped", tr.reason)
        agent._decide(tr.trial_id, "stop", "asked to stop before the agent restarted; "
                      f"not relaunched ({tr.stop_requested})",
                      {"reason": tr.stop_requested, "relaunches": tr.relaunches})
        return
    if tr.relaunches >= cap:
        tr.status = TrialStatus.FAILED
        tr.reason = (f"lost when the agent restarted while it ran, {tr.relaunches + 1} "
                     f"time(s); not relaunched again (max_retries={cap})")
        agent.ledger.record_lost(tr.trial_id, finished=True)
        agent._end_run(tr.trial_id, "failed", tr.reason)
        agent._decide(tr.trial_id, "fail", tr.reason,
                      {"reason": tr.reason, "relaunches": tr.relaunches, "max_retries": cap})
        return
    tr.status = TrialStatus.PENDING
    # The metric source reports a resumed run's curve again from its first step.
    tr.curve = []
    agent.ledger.record_lost(tr.trial_id)
    agent._relaunch.append(tr.trial_id)


def check_fit(agent: Agent) -> None:
    """No slot is free and none of this agent's trials runs: the cluster is busy with
    other work (wait), or it is too small for even one trial (the backend's
    :meth:`~assay.scheduler.base.Backend.shortfall`). A cluster that cannot grow never
    will be big enough: the agent fails at once, with a decision saying what each trial
    asks for, what the cluster has and how to fix it, rather than wait forever. A cluster
    that may grow (an autoscaler) is waited on, with one ``wait`` decision saying why
    (again only if the shortfall changes); the budget's wall clock still ends the wait."""
    short = agent.backend.shortfall(agent.resources)
    if short is None:
        agent._waiting_for = ""
        return
    evidence = {"requested": dict(short.requested), "cluster": dict(short.total),
                "missing": short.missing, "hint": short.hint,
                "resources": dict(agent.objective.resources)}
    if short.may_grow:
        if agent._waiting_for != short.message:
            agent._waiting_for = short.message
            agent._decide("", "wait", f"waiting for the cluster to grow: {short.message}",
                         {**evidence, "may_grow": True})
        return
    why = f"no trial can run: {short.message}"
    _fail_lost(agent, why)  # lost in a restart; they cannot run here either
    agent.failure, agent.failure_hint = why, short.hint
    agent.status = AgentStatus.FAILED
    for cfg in agent.pinned:
        agent._not_launched(cfg, {}, "pinned", why)
    for cfg, w in agent._reeval:
        agent._not_launched(cfg, w, "reevaluate", why)
    agent.pinned, agent._reeval = [], []
    agent._decide("", "finish", why, {**evidence, "may_grow": False,
                                     "trials": len(agent.trials)})
    agent.close()


def fail(agent: Agent, why: str, hint: str = "") -> None:
    """End the agent FAILED (its loop crashed): no trial is left running. Trials waiting
    to be relaunched after a restart end failed; the backend is shut down (what still
    runs is killed, its run ended stopped); each gets a decision, then the agent a
    ``finish`` one with the reason. Safe to call on a half-broken agent."""
    agent.failure, agent.failure_hint = why, hint
    agent.status = AgentStatus.FAILED
    agent.close()
    reason = f"the agent failed: {why}"
    _fail_lost(agent, reason)
    active = [t.trial_id for t in agent.active]
    if active:
        try:
            agent.backend.shutdown()
            for ev in agent.backend.poll():
                agent._on_event(ev)
        except Exception:  # the trials are still recorded stopped below
            log.warning("could not shut the backend of %s down", agent.agent_id,
                        exc_info=True)
    for tid in active:
        t = agent.trials[tid]
        if t.status.is_active:  # the backend gave no last event: record the end ourselves
            t.status, t.reason = TrialStatus.STOPPED, reason
            t.changed()
            agent.ledger.record_lost(tid, finished=True)
        agent._end_run(tid, "stopped", reason)  # unfinished runs only
        agent._decide(tid, "stop", f"stopped: {reason}", {"rule": "agent failed",
                                                         "reason": why})
    b = agent.best
    agent._decide(b.trial_id if b else "", "finish", reason,
                 {"failure": why, "hint": hint, "best_config": b.config if b else None,
                  "best": b.final if b else None, "trials": len(agent.trials)})
    agent._dirty = True
    agent._flush_decisions()
    agent._persist(force=True)


def end_unrelaunched(agent: Agent, tid: str, status: TrialStatus, reason: str) -> None:
    """A trial a restart lost, still waiting to be relaunched, ends ``status`` without
    running again (the backend does not know it): its run is ended too."""
    agent._relaunch.remove(tid)
    t = agent.trials[tid]
    t.status, t.reason = status, reason
    t.changed()
    agent.ledger.record_lost(tid, finished=True)
    agent._end_run(tid, str(status), reason)


def _fail_lost(agent: Agent, reason: str) -> None:
    """The trials a restart lost, still waiting to be relaunched, end failed (each with a
    decision): the agent cannot run them."""
    for tid in list(agent._relaunch):
        end_unrelaunched(agent, tid, TrialStatus.FAILED, reason)
        agent._decide(tid, "fail", reason, {"reason": reason})


def restore(agent: Agent, row: AgentRow) -> None:
    """Load the agent's saved state (a restart): its trials (the active ones lost, to be
    relaunched), budget and space set by override, pins, searcher and ledger."""
    from .agent import Trial

    st = row.state
    agent.status = AgentStatus(row.status)
    if agent.status in (AgentStatus.FINISHED, AgentStatus.STOPPED):
        return
    _restore_overrides(agent, st)
    if st.get("ledger"):
        agent.ledger.load_state_dict(st["ledger"])
    for tid, t in st.get("trials", {}).items():
        tr = Trial(tid, dict(t["config"]), TrialStatus(t["status"]),
                   [tuple(p) for p in t.get("curve", [])], t.get("final"),
                   t.get("origin", "searcher"), t.get("reason", ""),
                   relaunches=int(t.get("relaunches", 0)),
                   stop_requested=str(t.get("stop_requested", "")))
        if tr.status.is_active:
            agent._lost(tr)
        agent.trials[tid] = tr
        if tr.status is TrialStatus.COMPLETED:  # as in the run: a stopped or failed
            agent._track_best(tr)  # trial's last value is not a result
    agent.pinned = list(st.get("pinned", []))
    agent.concurrency = int(st.get("concurrency", agent.concurrency))
    if st.get("searcher"):
        try:
            agent.searcher.load_state_dict(st["searcher"])
        except UserInputError:
            log.warning("searcher state of %s does not fit; starting it fresh", agent.agent_id)
    agent._seen_versions = dict(st.get("artifact_versions", {}))
    agent._reeval = [(dict(r["config"]), dict(r["why"])) for r in st.get("reevaluate", [])]

def _restore_overrides(agent: Agent, st: Mapping[str, Any]) -> None:
    """The budget and space people set by override, before the searcher state that was
    fitted on that space is loaded; and the overrides applied (their effects are in
    this state) whose outcome the store did not take."""
    for oid, (status, why) in (st.get("unresolved_overrides") or {}).items():
        try:
            agent._unresolved[str(oid)] = (OverrideStatus(status), str(why))
        except ValueError:
            log.warning("unknown override outcome %r of %s in the saved state of %s",
                        status, oid, agent.agent_id)
    try:
        if st.get("budget") is not None:
            spec = Budget.normalize(st["budget"])
            agent.budget = Budget.from_mapping(spec)
            agent._budget_spec = spec
            agent.ledger.budget = agent.budget
        if st.get("space"):
            space = as_space(st["space"])
            if space != agent.space:
                agent.space = space
                agent.searcher = make_searcher(agent.objective, space)
    except UserInputError as e:
        log.warning("the saved budget or space of %s does not load (%s); using the "
                    "objective's", agent.agent_id, e.message)
