"""What an agent restarted from its saved state does with the trials it lost: a trial that was
running (or queued) when the agent died lost its Ray task, not its run. It is relaunched,
resuming that run, within ``max_retries``; a stop it was asked for, or a spent budget, ends
it instead (see :class:`~assay.agents.agent.Agent`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..policies import TrialStatus

if TYPE_CHECKING:
    from .agent import Agent, Trial

__all__ = ["lost", "relaunch_lost"]


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
        agent._decide(tid, "resume", "the agent restarted while it ran; relaunched, "
                      "resuming its run from its first step logged again (0 from the top, "
                      "k from a checkpoint: the lost attempt's points from there on are "
                      "superseded)",
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
