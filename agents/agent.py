"""The controller agent: one objective, one ``step()`` loop, every decision explained.

``Agent.step()`` (Ray Tune's controller idea: one iteration per call, so tests drive it):

1. poll the backend for trial events and read new metric points;
2. apply pending human overrides (pause, resume, stop, budget, concurrency, space, pin,
   stop a run), each recorded with who and why;
3. ask the stoppers which running trials to stop, with a reason each; stop them;
4. while capacity and budget remain, take configs the searcher prepared *ahead of need*
   (a background thread refills the queue, so a slow GP fit never leaves a slot idle: if
   the queue is empty a random config fills the slot, and says so), claim a lease on each
   config so no other agent runs it, record why it was chosen, launch it;
5. persist the agent's state, so a restarted agent resumes without repeating a trial.

A restarted agent (its Ray actor died and came back) restores that state. The trials it was
running died with it (Ray ends the tasks of a dead owner), but their runs are durable: each
is relaunched with ``TrialSpec(resume=True)``, its same id and config, ahead of any new
config and within the concurrency, and continues its run, rewound to step 0: the target
starts again from the top, so the lost attempt's points are superseded and the stoppers see
only the new attempt's curve (so do they after a backend retry). A trial lost this way more
than ``max_retries`` times (the objective's setting for dead workers) is failed instead, so a
trial that kills its agent cannot loop forever. A relaunch is not a new trial for the budget.

Policies never see Ray or the store: the agent turns trials into ``TrialResult`` records.
"""

from __future__ import annotations

import logging
import math
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ServerUnreachableError
from ..policies import Searcher, SearchSpace, Suggestion, TrialResult, TrialStatus, as_space
from ..scheduler.base import Backend, EventKind, MetricSource, Resources, TrialEvent, TrialSpec
from ..scheduler.budget import Budget, BudgetLedger, parse_duration
from ..store.control import (
    AGENT_HEARTBEAT_S,
    AgentRow,
    AgentStatus,
    ControlStore,
    Decision,
)
from . import overrides, recovery
from .factory import make_searcher, make_stopper, refit_every
from .hlc import HybridLogicalClock
from .objective import Objective, resolve_train
from .refit import PredictorRefitter, find_learned
from .suggester import Suggester as _Suggester
from .suggester import error_text as _error_text

__all__ = ["Agent", "ArtifactHooks", "Trial"]

log = logging.getLogger(__name__)
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
HEARTBEAT_S = AGENT_HEARTBEAT_S
MISSING_METRIC_TRIALS = 3
FAILED_TRIALS = 3  # failed before any completed: the agent ends (see _all_failing)
"""Trials completed without the objective's metric (and none with it) that end the agent."""
# A stopped agent waits this long past its trials' stop grace for their last events, then
# shuts its backend down (killing what is left) and records them stopped.
STOP_WAIT_S = 60.0


class ArtifactHooks(Protocol):
    """What re-evaluation needs from the graph (the runner passes the store's; tests a fake)."""

    def latest_version(self, name: str) -> int | None: ...

    def mark_stale(self, run_ids: list[str], reason: str) -> None: ...

    def link(self, old_run: str, new_run: str) -> None: ...


@dataclass
class Trial:
    """The agent's view of one trial."""

    trial_id: str
    config: dict[str, Any]
    status: TrialStatus = TrialStatus.PENDING
    curve: list[tuple[int, float]] = field(default_factory=list)
    final: float | None = None
    origin: str = "searcher"
    reason: str = ""
    attempt: int = 1
    relaunches: int = 0  # times a restarted agent relaunched it (resuming its run)
    stop_requested: str = ""  # why the agent asked the backend to stop it (not yet heard)
    _result: TrialResult | None = field(default=None, repr=False)

    def result(self) -> TrialResult:
        """The policies' view, rebuilt only after a change (histories are read every step)."""
        if self._result is None:
            self._result = TrialResult(self.trial_id, self.config, self.status, self.curve,
                                       self.final)
        return self._result

    def changed(self) -> None:
        self._result = None

    def to_state(self) -> dict[str, Any]:
        # The full curve lives in the store; the state keeps the tail for display.
        return {"config": self.config, "status": str(self.status), "final": self.final,
                "origin": self.origin, "reason": self.reason, "curve": self.curve[-20:],
                "relaunches": self.relaunches, "stop_requested": self.stop_requested}


class Agent:
    """Runs one objective on a backend. Create it, then call :meth:`step` (or :meth:`run`).

    Args:
        objective: What to optimise, over which space, with which budget.
        backend: Runs the trials (``RayBackend``, ``SimBackend``).
        metrics: Where curves come from (``StoreMetricSource``, or the ``SimBackend``).
        control: Where state, decisions and overrides live (the experiment graph).
        agent_id: Resume this agent (its persisted state) instead of starting a new one.
        prior: Finished trials of other agents to warm-start the searcher (not budgeted);
            any of this agent's own trials among them are dropped (a resumed agent's).
        ahead: Prepare suggestions in a background thread (False: inline, deterministic).
        artifacts: Access to artifact versions, for cascading re-evaluation.
    """

    def __init__(self, objective: Objective, backend: Backend, metrics: MetricSource,
                 control: ControlStore, *, agent_id: str | None = None,
                 prior: list[TrialResult] | None = None, ahead: bool = True,
                 searcher: Searcher | None = None,
                 artifacts: ArtifactHooks | None = None) -> None:
        self.objective = objective
        self.backend = backend
        self.metrics = metrics
        self.control = control
        self.agent_id = agent_id or "ag" + "".join(secrets.choice(_ALNUM) for _ in range(10))
        self.hlc = HybridLogicalClock(self.agent_id)
        self.space: SearchSpace = as_space(dict(objective.space))
        self.searcher = searcher or make_searcher(objective, self.space)
        self.stopper = make_stopper(objective)
        learned, every = find_learned(self.stopper), refit_every(objective)
        self._refitter = (PredictorRefitter(learned, objective.mode, every)
                          if learned is not None and every else None)
        self._budget_spec = Budget.normalize(objective.budget)
        self.budget = Budget.from_mapping(self._budget_spec)
        self.ledger = BudgetLedger(self.budget, backend.clock)
        self.concurrency = objective.concurrency
        self.resources = Resources(**dict(objective.resources))
        self.target = resolve_train(objective.train)
        self.trials: dict[str, Trial] = {}
        self.prior = list(prior or [])
        self.pinned: list[dict[str, Any]] = []
        self._status = AgentStatus.RUNNING
        self.failure = ""  # why the agent failed, when it did (status FAILED) ...
        self.failure_hint = ""  # ... and what to do about it
        self._waiting_for = ""  # the shortfall a growing cluster is waited on for, if any
        self.best: Trial | None = None
        self._dirty = True
        self._pending_decisions: list[Decision] = []
        self._overrides_checked = -1e9
        self._project_spent = False
        self._foreign: dict[str, TrialResult] = {}  # configs other agents hold leases on
        self._no_more = False
        self._searcher_errors: set[str] = set()  # searcher failures already recorded
        self._skips = 0  # lease collisions since the last launch
        self._persisted = 0.0
        self.artifacts = artifacts
        self._reeval_checked = -1e9
        self._seen_versions: dict[str, int] = {}
        self._relaunch: list[str] = []  # trials lost in a restart, waiting to be relaunched
        # Lease claims a server did not answer: the trial id each was sent with, and the
        # searcher's configs they were for (tried again first).
        self._unanswered: dict[str, str] = {}
        self._retry: list[tuple[dict[str, Any], dict[str, Any], str]] = []
        # Overrides applied whose outcome the server did not take: resolved again, not
        # applied twice. Kept in the state, with the effects they had, so that an agent
        # restarted meanwhile does not apply them again either.
        self._unresolved: dict[str, tuple[Any, str]] = {}
        # Completed trials that never logged the objective's metric, and what they logged.
        self._n_without_metric = 0
        self._n_failed = 0  # trials failed while none ran to an end (completed or stopped)
        self._any_ran = False
        self._last_failure: tuple[str, str] = ("", "")
        self._without_metric: set[str] = set()
        # Re-runs on a new artifact version, waiting for a slot like any launch:
        # (config, why) with why["reevaluates"] naming the trial re-run.
        self._reeval: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self._stopped_at: float | None = None  # when a stop override landed (backend clock)
        self._mu = threading.RLock()  # the searcher thread reads trials while step() runs
        self._project_cap = overrides.declare_project_budget(self)
        existing = control.get_agent(self.agent_id) if agent_id else None
        if existing is not None:
            self._restore(existing)
        # Warm-start evidence is other agents' finished runs: a resumed agent (``assay run
        # --agent-id``, a restarted Ray actor) is handed every completed run of the project,
        # its own trials among them, which its history already holds.
        self.prior = [p for p in self.prior if p.trial_id not in self.trials]
        self._suggester = _Suggester(self) if ahead else None
        if self._suggester is not None:
            self._suggester.start()
            self._suggester.want.set()
        self._flush_decisions()
        self._persist(force=True)

    # -- the loop ----------------------------------------------------------------------------
    def step(self) -> dict[str, Any]:
        """One iteration of the decision loop; returns what it did (counts)."""
        did = {"events": 0, "points": 0, "overrides": 0, "stopped": 0, "launched": 0}
        events = self.backend.poll()
        for ev in events:
            self._on_event(ev)
        did["events"] = len(events)
        if self.status in (AgentStatus.RUNNING, AgentStatus.PAUSED) and (
                (self._n_without_metric >= MISSING_METRIC_TRIALS and self.best is None)
                or (self._n_failed >= FAILED_TRIALS and not self._any_ran)):
            if self._n_failed >= FAILED_TRIALS and not self._any_ran:
                self._all_failing()
            else:
                self._missing_metric()
            self._flush_decisions()
            self._persist()
            return did
        self._refit_predictor()
        did["points"] = self._read_points()
        try:
            did["overrides"] = self._apply_overrides()
        except ServerUnreachableError:  # the server keeping them is away: the next step
            log.warning("could not read overrides; retrying at the next step", exc_info=True)
        if self.status is AgentStatus.RUNNING:
            did["stopped"] = self._stop_hopeless()
            did["launched"] = self._reevaluate() + self._launch()
        elif self.status is AgentStatus.PAUSED:  # no new trials; running ones continue,
            did["launched"] = self._relaunch_lost()  # those a restart lost included
        elif self.status is AgentStatus.STOPPED:
            self._wind_down()
        self._maybe_finish()
        self._flush_decisions()
        self._persist()
        return did

    @property
    def status(self) -> AgentStatus:
        """Running, paused, stopped, finished or failed. Every change is saved at the end of
        the step that made it (it marks the state dirty), so the graph, ``assay agents`` and
        the API never show a finished agent as running."""
        return self._status

    @status.setter
    def status(self, value: AgentStatus) -> None:
        if value is not self._status:
            self._status = value
            self._dirty = True

    @property
    def live(self) -> bool:
        """Whether :meth:`run` still has work: running or paused, or stopped while trials it
        asked to stop have not ended yet (their last events are still to be recorded)."""
        return self.status in (AgentStatus.RUNNING, AgentStatus.PAUSED) or (
            self.status is AgentStatus.STOPPED and bool(self.active))

    def run(self, poll_interval: float = 1.0, max_steps: int | None = None) -> Trial | None:
        """Step until the objective is finished, or stopped and its trials ended; returns
        the best trial."""
        n = 0
        while self.live:
            self.step()
            n += 1
            if max_steps is not None and n >= max_steps:
                break
            self.backend.clock.sleep(poll_interval)
        self._flush_decisions()  # a batch a failed write kept back gets one more try
        self._persist(force=True)  # the loop's last state (a final status) is always saved
        return self.best

    def close(self) -> None:
        if self._suggester is not None:
            self._suggester.closed = True
            self._suggester.want.set()

    @property
    def active(self) -> list[Trial]:
        return [t for t in self.trials.values() if t.status.is_active]

    # -- 1. events and curves ------------------------------------------------------------------
    def _on_event(self, ev: TrialEvent) -> None:
        t = self.trials.get(ev.trial_id)
        if t is None:
            return
        self.ledger.record(ev, project=self.objective.project, agent=self.agent_id)
        self._dirty = True
        t.changed()
        if ev.kind is EventKind.STARTED:
            t.status = TrialStatus.RUNNING
            t.attempt = ev.attempt
            return
        if ev.kind is EventKind.RETRIED:
            t.attempt = ev.attempt
            self._decide(t.trial_id, "retry", f"retrying: {ev.reason}",
                         {"attempt": ev.attempt, "reason": ev.reason})
            return
        final = ev.result.get(self.objective.metric) if ev.result else None
        if final is None and t.curve:
            final = t.curve[-1][1]
        t.final = final
        t.reason = ev.reason
        if ev.kind is EventKind.COMPLETED:
            if final is None and ev.result:  # it logged metrics, never the objective's
                self._without_metric.update(str(k) for k in ev.result)
                self._n_without_metric += 1
            t.status = TrialStatus.COMPLETED
            self._any_ran = True
            self._decide(t.trial_id, "complete", f"completed with {self.objective.metric}={final}",
                         {"final": final, "usage_s": ev.usage.wall_s})
            self._track_best(t)
        elif ev.kind is EventKind.STOPPED:  # a stopper judged its curve: the trial works
            t.status = TrialStatus.STOPPED
            self._any_ran = True
        else:
            t.status = TrialStatus.FAILED
            self._n_failed += 1
            self._last_failure = (ev.reason, ev.error)
            self._decide(t.trial_id, "fail", f"failed: {ev.reason}",
                         {"reason": ev.reason, "error": ev.error[-2000:]})

    def _track_best(self, t: Trial) -> None:
        if t.final is None or (isinstance(t.final, float) and math.isnan(t.final)):
            return
        sign = 1.0 if self.objective.mode == "min" else -1.0
        if self.best is None or self.best.final is None or sign * t.final < sign * self.best.final:
            self.best = t

    def _read_points(self) -> int:
        ids = [t.trial_id for t in self.trials.values()
               if t.status is TrialStatus.RUNNING or t.status is TrialStatus.PENDING]
        if not ids:
            return 0
        n = 0
        got = self.metrics.new_points(ids)
        for tid in self.metrics.replaced():
            # Its run was rewound (a retried or relaunched attempt restarted it): what the
            # stoppers saw of the attempt before is superseded; the answer holds the curve.
            t = self.trials.get(tid)
            if t is not None and t.curve:
                t.curve = []
                t.changed()
        for tid, by_key in got.items():
            pts = by_key.get(self.objective.metric)
            if pts:
                self.trials[tid].curve.extend((int(s), float(v)) for s, v in pts)
                self.trials[tid].changed()
                n += len(pts)
        return n  # curves are in the store: new points alone do not need a state write

    # -- 2. overrides ----------------------------------------------------------------------------
    def _apply_overrides(self) -> int:
        return overrides.apply_pending(self)

    def _set_space(self, new: SearchSpace) -> str:
        return overrides.set_space(self, new)

    def _searchable(self) -> None:
        """Something new to launch (a pin, a new space): forget that the search ran dry."""
        self._no_more, self._skips = False, 0
        self._foreign.clear()

    def _stop_trial(self, tid: str, reason: str) -> None:
        """Ask the backend to stop a trial; one still waiting to be relaunched after a
        restart is never relaunched (the backend does not know it), and ends stopped now."""
        if tid not in self._relaunch:
            self._request_stop(tid, reason)
            return
        recovery.end_unrelaunched(self, tid, TrialStatus.STOPPED, reason)
        self._dirty = True

    def _end_run(self, tid: str, status: str, reason: str) -> None:
        """Finish the run of a lost trial the agent ends without relaunching it."""
        try:
            self.backend.end_unlaunched(self.objective.project, tid, status, reason)
        except Exception:  # the agent's record stands; `assay sync` can mend the run
            log.warning("could not finish the run of trial %s", tid, exc_info=True)

    def _request_stop(self, tid: str, reason: str) -> None:
        """Ask the backend to stop a trial, and remember it in the persisted state: an agent
        that restarts before the stop lands ends the trial stopped instead of relaunching it."""
        self.backend.stop(tid, reason)
        t = self.trials[tid]
        if not t.stop_requested:
            t.stop_requested = reason
            self._dirty = True

    # -- 3. stops --------------------------------------------------------------------------------
    def _refit_predictor(self) -> None:
        """The learned stopper retrains on this sweep's finished curves as trials finish
        (in a thread; a finished refit is swapped in here, between two stop decisions)."""
        if self._refitter is None:
            return
        finished = [t.result() for t in self.trials.values()
                    if t.status.is_finished and len(t.curve) >= 2]
        done = self._refitter.poll(finished)
        if done is not None:
            self._decide("", "retrain", f"failure predictor refitted on {done.trials} finished "
                         f"trials in {done.seconds:.1f} s", done.evidence())

    def _stop_hopeless(self) -> int:
        if self.stopper is None:
            return 0
        # A trial asked to stop is winding down (its grace period): asking again each step
        # would only repeat the decision.
        running = [t.trial_id for t in self.trials.values() if t.status is TrialStatus.RUNNING
                   and t.curve and not t.stop_requested]
        if not running:
            return 0
        with self._mu:
            history = self._history()
        reasons = self.stopper.should_stop(history, running)
        for tid, r in reasons.items():
            self._request_stop(tid, f"{r.rule}: {r.message}")
            self._decide(tid, "stop", f"{r.rule}: {r.message}", r.to_dict())
        return len(reasons)

    # -- 4. launches -----------------------------------------------------------------------------
    def _history(self) -> list[TrialResult]:
        # Each trial once: the warm-start evidence never repeats this agent's own trials
        # (filtered in __init__; a trial launched since then has a fresh id).
        return (self.prior + list(self._foreign.values())
                + [t.result() for t in self.trials.values()])

    def _suggest(self, n: int) -> list[Suggestion]:
        """Ask the searcher, with queued-but-unlaunched suggestions as pending trials (so
        a batch asked ahead of need never proposes what is already waiting)."""
        sg = self._suggester
        with self._mu:
            history = self._history()
            queued: list[Suggestion] = []
            if sg is not None:
                with sg.mu:
                    queued = list(sg.ready) + ([sg.inflight] if sg.inflight else [])
        history += [TrialResult(f"queued{i}", dict(q.config), TrialStatus.PENDING)
                    for i, q in enumerate(queued)]
        return self.searcher.suggest(history, n)

    def _next_config(self) -> tuple[dict[str, Any], dict[str, Any], str] | None:
        while self._retry:  # its lease claim went unanswered
            cfg, why, origin = self._retry.pop(0)
            if self.space.contains(cfg):  # (a space changed meanwhile drops it)
                return cfg, why, origin
        if self.pinned:
            return self.pinned.pop(0), {"method": "pinned by a person"}, "pinned"
        if self._reeval:
            cfg, why = self._reeval.pop(0)
            return cfg, why, "reevaluate"
        fill_why = "the searcher was still fitting; a free slot never waits"
        sg = self._suggester
        if sg is not None:
            s = sg.take()
            while s is not None and not self.space.contains(s.config):
                s = sg.take()  # a stale one
            if s is None and sg.error:  # its last answer (it may be asked again already)
                self._searcher_failed(sg.error, sg.error_trace)
                fill_why = f"the searcher failed: {sg.error}"
            elif s is None and not sg.busy:
                fill_why = ("the searcher had no suggestion ready yet (it is asked again); a "
                            "free slot never waits")
                if sg.exhausted:
                    return None  # it proposed fewer than asked: nothing left to propose
        else:
            try:
                got = self._suggest(1)
            except Exception as e:  # recorded; the slot is filled at random
                log.exception("searcher failed; the slot falls back to a random config")
                self._searcher_failed(_error_text(e), traceback.format_exc())
                fill_why = f"the searcher failed: {_error_text(e)}"
                got = None
            if got is not None and not got:
                return None  # fewer than asked: the space is exhausted
            s = got[0] if got and self.space.contains(got[0].config) else None
            if got and s is None:
                fill_why = "the searcher proposed a config outside the current space"
        if s is None:
            from ..policies import RandomSearcher

            fill = RandomSearcher(self.space, mode=self.objective.mode,
                                  seed=len(self.trials) + 7919 * self.objective.seed)
            got = fill.suggest(self._history(), 1)
            if not got:
                return None
            return dict(got[0].config), {"method": "random fill", "why": fill_why}, "fill"
        return dict(s.config), dict(s.explanation), "searcher"

    def _searcher_failed(self, error: str, trace: str) -> None:
        """Record that the searcher raised (once per distinct error): the launches that
        fill its slots at random say so too."""
        if error in self._searcher_errors:
            return
        self._searcher_errors.add(error)
        name = self.objective.searcher_spec["name"]
        self._decide("", "fail", f"searcher {name} failed: {error}; free slots are filled "
                     "with random configs until it answers again",
                     {"searcher": name, "error": error, "traceback": trace[-2000:]})

    def _launch(self) -> int:
        sg = self._suggester
        if sg is not None and sg.error:  # recorded when it happens, not at the next fill
            self._searcher_failed(sg.error, sg.error_trace)
        launched = self._relaunch_lost()
        if self._relaunch:
            return launched  # trials lost in a restart go first: no new config before them
        cap: int | None = None
        cap_checked = False  # read once per step, and only when a config is about to launch
        for _ in range(64):
            slots = self.backend.capacity(self.resources)
            free = min(self.concurrency - len(self.active), slots)
            if free <= 0:
                if slots <= 0 and not self.active and not self.ledger.launch_blocker(
                        self.resources):
                    self._check_fit()
                break
            blocker = self.ledger.launch_blocker(self.resources)
            if blocker:
                break
            nxt = self._next_config()
            if nxt is None:
                self._no_more = True  # the searcher has nothing left to propose
                break
            config, why, origin = nxt
            prefix = f"{self.objective.project}/"
            if not cap_checked:
                cap, cap_checked = overrides.project_budget(self), True
            lease = prefix + self.space.key(config)
            # A claim whose answer was lost may have been stored: claimed again with the
            # same trial id it is ours (a new id would find it held, by no running trial).
            tid = self._unanswered.pop(lease, None) or "".join(
                secrets.choice(_ALNUM) for _ in range(10))
            try:
                holder = self.control.claim_lease(lease, self.agent_id, tid,
                                                  str(self.hlc.now()),
                                                  limit=(prefix, cap) if cap else None)
            except ServerUnreachableError:  # a server keeping the leases is away: next step
                log.warning("could not claim a lease for a %s config; retrying at the next "
                            "step", origin, exc_info=True)
                self._unanswered[lease] = tid
                if origin == "pinned":
                    self.pinned.insert(0, config)
                elif origin == "reevaluate":
                    self._reeval.insert(0, (config, why))
                else:  # the searcher's: tried first at the next step, not lost
                    self._retry.append((config, why, origin))
                break
            if holder == "project budget":
                self._project_spent = True
                if origin in ("pinned", "reevaluate"):
                    self._not_launched(config, why, origin, "the project budget is spent")
                break
            if holder is not None:
                self._on_taken(holder, config, why, origin, lease)
                if origin in ("pinned", "reevaluate"):
                    continue  # a person's or a re-evaluation's choice: not the search running dry
                self._skips += 1
                if self._skips > 4 * self.concurrency + 16:
                    self._no_more = True  # every config proposed is taken: the space is done
                    break
                continue
            self._skips = 0
            self._start(tid, config, why, origin)
            if origin == "reevaluate" and self.artifacts is not None:
                self.artifacts.link(str(why["reevaluates"]), tid)
            launched += 1
        return launched

    def _on_taken(self, holder: str, config: dict[str, Any], why: dict[str, Any], origin: str,
                  lease: str) -> None:
        """A config whose lease is held: by one of this agent's own trials (a duplicate), or
        by another agent's (shown to the searcher as pending, so it moves on)."""
        evidence = {"config": config, "lease": lease, "origin": origin}
        if holder in self.trials:
            if origin in ("pinned", "reevaluate"):
                self._not_launched(config, why, origin,
                                   f"it duplicates this agent's own trial {holder}")
            return  # the searcher knows its own trials: nothing to tell it
        if origin in ("pinned", "reevaluate"):
            self._not_launched(config, why, origin,
                               f"another agent runs or ran it (its trial {holder})")
        if holder not in self._foreign:
            self._decide(holder, "skip", "config already run or running elsewhere", evidence)
            self._foreign[holder] = TrialResult(f"lease{holder}", config, TrialStatus.PENDING)

    def _not_launched(self, config: dict[str, Any], why: dict[str, Any], origin: str,
                      reason: str) -> None:
        """Record that a pinned config or a re-run will not be launched, and why."""
        if origin == "reevaluate":
            old = str(why.get("reevaluates", ""))
            self._decide(old, "skip", f"re-evaluation of {old} on {why.get('artifact')} not "
                         f"launched: {reason}", {**why, "config": config, "reason": reason})
        else:
            self._decide("", "skip", f"pinned config not launched: {reason}",
                         {"config": config, "reason": reason})

    def _spec(self, tid: str, config: dict[str, Any], *, resume: bool = False) -> TrialSpec:
        limit = self.objective.trial_timeout
        return TrialSpec(trial_id=tid, project=self.objective.project, config=config,
                         target=self.target, resources=self.resources,
                         max_retries=self.objective.max_retries,
                         stop_grace_s=self.objective.stop_grace, resume=resume,
                         report_timeout_s=None if limit is None else parse_duration(
                             limit, what="trial_timeout"))

    def _start(self, tid: str, config: dict[str, Any], why: dict[str, Any], origin: str) -> None:
        spec = self._spec(tid, config)
        with self._mu:
            self.trials[tid] = Trial(tid, config, origin=origin)
        self.backend.launch(spec)
        self.ledger.record_launch(spec, agent=self.agent_id)
        self._dirty = True  # a restarted agent must know the trial, to relaunch it
        self._decide(tid, "launch", f"launch ({why.get('method', origin)})",
                     {**why, "config": config})

    def _relaunch_lost(self) -> int:
        return recovery.relaunch_lost(self)

    def _check_fit(self) -> None:
        recovery.check_fit(self)

    # -- cascading re-evaluation (agents/overrides.py) ---------------------------------------
    def _reevaluate(self) -> int:
        return overrides.reevaluate(self)

    def _room(self) -> str | None:
        """Why one more queued launch would not fit in the budget, or None if it would."""
        blocker = self.ledger.launch_blocker(self.resources)
        if blocker:
            return blocker
        rem = self.ledger.remaining().trials
        if rem is not None and rem <= len(self._reeval) + len(self.pinned):
            return (f"it does not fit in the trial budget: {rem} trial(s) left, "
                    f"{len(self._reeval) + len(self.pinned)} already queued")
        return None

    # -- 5. finishing and persistence ----------------------------------------------------------
    def _done_why(self) -> str | None:
        """Why the agent is done (a spent budget, an exhausted space), or None."""
        spent = self.ledger.exhausted() or (
            "project budget reached: the project's agents together launched "
            f"{overrides.project_budget(self)} trials" if self._project_spent else None)
        # A paused agent is waiting for a person (who may change the space and resume):
        # only a spent budget ends it. Queued pins and re-runs are still to launch.
        dry = self.status is AgentStatus.RUNNING and self._space_exhausted() \
            and not self.pinned and not self._reeval
        return spent or ("search space exhausted" if dry else None)

    def _maybe_finish(self) -> None:
        if self.status not in (AgentStatus.RUNNING, AgentStatus.PAUSED):
            return
        if self.active or self._done_why() is None:
            return
        # Overrides people sent since the last look may change that (a raised budget, a
        # wider space): they are read before the agent ends, not left pending for good.
        self._overrides_checked = -math.inf
        try:
            self._apply_overrides()
        except ServerUnreachableError:
            log.warning("could not read overrides before finishing", exc_info=True)
        why = self._done_why() if self.status in (AgentStatus.RUNNING,
                                                   AgentStatus.PAUSED) else None
        if why is not None and not self.active:
            self.status = AgentStatus.FINISHED
            self._reject_pending(f"the agent finished ({why}) before applying it")
            for cfg in self.pinned:
                self._not_launched(cfg, {}, "pinned", why)
            for cfg, w in self._reeval:
                self._not_launched(cfg, w, "reevaluate", why)
            self.pinned, self._reeval = [], []
            b = self.best
            self._decide(b.trial_id if b else "", "finish", why,
                         {"best_config": b.config if b else None,
                          "best": b.final if b else None, "trials": len(self.trials)})
            self.close()

    def _reject_pending(self, why: str) -> None:
        try:
            overrides.reject_pending(self, why)
        except ServerUnreachableError:
            log.warning("could not resolve the overrides left pending", exc_info=True)

    def _missing_metric(self) -> None:
        """End the agent when its first trials all completed without ever logging the
        objective's metric (a typo in ``metric:``): the rest of the budget would be spent
        the same way, and nothing could be compared."""
        import difflib

        metric, logged = self.objective.metric, sorted(self._without_metric)
        close = difflib.get_close_matches(metric, logged, n=1)
        self.fail(f"{self._n_without_metric} trials completed without logging the objective's "
                  f"metric {metric!r}",
                  hint=(f"did you mean {close[0]!r}? " if close else "")
                  + "they logged: " + ", ".join(logged[:20])
                  + "; fix the objective's metric (or what the train function logs) and run "
                    "it again")

    def _all_failing(self) -> None:
        """End the agent when its first trials all failed (Ray Tune raises once trials fail,
        Optuna shows each exception): saying why, instead of spending the budget on trials
        that fail the same way and finishing with no best."""
        reason, error = self._last_failure
        detail = ([ln for ln in error.strip().splitlines() if ln.strip()][-1:] or [""])[0][:500]
        if reason and reason not in detail:
            detail = f"{reason}: {detail}" if detail else reason
        self.fail(f"the first {self._n_failed} trials failed, none ran to an end; the last: "
                  f"{detail or 'no error text'}",
                  hint=f"`assay decisions {self.agent_id} --kind fail` shows each error; fix "
                       "the train function or command and run the objective again")

    def fail(self, why: str, hint: str = "") -> None:
        """End the agent FAILED (its loop crashed): no trial is left running
        (:func:`~assay.agents.recovery.fail`)."""
        recovery.fail(self, why, hint)

    def _wind_down(self) -> None:
        """A stopped agent keeps polling (the events above) until the trials it asked to stop
        have ended, so their ends are recorded and a trial that ignores the request is killed
        after its grace (backends enforce it while polled). One still running
        :data:`STOP_WAIT_S` past the grace is ended by shutting the backend down."""
        if not self.active:
            return
        now = self.backend.clock.now()
        if self._stopped_at is None:
            self._stopped_at = now  # restored stopped with trials still active
        if now - self._stopped_at < self.objective.stop_grace + STOP_WAIT_S:
            return
        self.backend.shutdown()
        for ev in self.backend.poll():
            self._on_event(ev)
        for t in self.active:  # the backend gave no last event: record the end ourselves
            t.status, t.reason = TrialStatus.STOPPED, t.stop_requested or "agent stopped"
            t.changed()
            self.ledger.record_lost(t.trial_id, finished=True)
            self._decide(t.trial_id, "stop", "no end reported after the agent stopped; its "
                         "backend was shut down", {"reason": t.reason})
            self._dirty = True

    def _space_exhausted(self) -> bool:
        return self._no_more or bool(getattr(self.searcher, "exhausted", False))

    def _decide(self, trial_id: str, kind: str, summary: str, evidence: Mapping[str, Any]) -> None:
        # A decision row holds a str trial id: anything else would fail the whole batch.
        tid = trial_id if isinstance(trial_id, str) else str(trial_id)
        d = Decision(self.agent_id, self.objective.project, tid, kind, summary,
                     dict(evidence), str(self.hlc.now()), self.backend.clock.now())
        self._pending_decisions.append(d)  # written once per step: one commit, not one each

    def _flush_decisions(self) -> None:
        if not self._pending_decisions:
            return
        batch, self._pending_decisions = self._pending_decisions, []
        try:
            self.control.add_decisions(batch)
        except Exception:  # kept for the next step: a decision is never lost
            log.warning("could not write %d decisions; retrying at the next step", len(batch),
                        exc_info=True)
            self._pending_decisions = batch + self._pending_decisions

    def state(self) -> dict[str, Any]:
        return {"trials": {k: t.to_state() for k, t in self.trials.items()},
                "searcher": self.searcher.state_dict(), "concurrency": self.concurrency,
                "budget": self._budget_spec, "pinned": self.pinned,
                "space": self.space.to_dict(),
                "reevaluate": [{"config": c, "why": w} for c, w in self._reeval],
                "best": self.best.trial_id if self.best else None,
                "ledger": self.ledger.state_dict(), "artifact_versions": self._seen_versions,
                # Where the trials' runs are, when not in the agent's data directory.
                "runs_server": getattr(self.metrics, "server", None),
                "unresolved_overrides": {k: [str(st), why]
                                         for k, (st, why) in self._unresolved.items()}}

    def _persist(self, force: bool = False) -> None:
        # A heartbeat at least once a minute, so a healthy agent waiting on long trials is
        # never mistaken for a stalled one.
        if not (force or self._dirty or time.monotonic() - self._persisted > HEARTBEAT_S):
            return
        self._persisted = time.monotonic()
        row = AgentRow(self.agent_id, self.objective.name, self.objective.project,
                       self.objective.to_dict(), self.status, self.state(),
                       str(self.hlc.now()), host=socket.gethostname())
        try:
            self.control.save_agent(row)
        except ServerUnreachableError:  # a server keeping the state is away: the next step
            log.warning("could not save the state of %s; retrying at the next step",
                        self.agent_id, exc_info=True)
            self._dirty = True
            return
        self._dirty = False

    def _restore(self, row: AgentRow) -> None:
        recovery.restore(self, row)

    def _lost(self, tr: Trial) -> None:
        recovery.lost(self, tr)
