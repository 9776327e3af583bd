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
config and within the concurrency, and continues its run. A trial lost this way more than
``max_retries`` times (the objective's setting for dead workers) is failed instead, so a
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import UserInputError
from ..policies import Searcher, SearchSpace, Suggestion, TrialResult, TrialStatus, as_space
from ..scheduler.base import Backend, EventKind, MetricSource, Resources, TrialEvent, TrialSpec
from ..scheduler.budget import Budget, BudgetLedger
from ..store.control import (
    AgentRow,
    AgentStatus,
    ControlStore,
    Decision,
    Override,
    OverrideStatus,
)
from .factory import make_searcher, make_stopper, refit_every
from .hlc import HybridLogicalClock
from .objective import Objective, resolve_train
from .refit import PredictorRefitter, find_learned

__all__ = ["Agent", "ArtifactHooks", "Trial"]

log = logging.getLogger(__name__)
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
OVERRIDE_POLL_S = 0.25
HEARTBEAT_S = 60.0


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


class _Suggester(threading.Thread):
    """Keeps a queue of suggestions ready ahead of need (BoTorch fits take seconds)."""

    def __init__(self, agent: Agent) -> None:
        super().__init__(name=f"assay-suggest-{agent.agent_id}", daemon=True)
        self.agent = agent
        self.ready: list[Suggestion] = []
        self.mu = threading.Lock()
        self.want = threading.Event()
        self.closed = False
        self.busy = False

    def run(self) -> None:
        while not self.closed:
            self.want.wait(1.0)
            self.want.clear()
            if self.closed:
                return
            with self.mu:
                need = self.agent.concurrency - len(self.ready)
            if need <= 0:
                continue
            self.busy = True
            try:
                got = self.agent._suggest(need)
            except Exception:
                log.exception("searcher failed; slots fall back to random configs")
                got = []
            finally:
                self.busy = False
            with self.mu:
                self.ready.extend(got)

    def take(self) -> Suggestion | None:
        with self.mu:
            s = self.ready.pop(0) if self.ready else None
        self.want.set()
        return s

    def invalidate(self) -> None:
        with self.mu:
            self.ready.clear()
        self.want.set()


class Agent:
    """Runs one objective on a backend. Create it, then call :meth:`step` (or :meth:`run`).

    Args:
        objective: What to optimise, over which space, with which budget.
        backend: Runs the trials (``RayBackend``, ``SimBackend``).
        metrics: Where curves come from (``StoreMetricSource``, or the ``SimBackend``).
        control: Where state, decisions and overrides live (the experiment graph).
        agent_id: Resume this agent (its persisted state) instead of starting a new one.
        prior: Finished trials of other agents to warm-start the searcher (not budgeted).
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
        self._budget_spec = dict(objective.budget)
        self.budget = Budget.from_mapping(self._budget_spec)
        self.ledger = BudgetLedger(self.budget, backend.clock)
        self.concurrency = objective.concurrency
        self.resources = Resources(**dict(objective.resources))
        self.target = resolve_train(objective.train)
        self.trials: dict[str, Trial] = {}
        self.prior = list(prior or [])
        self.pinned: list[dict[str, Any]] = []
        self.status = AgentStatus.RUNNING
        self.best: Trial | None = None
        self._dirty = True
        self._pending_decisions: list[Decision] = []
        self._overrides_checked = -1e9
        self._project_spent = False
        self._foreign: dict[str, TrialResult] = {}  # configs other agents hold leases on
        self._no_more = False
        self._skips = 0  # lease collisions since the last launch
        self._persisted = 0.0
        self.artifacts = artifacts
        self._reeval_checked = -1e9
        self._seen_versions: dict[str, int] = {}
        self._relaunch: list[str] = []  # trials lost in a restart, waiting to be relaunched
        self._mu = threading.RLock()  # the searcher thread reads trials while step() runs
        existing = control.get_agent(self.agent_id) if agent_id else None
        if existing is not None:
            self._restore(existing)
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
        self._refit_predictor()
        did["points"] = self._read_points()
        did["overrides"] = self._apply_overrides()
        if self.status is AgentStatus.RUNNING:
            did["stopped"] = self._stop_hopeless()
            did["launched"] = self._reevaluate() + self._launch()
        elif self.status is AgentStatus.PAUSED:  # no new trials; running ones continue,
            did["launched"] = self._relaunch_lost()  # those a restart lost included
        self._maybe_finish()
        self._flush_decisions()
        self._persist()
        return did

    def run(self, poll_interval: float = 1.0, max_steps: int | None = None) -> Trial | None:
        """Step until the objective is finished or stopped; returns the best trial."""
        n = 0
        while self.status in (AgentStatus.RUNNING, AgentStatus.PAUSED):
            self.step()
            n += 1
            if max_steps is not None and n >= max_steps:
                break
            self.backend.clock.sleep(poll_interval)
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
            t.status = TrialStatus.COMPLETED
            self._decide(t.trial_id, "complete", f"completed with {self.objective.metric}={final}",
                         {"final": final, "usage_s": ev.usage.wall_s})
            self._track_best(t)
        elif ev.kind is EventKind.STOPPED:
            t.status = TrialStatus.STOPPED
        else:
            t.status = TrialStatus.FAILED
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
        for tid, by_key in self.metrics.new_points(ids).items():
            pts = by_key.get(self.objective.metric)
            if pts:
                self.trials[tid].curve.extend((int(s), float(v)) for s, v in pts)
                self.trials[tid].changed()
                n += len(pts)
        return n  # curves are in the store: new points alone do not need a state write

    # -- 2. overrides ----------------------------------------------------------------------------
    def _apply_overrides(self) -> int:
        # Overrides come from people: checking 4 times a second is prompt enough, and keeps a
        # store query out of steps that follow each other quickly (simulations, bursts).
        now = time.monotonic()
        if now - self._overrides_checked < OVERRIDE_POLL_S:
            return 0
        self._overrides_checked = now
        pending = self.control.overrides(self.agent_id, OverrideStatus.PENDING)
        for o in pending:
            self.hlc.update(o.hlc)
            try:
                result = self._apply(o)
                status = OverrideStatus.APPLIED
            except UserInputError as e:
                result, status = f"rejected: {e.message}", OverrideStatus.REJECTED
            self.control.resolve_override(o.override_id, status, result)
            self._decide(o.params.get("trial_id", ""), "override",
                         f"{o.action} by {o.actor}: {result}",
                         {"action": o.action, "params": o.params, "actor": o.actor,
                          "reason": o.reason, "override_id": o.override_id, "status": str(status)})
            self._dirty = True
        return len(pending)

    def _apply(self, o: Override) -> str:
        p = o.params
        if o.action == "pause":
            self.status = AgentStatus.PAUSED
            return "paused: no new trials; running ones continue"
        if o.action == "resume":
            if self.status is not AgentStatus.PAUSED:
                raise UserInputError(f"agent is {self.status}, not paused")
            self.status = AgentStatus.RUNNING
            return "resumed"
        if o.action == "stop":
            active = list(self.active)
            for t in active:
                self._stop_trial(t.trial_id, f"agent stopped by {o.actor}: {o.reason}")
            self.status = AgentStatus.STOPPED
            return f"stopped; {len(active)} running trial(s) asked to stop"
        if o.action == "stop_run":
            tid = p.get("trial_id")
            if tid not in self.trials or not self.trials[tid].status.is_active:
                raise UserInputError(f"run {tid!r} is not a running trial of this agent")
            self._stop_trial(tid, f"stopped by {o.actor}: {o.reason}")
            return f"stopping run {tid}"
        if o.action == "budget":
            merged = {**self._budget_spec, **dict(p.get("budget", {}))}
            self.budget = Budget.from_mapping(merged)
            self._budget_spec = merged
            self.ledger.budget = self.budget
            return f"budget now {merged}"
        if o.action == "concurrency":
            n = p.get("concurrency")
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise UserInputError(f"concurrency must be an int >= 1, got {n!r}")
            self.concurrency = n
            return f"concurrency now {n}"
        if o.action == "space":
            new = as_space(dict(p.get("space", {})))
            self.space = new
            self.searcher = make_searcher(self.objective, new)
            if self._suggester is not None:
                self._suggester.invalidate()
            return f"space now {new.to_dict()}"
        if o.action == "pin":
            cfg = self.space.validate(dict(p.get("config", {})))
            self.pinned.append(cfg)
            return f"pinned {cfg}"
        raise UserInputError(f"unknown override action {o.action!r}",
                             hint="pause, resume, stop, stop_run, budget, concurrency, space, pin")

    def _stop_trial(self, tid: str, reason: str) -> None:
        """Ask the backend to stop a trial; one still waiting to be relaunched after a
        restart is never relaunched (the backend does not know it), and ends stopped now."""
        if tid not in self._relaunch:
            self._request_stop(tid, reason)
            return
        self._relaunch.remove(tid)
        t = self.trials[tid]
        t.status, t.reason = TrialStatus.STOPPED, reason
        t.changed()
        self.ledger.record_lost(tid, finished=True)
        self._end_run(tid, "stopped", reason)
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
        running = [t.trial_id for t in self.trials.values() if t.status is TrialStatus.RUNNING
                   and t.curve]
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
        return (self.prior + list(self._foreign.values())
                + [t.result() for t in self.trials.values()])

    def _suggest(self, n: int) -> list[Suggestion]:
        """Ask the searcher, with queued-but-unlaunched suggestions as pending trials (so
        a batch asked ahead of need never proposes what is already waiting)."""
        with self._mu:
            history = self._history()
            queued = list(self._suggester.ready) if self._suggester is not None else []
        history += [TrialResult(f"queued{i}", dict(q.config), TrialStatus.PENDING)
                    for i, q in enumerate(queued)]
        return self.searcher.suggest(history, n)

    def _next_config(self) -> tuple[dict[str, Any], dict[str, Any], str] | None:
        if self.pinned:
            return self.pinned.pop(0), {"method": "pinned by a person"}, "pinned"
        s = self._suggester.take() if self._suggester is not None else None
        if s is None and self._suggester is None:
            got = self._suggest(1)
            s = got[0] if got else None
        if s is None:
            from ..policies import RandomSearcher

            fill = RandomSearcher(self.space, mode=self.objective.mode,
                                  seed=len(self.trials) + 7919 * self.objective.seed)
            got = fill.suggest(self._history(), 1)
            if not got:
                return None
            return (dict(got[0].config), {"method": "random fill",
                    "why": "the searcher was still fitting; a free slot never waits"}, "fill")
        return dict(s.config), dict(s.explanation), "searcher"

    def _launch(self) -> int:
        launched = self._relaunch_lost()
        if self._relaunch:
            return launched  # trials lost in a restart go first: no new config before them
        for _ in range(64):
            free = min(self.concurrency - len(self.active), self.backend.capacity(self.resources))
            if free <= 0:
                break
            blocker = self.ledger.launch_blocker(self.resources)
            if blocker:
                break
            nxt = self._next_config()
            if nxt is None:
                self._no_more = True  # the searcher has nothing left to propose
                break
            config, why, origin = nxt
            tid = "".join(secrets.choice(_ALNUM) for _ in range(10))
            prefix = f"{self.objective.project}/"
            pb = self.objective.project_budget
            holder = self.control.claim_lease(prefix + self.space.key(config), self.agent_id, tid,
                                              str(self.hlc.now()),
                                              limit=(prefix, pb["trials"]) if pb else None)
            if holder == "project budget":
                self._project_spent = True
                break
            if holder is not None:
                # Another agent holds it: show it to the searcher as pending, so it moves on.
                if holder not in self._foreign:
                    self._decide(holder, "skip", "config already run or running elsewhere",
                                 {"config": config, "lease": prefix + self.space.key(config)})
                    self._foreign[holder] = TrialResult(f"lease{holder}", config,
                                                        TrialStatus.PENDING)
                self._skips += 1
                if self._skips > 4 * self.concurrency + 16:
                    self._no_more = True  # every config proposed is taken: the space is done
                    break
                continue
            self._skips = 0
            self._start(tid, config, why, origin)
            launched += 1
        return launched

    def _spec(self, tid: str, config: dict[str, Any], *, resume: bool = False) -> TrialSpec:
        return TrialSpec(trial_id=tid, project=self.objective.project, config=config,
                         target=self.target, resources=self.resources,
                         max_retries=self.objective.max_retries,
                         stop_grace_s=self.objective.stop_grace,
                         report_timeout_s=_seconds(self.objective.trial_timeout), resume=resume)

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
        """Relaunch the trials a restart lost, resuming their runs, while slots are free.

        They count against the concurrency while they wait. The budget is not asked: each
        is a trial it admitted before (already counted), continuing, like a backend retry.
        """
        n = 0
        while self._relaunch:
            running = len(self.active) - len(self._relaunch)
            free = min(self.concurrency - running, self.backend.capacity(self.resources))
            if free <= 0:
                break
            tid = self._relaunch.pop(0)
            t = self.trials[tid]
            t.relaunches += 1
            # Saved before the launch: a trial that takes its agent down with it is then
            # counted, and max_retries ends the cycle.
            self._persist(force=True)
            spec = self._spec(tid, t.config, resume=True)
            self.backend.launch(spec)
            self.ledger.record_launch(spec, agent=self.agent_id)  # known: not counted again
            self._decide(tid, "resume", "the agent restarted while it ran; relaunched, "
                         "resuming its run",
                         {"relaunch": t.relaunches, "max_retries": self.objective.max_retries,
                          "config": t.config})
            self._dirty = True
            n += 1
        return n

    # -- cascading re-evaluation ------------------------------------------------------------
    def _reevaluate(self) -> int:
        """When an artifact the objective names in ``reevaluate_on`` gets a new version, mark
        the trials that used an older one stale and re-run the top ones on the new version.

        A trial "uses" an artifact through a config value ``"<name>:v<n>"`` (the train
        function passes it to ``run.use_artifact``), which the re-run swaps for the new one.
        """
        if not self.objective.reevaluate_on or self.artifacts is None:
            return 0
        now = time.monotonic()
        if now - self._reeval_checked < 2.0:
            return 0
        self._reeval_checked = now
        launched = 0
        for name in self.objective.reevaluate_on:
            latest = self.artifacts.latest_version(name)
            if latest is None:
                continue
            seen = self._seen_versions.setdefault(name, latest)
            if latest <= seen:
                continue
            self._seen_versions[name] = latest
            new_ref = f"{name}:v{latest}"
            users = [(t, k) for t in self.trials.values() for k, v in t.config.items()
                     if isinstance(v, str) and v.startswith(f"{name}:") and v != new_ref]
            stale = [t for t, _ in users if t.status is TrialStatus.COMPLETED]
            if stale:
                self.artifacts.mark_stale([t.trial_id for t in stale],
                                          f"{name} has a new version v{latest}")
                for t in stale:
                    self._decide(t.trial_id, "stale", f"stale: {name} is now v{latest}",
                                 {"artifact": name, "version": latest})
            sign = 1.0 if self.objective.mode == "min" else -1.0
            keyed = {t.trial_id: k for t, k in users}
            top = sorted((t for t in stale if t.final is not None and t.final == t.final),
                         key=lambda t: sign * float(t.final or 0.0))[: self.objective.reevaluate_top]
            for old in top:
                tid = "".join(secrets.choice(_ALNUM) for _ in range(10))
                cfg = {**old.config, keyed[old.trial_id]: new_ref}
                self._start(tid, cfg, {"method": "re-evaluation", "reevaluates": old.trial_id,
                                       "artifact": new_ref, "was": old.final}, "reevaluate")
                self.artifacts.link(old.trial_id, tid)
                launched += 1
        self._dirty = self._dirty or bool(launched)
        return launched

    # -- 5. finishing and persistence ----------------------------------------------------------
    def _maybe_finish(self) -> None:
        if self.status in (AgentStatus.FINISHED, AgentStatus.FAILED):
            return
        if self.status is AgentStatus.STOPPED:
            return
        spent = self.ledger.exhausted() or (
            "project budget reached: the project's agents together launched "
            f"{self.objective.project_budget['trials']} trials"  # type: ignore[index]
            if self._project_spent else None)
        if (spent or self._space_exhausted()) and not self.active:
            self.status = AgentStatus.FINISHED
            b = self.best
            self._decide(b.trial_id if b else "", "finish", spent or "search space exhausted",
                         {"best_config": b.config if b else None,
                          "best": b.final if b else None, "trials": len(self.trials)})
            self.close()

    def _space_exhausted(self) -> bool:
        return self._no_more or bool(getattr(self.searcher, "exhausted", False))

    def _decide(self, trial_id: str, kind: str, summary: str, evidence: Mapping[str, Any]) -> None:
        d = Decision(self.agent_id, self.objective.project, trial_id, kind, summary,
                     dict(evidence), str(self.hlc.now()), self.backend.clock.now())
        self._pending_decisions.append(d)  # written once per step: one commit, not one each

    def _flush_decisions(self) -> None:
        if self._pending_decisions:
            batch, self._pending_decisions = self._pending_decisions, []
            self.control.add_decisions(batch)

    def state(self) -> dict[str, Any]:
        return {"trials": {k: t.to_state() for k, t in self.trials.items()},
                "searcher": self.searcher.state_dict(), "concurrency": self.concurrency,
                "budget": self._budget_spec, "pinned": self.pinned,
                "best": self.best.trial_id if self.best else None,
                "ledger": self.ledger.state_dict(), "artifact_versions": self._seen_versions}

    def _persist(self, force: bool = False) -> None:
        # A heartbeat at least once a minute, so a healthy agent waiting on long trials is
        # never mistaken for a stalled one.
        if not (force or self._dirty or time.monotonic() - self._persisted > HEARTBEAT_S):
            return
        self._persisted = time.monotonic()
        row = AgentRow(self.agent_id, self.objective.name, self.objective.project,
                       self.objective.to_dict(), self.status, self.state(),
                       str(self.hlc.now()), host=socket.gethostname())
        self.control.save_agent(row)
        self._dirty = False

    def _restore(self, row: AgentRow) -> None:
        st = row.state
        self.status = AgentStatus(row.status)
        if self.status in (AgentStatus.FINISHED, AgentStatus.STOPPED):
            return
        if st.get("ledger"):
            self.ledger.load_state_dict(st["ledger"])
        for tid, t in st.get("trials", {}).items():
            tr = Trial(tid, dict(t["config"]), TrialStatus(t["status"]),
                       [tuple(p) for p in t.get("curve", [])], t.get("final"),
                       t.get("origin", "searcher"), t.get("reason", ""),
                       relaunches=int(t.get("relaunches", 0)),
                       stop_requested=str(t.get("stop_requested", "")))
            if tr.status.is_active:
                self._lost(tr)
            self.trials[tid] = tr
            self._track_best(tr)
        self.pinned = list(st.get("pinned", []))
        self.concurrency = int(st.get("concurrency", self.concurrency))
        if st.get("searcher"):
            try:
                self.searcher.load_state_dict(st["searcher"])
            except UserInputError:
                log.warning("searcher state of %s does not fit; starting it fresh", self.agent_id)
        self._seen_versions = dict(st.get("artifact_versions", {}))

    def _lost(self, tr: Trial) -> None:
        """A trial that was running (or queued) when the agent died: its Ray task died with
        the agent, its run did not. Queue it to be relaunched, resuming that run, unless it
        was relaunched ``max_retries`` times already."""
        cap = self.objective.max_retries
        if tr.stop_requested:  # the agent asked it to stop; relaunching would undo that
            tr.status = TrialStatus.STOPPED
            tr.reason = tr.stop_requested
            self.ledger.record_lost(tr.trial_id, finished=True)
            self._end_run(tr.trial_id, "stopped", tr.reason)
            self._decide(tr.trial_id, "stop", "asked to stop before the agent restarted; "
                         f"not relaunched ({tr.stop_requested})",
                         {"reason": tr.stop_requested, "relaunches": tr.relaunches})
            return
        if tr.relaunches >= cap:
            tr.status = TrialStatus.FAILED
            tr.reason = (f"lost when the agent restarted while it ran, {tr.relaunches + 1} "
                         f"time(s); not relaunched again (max_retries={cap})")
            self.ledger.record_lost(tr.trial_id, finished=True)
            self._end_run(tr.trial_id, "failed", tr.reason)
            self._decide(tr.trial_id, "fail", tr.reason,
                         {"reason": tr.reason, "relaunches": tr.relaunches, "max_retries": cap})
            return
        tr.status = TrialStatus.PENDING
        # The metric source reports a resumed run's curve again from its first step.
        tr.curve = []
        self.ledger.record_lost(tr.trial_id)
        self._relaunch.append(tr.trial_id)


def _seconds(v: Any) -> float | None:
    if v is None:
        return None
    from ..scheduler.budget import parse_duration

    return parse_duration(v, what="trial_timeout")
