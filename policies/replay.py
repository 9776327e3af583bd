"""Replay finished sweeps through a stopper to see what early stopping would have saved
and what it would have cost (in the spirit of Ax's ``experiment_replay``).

Trials start in the given order (their completion order) on ``concurrency`` workers; every
tick each running trial reveals one more curve point; the stopper is asked which running
trials to stop, and a stopped trial frees its worker for the next one. Compute is counted
in curve points (epochs, when a point is an epoch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import UserInputError
from .base import EarlyStopper, Mode, check_history
from .records import FrozenDict, StopReason, TrialResult, TrialStatus

__all__ = ["ReplayReport", "replay"]


@dataclass(frozen=True)
class ReplayReport:
    """What a stopper would have done to a finished sweep.

    Attributes:
        n_trials: Trials replayed.
        total_steps: Curve points of all trials run in full.
        used_steps: Curve points consumed with the stopper.
        saved_fraction: ``1 - used_steps / total_steps``.
        best_value: Best final value of the sweep run in full.
        kept_value: Best final value among trials the stopper let finish (None if none).
        regret: ``|best_value - kept_value|`` (0 when the best trial was kept).
        best_trial_id: The trial with ``best_value``.
        best_trial_kept: Whether that trial ran to completion.
        stopped: ``{trial_id: StopReason}`` of every stop.
        stop_steps: ``{trial_id: step}`` at which each stop happened.
    """

    n_trials: int
    total_steps: int
    used_steps: int
    saved_fraction: float
    best_value: float | None
    kept_value: float | None
    regret: float | None
    best_trial_id: str | None
    best_trial_kept: bool
    stopped: Mapping[str, StopReason] = field(default_factory=dict)
    stop_steps: Mapping[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """The headline figures as a plain dict."""
        return {
            "n_trials": self.n_trials, "saved_fraction": round(self.saved_fraction, 4),
            "used_steps": self.used_steps, "total_steps": self.total_steps,
            "best_trial_kept": self.best_trial_kept, "regret": self.regret,
            "n_stopped": len(self.stopped),
        }


def _final(t: TrialResult, mode: Mode) -> float:
    if t.status is not TrialStatus.COMPLETED:
        return math.inf
    v = t.value
    return v * mode.sign() if v is not None and math.isfinite(v) else math.inf


def replay(
    stopper: EarlyStopper,
    trials: Sequence[TrialResult],
    *,
    concurrency: int = 4,
    check_every: int = 1,
) -> ReplayReport:
    """Run ``stopper`` over finished ``trials`` as if they were happening now.

    Args:
        stopper: The stopper to evaluate (its ``mode`` orients the values).
        trials: Finished trials with their full curves, in the order they ran. Failed
            trials replay as failures at their last point.
        concurrency: Trials running at once.
        check_every: Ask the stopper every this many ticks.

    Returns:
        A :class:`ReplayReport`.

    Raises:
        UserInputError: for a ``stopper`` that is not an :class:`EarlyStopper`, unfinished
            trials or bad arguments.
    """
    if not isinstance(stopper, EarlyStopper):
        raise UserInputError(
            f"replay() needs a stopper (an EarlyStopper such as MedianStopper), "
            f"got {type(stopper).__name__}"
        )
    trials = check_history(trials)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise UserInputError(f"concurrency must be a positive int, got {concurrency!r}")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise UserInputError(f"check_every must be a positive int, got {check_every!r}")
    for t in trials:
        if not t.status.is_finished:
            raise UserInputError(f"trial {t.trial_id!r} is {t.status}; replay needs finished trials")
    mode = stopper.mode
    queue = list(trials)
    finished: dict[str, TrialResult] = {}
    running: dict[str, int] = {}  # trial id -> points revealed
    by_id = {t.trial_id: t for t in trials}
    stopped: dict[str, StopReason] = {}
    stop_steps: dict[str, float] = {}
    used = 0
    tick = 0
    while queue or running:
        while queue and len(running) < concurrency:
            running[queue.pop(0).trial_id] = 0
        tick += 1
        for tid in list(running):
            t = by_id[tid]
            running[tid] += 1
            used += 1
            if running[tid] >= len(t.curve):
                finished[tid] = t
                del running[tid]
        if not running or tick % check_every:
            continue
        view = list(finished.values()) + [
            by_id[tid].truncated(by_id[tid].curve[n - 1][0]) for tid, n in running.items()
        ]
        for tid, reason in stopper.should_stop(view, list(running)).items():
            if tid not in running:
                continue
            n = running.pop(tid)
            step = by_id[tid].curve[n - 1][0]
            finished[tid] = by_id[tid].truncated(step, TrialStatus.STOPPED)
            stopped[tid] = reason
            stop_steps[tid] = step
    total = sum(max(len(t.curve), 1) for t in trials)
    full = {t.trial_id: _final(t, mode) for t in trials}
    best_id = min(full, key=full.__getitem__) if full else None
    best = full[best_id] if best_id is not None else math.inf
    kept = [full[tid] for tid in full if tid not in stopped]
    kept_best = min(kept) if kept else math.inf
    sign = mode.sign()
    has_best = math.isfinite(best)
    return ReplayReport(
        n_trials=len(trials),
        total_steps=total,
        used_steps=used,
        saved_fraction=1.0 - used / total if total else 0.0,
        best_value=best * sign if has_best else None,
        kept_value=kept_best * sign if math.isfinite(kept_best) else None,
        regret=(kept_best - best) if has_best and math.isfinite(kept_best) else None,
        best_trial_id=best_id if has_best else None,
        best_trial_kept=(best_id not in stopped) if has_best else True,
        stopped=FrozenDict(stopped),
        stop_steps=FrozenDict(stop_steps),
    )
