"""A backend that plays simulated learning curves on a simulated clock.

Each trial's curve comes from a simulator through a tiny protocol,
``curve(config, seed) -> iterable of (step, value, seconds)``: every point is reported
``seconds`` of simulated time after the previous one. Raising from the iterable simulates a
crash (the trial fails with the error), raising :class:`WorkerLost` simulates a dead worker
(the trial is retried up to ``max_retries``), and a NaN value fails the trial as diverged.

Nothing happens by itself: :meth:`SimBackend.poll` processes everything due by
``clock.now()``, and the loop (or a test) moves the clock, for instance straight to
:meth:`SimBackend.next_event_time`. Events carry the simulated time they happened at, freed
slots are refilled at the exact simulated moment, and ties are broken by launch order, so a
run is deterministic and hundreds of trials take well under a second.

A spec with ``resume=True`` (a trial that a restarted agent relaunches) runs like any other:
a simulation keeps no run to continue, so the trial replays its curve from the first step.
"""

from __future__ import annotations

import heapq
import math
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from ..errors import ConflictError, NotFoundError, UserInputError
from .base import (
    Backend,
    EventKind,
    MetricSource,
    Points,
    Resources,
    Shortfall,
    TrialEvent,
    TrialSpec,
    Usage,
)
from .clock import SimClock

__all__ = [
    "CurveSimulatorLike",
    "CurveSimulatorSource",
    "SimBackend",
    "SimulatedCrash",
    "StopMode",
    "WorkerLost",
]


class CurveSimulatorLike(Protocol):
    """What :class:`SimBackend` needs from a simulator."""

    def curve(self, config: Mapping[str, Any], seed: int) -> Iterable[tuple[int, float, float]]:
        """The points ``(step, value, seconds)`` a trial of ``config`` reports, in order."""
        ...


class SimulatedCrash(RuntimeError):
    """A simulated trial crashed (raised by simulators; the trial fails)."""


class WorkerLost(RuntimeError):
    """A simulated worker died under the trial (the trial is retried, like on Ray)."""


class StopMode(StrEnum):
    """When a stop takes effect in simulation."""

    IMMEDIATE = "immediate"
    """At once, at ``clock.now()``."""
    STEP = "step"
    """At the trial's next reported step (a loop checking ``run.should_stop()``), or when
    its ``stop_grace_s`` runs out, whichever comes first."""


class CurveSimulatorSource:
    """Adapts a simulator with ``run(config, replicate=...)`` returning a run with ``steps``,
    ``values``, ``durations`` and ``failure`` (``assay.simulations.curves.CurveSimulator``)
    to the :class:`CurveSimulatorLike` protocol. A ``"crashed"`` run raises
    :class:`SimulatedCrash` after its last point; a diverged one ends in NaN.
    """

    def __init__(self, simulator: Any) -> None:
        if not callable(getattr(simulator, "run", None)):
            raise UserInputError(f"{type(simulator).__name__} has no run(config, replicate=)",
                                 hint="pass assay.simulations.curves.CurveSimulator(...)")
        self.simulator = simulator
        self.metric = str(getattr(simulator, "metric", "objective"))

    def curve(self, config: Mapping[str, Any], seed: int) -> Iterator[tuple[int, float, float]]:
        run = self.simulator.run(dict(config), replicate=seed)
        yield from zip(run.steps, run.values, run.durations)
        if run.failure == "crashed":
            raise SimulatedCrash(f"simulated crash after step {run.steps[-1] if run.steps else 0}")


class _State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@dataclass
class _Trial:
    spec: TrialSpec
    seq: int
    state: _State = _State.QUEUED
    attempt: int = 1
    it: Iterator[tuple[int, float, float]] | None = None
    started_at: float = 0.0
    point: tuple[int, float] | None = None  # reported at ``due``
    due: float | None = None
    last_report: float = 0.0
    stop_reason: str | None = None
    stop_at: float | None = None
    top_step: int = -1  # highest step reported by this attempt
    last: dict[str, float] = field(default_factory=dict)
    version: int = 0


class SimBackend(Backend, MetricSource):
    """Runs trials on simulated curves under a :class:`SimClock`.

    Args:
        clock: The simulated clock the loop advances.
        simulator: Anything with ``curve(config, seed)`` (see :class:`CurveSimulatorLike`);
            the seed of a trial is its launch index, so equal launch sequences replay equally.
        cpus: CPUs of the simulated cluster (N one-CPU trials run at once with ``cpus=N``).
        gpus: GPUs of the simulated cluster.
        resources: Custom resources of the simulated cluster (``{"A100": 2}``), for trials
            that ask for them.
        metric: Name the curve's values are reported under (default: the simulator's
            ``metric`` attribute, else ``"objective"``).
        stop_mode: When stops take effect (:class:`StopMode`).
        launch_overhead_s: Simulated seconds between a trial's start and its first step.
        fail_on_nan: Fail a trial whose curve reports NaN (diverged).
        autoscaling: Simulate a cluster that may grow (:meth:`resize`): a trial larger than
            it waits instead of being refused, and :meth:`shortfall` says it may fit later.
    """

    def __init__(self, clock: SimClock, simulator: CurveSimulatorLike, *, cpus: float = 4.0,
                 gpus: float = 0.0, metric: str | None = None,
                 stop_mode: StopMode | str = StopMode.IMMEDIATE, launch_overhead_s: float = 0.0,
                 fail_on_nan: bool = True, autoscaling: bool = False,
                 resources: Mapping[str, float] | None = None) -> None:
        if not isinstance(clock, SimClock):
            raise UserInputError("SimBackend needs a SimClock",
                                 hint="SimBackend(SimClock(), simulator)")
        if not callable(getattr(simulator, "curve", None)):
            raise UserInputError(f"{type(simulator).__name__} has no curve(config, seed)",
                                 hint="wrap CurveSimulator instances in CurveSimulatorSource")
        self.clock = clock
        self.simulator = simulator
        self.total = Resources(cpus, gpus, dict(resources or {}))
        self.metric = metric or str(getattr(simulator, "metric", "objective"))
        try:
            self.stop_mode = StopMode(stop_mode)
        except ValueError:
            raise UserInputError(f"unknown stop_mode {stop_mode!r}",
                                 hint="'immediate' or 'step'") from None
        if not isinstance(launch_overhead_s, int | float) or not launch_overhead_s >= 0:
            raise UserInputError(f"launch_overhead_s must be >= 0, got {launch_overhead_s!r}")
        self.launch_overhead_s = float(launch_overhead_s)
        self.fail_on_nan = fail_on_nan
        self.autoscaling = bool(autoscaling)
        self._trials: dict[str, _Trial] = {}
        self._queue: list[str] = []
        self._heap: list[tuple[float, int, str, int]] = []
        self._events: list[tuple[float, int, TrialEvent]] = []
        self._points: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self._rewound: set[str] = set()  # retried since their points were last read
        self._replaced: set[str] = set()  # ... as of the last new_points answer
        self._order = 0
        self._used: dict[str, float] = {}
        self._closed = False

    # -- Backend -----------------------------------------------------------------------------
    def launch(self, spec: TrialSpec) -> None:
        if self._closed:
            raise ConflictError("the backend is shut down", hint="create a new SimBackend")
        if spec.trial_id in self._trials:
            raise ConflictError(f"trial {spec.trial_id} was already launched",
                                hint="give every trial a new id")
        short = self.shortfall(spec.resources)
        if short is not None and not short.may_grow:
            raise UserInputError(f"trial {spec.trial_id}: {short.message} (the simulated "
                                 "cluster)",
                                 hint="ask for less, or build the SimBackend with more "
                                      "cpus/gpus")
        self._advance()
        self._trials[spec.trial_id] = _Trial(spec, len(self._trials))
        self._queue.append(spec.trial_id)
        self._fill(self.clock.now())

    def poll(self) -> list[TrialEvent]:
        self._advance()
        out = [e for _, _, e in sorted(self._events, key=lambda x: (x[0], x[1]))]
        self._events.clear()
        return out

    def stop(self, trial_id: str, reason: str = "stop requested") -> None:
        tr = self._get(trial_id)
        self._advance()
        if tr.state is _State.DONE or tr.stop_reason is not None:
            return
        now = self.clock.now()
        if tr.state is _State.QUEUED:
            self._queue.remove(trial_id)
            tr.state = _State.DONE
            self._emit(now, TrialEvent(trial_id, EventKind.STOPPED, now, tr.attempt,
                                       reason=reason))
            return
        tr.stop_reason = reason
        if self.stop_mode is StopMode.IMMEDIATE:
            self._finish(tr, now, EventKind.STOPPED, reason=reason)
            self._fill(now)
        else:
            tr.stop_at = now + tr.spec.stop_grace_s
            self._schedule(tr)

    def running(self) -> set[str]:
        return {tid for tid, t in self._trials.items() if t.state is not _State.DONE}

    def capacity(self, resources: Resources | None = None) -> int:
        if self._closed:
            return 0
        r = resources or Resources()
        free = self._free()
        for tid in self._queue:
            for k, v in self._trials[tid].spec.resources.request().items():
                free[k] = free.get(k, 0.0) - v
        return r.fits(free)

    def shortfall(self, resources: Resources) -> Shortfall | None:
        return Shortfall.of(resources.request(), self._totals(), may_grow=self.autoscaling)

    def resize(self, cpus: float | None = None, gpus: float | None = None,
               resources: Mapping[str, float] | None = None) -> None:
        """Grow (or shrink) the simulated cluster, as an autoscaler would; queued trials
        that fit now start at ``clock.now()``."""
        self._advance()
        self.total = Resources(self.total.cpus if cpus is None else cpus,
                               self.total.gpus if gpus is None else gpus,
                               dict(self.total.custom if resources is None else resources))
        self._fill(self.clock.now())

    def _totals(self) -> dict[str, float]:
        return {"CPU": self.total.cpus, "GPU": self.total.gpus, **self.total.custom}

    def _free(self) -> dict[str, float]:
        free = self._totals()
        for k, v in self._used.items():
            free[k] = free.get(k, 0.0) - v
        return free

    def shutdown(self) -> None:
        if self._closed:
            return
        self._advance()
        now = self.clock.now()
        for tid in sorted(self.running(), key=lambda t: self._trials[t].seq):
            tr = self._trials[tid]
            if tr.state is _State.QUEUED:
                self._queue.remove(tid)
                tr.state = _State.DONE
                self._emit(now, TrialEvent(tid, EventKind.STOPPED, now, tr.attempt,
                                           reason="backend shut down"))
            else:
                self._finish(tr, now, EventKind.STOPPED, reason="backend shut down")
        self._closed = True

    # -- MetricSource ------------------------------------------------------------------------
    def new_points(self, trial_ids: Iterable[str]) -> Points:
        out: Points = {}
        self._replaced = set()
        for tid in trial_ids:
            if tid in self._rewound:
                self._rewound.discard(tid)
                self._replaced.add(tid)
            pts = self._points.pop(tid, None)
            if pts:
                out[tid] = pts
        return out

    def replaced(self) -> set[str]:
        """Trials retried since the last answer: as on a real backend, the new attempt's run
        rewinds to its first step, so its points replace the dead attempt's."""
        return set(self._replaced)

    # -- simulation --------------------------------------------------------------------------
    def next_event_time(self) -> float | None:
        """When the next thing happens (a point, a finish, a forced stop); None when idle.

        The loop may advance the clock straight there: ``clock.advance_to(t)``.
        """
        while self._heap:
            t, _, tid, version = self._heap[0]
            if self._trials[tid].version == version:
                return t
            heapq.heappop(self._heap)
        return None

    def _get(self, trial_id: str) -> _Trial:
        tr = self._trials.get(trial_id)
        if tr is None:
            raise NotFoundError(f"trial {trial_id!r} was never launched on this backend",
                                hint="check the id; running() lists the live trials")
        return tr

    def _emit(self, t: float, event: TrialEvent) -> None:
        self._order += 1
        self._events.append((t, self._order, event))

    def _schedule(self, tr: _Trial) -> None:
        tr.version += 1
        times = [x for x in (tr.due, tr.stop_at) if x is not None]
        timeout = tr.spec.report_timeout_s
        if timeout is not None:
            times.append(tr.last_report + timeout)
        if times:
            heapq.heappush(self._heap, (min(times), tr.seq, tr.spec.trial_id, tr.version))

    def _fill(self, t: float) -> None:
        """Start queued trials that fit, first fit in launch order, at time ``t``."""
        for tid in list(self._queue):
            tr = self._trials[tid]
            asked = tr.spec.resources.request()
            free = self._free()
            if all(v <= free.get(k, 0.0) + 1e-9 for k, v in asked.items()):
                self._queue.remove(tid)
                for k, v in asked.items():
                    self._used[k] = self._used.get(k, 0.0) + v
                tr.state = _State.RUNNING
                self._start_attempt(tr, t)

    def _start_attempt(self, tr: _Trial, t: float) -> None:
        tr.started_at = tr.last_report = t
        tr.it = iter(self.simulator.curve(tr.spec.config, tr.seq))
        self._emit(t, TrialEvent(tr.spec.trial_id, EventKind.STARTED, t, tr.attempt))
        self._next_point(tr, t + self.launch_overhead_s)

    def _next_point(self, tr: _Trial, t: float) -> None:
        """Fetch the trial's next point (due ``seconds`` after ``t``), or finish it."""
        if tr.it is None:  # finished meanwhile
            return
        try:
            step, value, seconds = next(tr.it)
        except StopIteration:
            self._finish(tr, t, EventKind.COMPLETED)
            return
        except WorkerLost as e:
            self._worker_lost(tr, t, f"worker lost: {e}")
            return
        except Exception as e:  # noqa: BLE001 - any simulator error is the trial crashing
            self._finish(tr, t, EventKind.FAILED, reason=f"crashed: {type(e).__name__}: {e}",
                         error="".join(traceback.format_exception(e)))
            return
        tr.point = (int(step), float(value))
        tr.due = t + max(0.0, float(seconds))
        self._schedule(tr)

    def _worker_lost(self, tr: _Trial, t: float, reason: str) -> None:
        usage = Usage.of(tr.spec.resources, t - tr.started_at)
        if tr.attempt > tr.spec.max_retries:
            self._finish(tr, t, EventKind.FAILED,
                         reason=f"{reason} (attempt {tr.attempt}; max_retries="
                                f"{tr.spec.max_retries})")
            return
        tr.attempt += 1
        self._emit(t, TrialEvent(tr.spec.trial_id, EventKind.RETRIED, t, tr.attempt,
                                 reason=reason, usage=usage))
        tr.due = None
        # The retried attempt starts its curve again (the run rewinds, resume_from_step
        # "auto"): the dead attempt's points, read or not, are superseded.
        tr.top_step = -1
        tr.last = {}
        self._points.pop(tr.spec.trial_id, None)
        self._rewound.add(tr.spec.trial_id)
        self._start_attempt(tr, t)

    def _finish(self, tr: _Trial, t: float, kind: EventKind, *, reason: str = "",
                error: str = "") -> None:
        tr.state = _State.DONE
        tr.due = tr.stop_at = None
        tr.it = None
        tr.version += 1  # drops its pending heap entries
        r = tr.spec.resources
        for k, v in r.request().items():
            self._used[k] -= v
        self._emit(t, TrialEvent(tr.spec.trial_id, kind, t, tr.attempt, result=dict(tr.last),
                                 reason=reason, error=error,
                                 usage=Usage.of(r, t - tr.started_at)))

    def _advance(self) -> None:
        """Process every tick due by ``clock.now()``, in time order."""
        now = self.clock.now()
        while self._heap and self._heap[0][0] <= now:
            t, _, tid, version = heapq.heappop(self._heap)
            tr = self._trials[tid]
            if tr.version != version or tr.state is not _State.RUNNING:
                continue
            self._tick(tr, t)
            if tr.state is _State.DONE:
                self._fill(t)

    def _tick(self, tr: _Trial, t: float) -> None:
        timeout = tr.spec.report_timeout_s
        if timeout is not None and tr.last_report + timeout <= t \
                and (tr.due is None or tr.due > tr.last_report + timeout):
            self._finish(tr, t, EventKind.FAILED,
                         reason=f"no metric reported for {timeout:g} s (report_timeout_s)")
            return
        if tr.stop_at is not None and tr.stop_at <= t and (tr.due is None or tr.stop_at < tr.due):
            self._finish(tr, t, EventKind.STOPPED,
                         reason=f"{tr.stop_reason} (killed after {tr.spec.stop_grace_s:g} s grace)")
            return
        if tr.due is None or tr.due > t or tr.point is None:
            self._schedule(tr)
            return
        step, value = tr.point
        tr.point = tr.due = None
        tr.last_report = t
        if step > tr.top_step:
            tr.top_step = step
            self._points.setdefault(tr.spec.trial_id, {}).setdefault(self.metric, []).append(
                (step, value))
            tr.last[self.metric] = value
        if math.isnan(value) and self.fail_on_nan:
            self._finish(tr, t, EventKind.FAILED,
                         reason=f"diverged: {self.metric} is NaN at step {step}")
        elif tr.stop_reason is not None:
            self._finish(tr, t, EventKind.STOPPED, reason=tr.stop_reason)
        else:
            self._next_point(tr, t)
