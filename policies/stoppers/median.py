"""The median (percentile) stopping rule of Google Vizier and Optuna's MedianPruner."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from ...errors import UserInputError
from .._history import best_until, oriented_curve, population_at
from ..base import EarlyStopper, Mode, running_pool
from ..records import StopReason, TrialResult
from .rules import _positive

__all__ = ["MedianStopper"]


class MedianStopper(EarlyStopper):
    """Stops a trial whose best value so far is worse than the median of the other
    trials' best values at the same step.

    Other trials count at a step when their curve reaches it; finished trials that ended
    earlier count with their last best value (so early-stopped trials still weigh in).

    Args:
        mode: ``"min"`` or ``"max"``.
        warmup_steps: Never stop a trial before this step.
        min_trials: Other trials needed at the step before the rule applies.
        percentile: 50 for the median; lower is more aggressive (the trial must be in
            the best ``percentile`` percent to go on).
        min_points: Curve points the trial needs before it can be judged.
    """

    rule = "median"

    def __init__(
        self,
        *,
        mode: Mode | str = "min",
        warmup_steps: float = 0,
        min_trials: int = 3,
        percentile: float = 50.0,
        min_points: int = 1,
    ) -> None:
        super().__init__(mode=mode)
        self.warmup_steps = _positive("warmup_steps", warmup_steps, allow_zero=True)
        self.min_trials = _positive("min_trials", min_trials, integer=True)
        self.min_points = _positive("min_points", min_points, integer=True)
        if isinstance(percentile, bool) or not isinstance(percentile, int | float) or not (
            0 < percentile < 100
        ):
            raise UserInputError(f"percentile must be in (0, 100), got {percentile!r}")
        self.percentile = float(percentile)

    def should_stop(
        self, history: Sequence[TrialResult], running: Iterable[str | TrialResult] | None = None
    ) -> dict[str, StopReason]:
        pool, ids = running_pool(history, running)
        out: dict[str, StopReason] = {}
        sign = self.mode.sign()
        for tid in ids:
            steps, values = oriented_curve(pool[tid], self.mode)
            if len(steps) < self.min_points or steps[-1] < self.warmup_steps:
                continue
            step = float(steps[-1])
            best = best_until(steps, values, step)
            others, _ = population_at(pool, tid, step, self.mode)
            if len(others) < self.min_trials:
                continue
            cutoff = float(np.percentile(others, self.percentile))
            if math.isnan(best) or best > cutoff:
                out[tid] = StopReason(
                    tid, self.rule,
                    f"best value {best * sign:.4g} at step {step:g} is worse than the "
                    f"{self.percentile:g}th percentile {cutoff * sign:.4g} of {len(others)} "
                    "other trials",
                    {"step": step, "best": best * sign, "cutoff": cutoff * sign,
                     "percentile": self.percentile, "n_compared": len(others),
                     "rank": int((others < best).sum()) + 1},
                )
        return out
