"""Shared reading of histories: which trials are observations, pending or failed, and
curve arithmetic for stoppers. Internally every value is oriented so lower is better."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UserInputError
from .base import Mode
from .records import TrialResult, TrialStatus
from .space import SearchSpace


@dataclass
class Observation:
    """A trial usable as a data point: its active config and raw objective value(s)."""

    trial: TrialResult
    config: dict[str, Any]
    values: tuple[float, ...]


@dataclass
class Collected:
    """A history sorted into what each searcher needs."""

    observed: list[Observation] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Trials whose config is outside the space (e.g. the space changed)."""

    @property
    def n_used(self) -> int:
        return len(self.observed) + len(self.failed)


def collect(
    history: Sequence[TrialResult],
    space: SearchSpace,
    metrics: Sequence[str | None],
    *,
    use_stopped: bool = True,
) -> Collected:
    """Sort trials into observations (all ``metrics`` finite), pending, failed and skipped.

    A completed (or, with ``use_stopped``, early-stopped) trial whose objective is
    missing or not finite counts as failed: divergence is a property of its config.
    """
    out = Collected()
    for trial in history:
        try:
            config = space.validate(trial.config)
        except UserInputError:  # outside the (possibly changed) space: skipped, not fatal
            out.skipped.append(trial.trial_id)
            continue
        status = trial.status
        if status.is_active:
            out.pending.append(config)
            continue
        if status is TrialStatus.FAILED or (status is TrialStatus.STOPPED and not use_stopped):
            if status is TrialStatus.FAILED:
                out.failed.append(config)
            continue
        values = [trial.metric(m) for m in metrics]
        if any(v is None or not math.isfinite(v) for v in values):
            out.failed.append(config)
            continue
        out.observed.append(Observation(trial, config, tuple(float(v) for v in values)))  # type: ignore[arg-type]
    return out


def oriented_curve(trial: TrialResult, mode: Mode) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of ``trial``'s curve, values multiplied so lower is better."""
    if not trial.curve:
        return np.empty(0), np.empty(0)
    arr = np.asarray(trial.curve, dtype=float)
    return arr[:, 0], arr[:, 1] * mode.sign()


def best_until(steps: np.ndarray, values: np.ndarray, step: float) -> float:
    """Best (lowest) finite value at or before ``step``; NaN when there is none."""
    if steps.size == 0:
        return math.nan
    mask = (steps <= step) & np.isfinite(values)
    return float(values[mask].min()) if mask.any() else math.nan


def value_until(steps: np.ndarray, values: np.ndarray, step: float) -> float:
    """The last value at or before ``step`` (NaN when none)."""
    idx = int(np.searchsorted(steps, step, side="right")) - 1
    return float(values[idx]) if idx >= 0 else math.nan


def population_at(
    pool: dict[str, TrialResult],
    exclude: str,
    step: float,
    mode: Mode,
    *,
    carry_finished: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """Best-so-far values at ``step`` of the other trials that can be compared there.

    A trial counts when its curve reaches ``step``; with ``carry_finished``, a finished
    trial that ended earlier (stopped or crashed) counts with its last best value, so
    survivors are not the only yardstick.
    """
    vals: list[float] = []
    ids: list[str] = []
    for tid, t in pool.items():
        if tid == exclude or not t.curve:
            continue
        last = t.curve[-1][0]
        if last < step and not (carry_finished and t.status.is_finished):
            continue
        s, v = oriented_curve(t, mode)
        b = best_until(s, v, step)
        if math.isfinite(b):
            vals.append(b)
            ids.append(tid)
    return np.asarray(vals, dtype=float), ids
