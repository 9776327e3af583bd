"""Hard rules: stop a trial on evidence from its own curve alone.

* :class:`NonFiniteStopper` - the metric became NaN or infinite.
* :class:`DivergenceStopper` - the curve went back past where it started.
* :class:`ThresholdStopper` - not good enough by a given step.
* :class:`PatienceStopper` - no improvement for a number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import UserInputError
from .._history import best_until, oriented_curve
from ..base import EarlyStopper, Mode, running_pool
from ..records import StopReason, TrialResult

__all__ = ["DivergenceStopper", "NonFiniteStopper", "PatienceStopper", "ThresholdStopper"]


def _positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> Any:
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or (
        value < 0 if allow_zero else value <= 0
    ):
        kind = "int" if integer else "number"
        raise UserInputError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                             f"{kind}, got {value!r}")
    return value


class NonFiniteStopper(EarlyStopper):
    """Stops a trial whose latest metric value is NaN or infinite (it diverged)."""

    rule = "non_finite"

    def should_stop(
        self, history: Sequence[TrialResult], running: Iterable[str | TrialResult] | None = None
    ) -> dict[str, StopReason]:
        pool, ids = running_pool(history, running)
        out: dict[str, StopReason] = {}
        for tid in ids:
            t = pool[tid]
            if t.curve and not math.isfinite(t.curve[-1][1]):
                step, value = t.curve[-1]
                out[tid] = StopReason(
                    tid, self.rule, f"metric is {value} at step {step:g}: the run diverged",
                    {"step": step, "value": value, "points": len(t.curve)},
                )
        return out


class DivergenceStopper(EarlyStopper):
    """Stops a trial whose curve regressed past its starting value.

    With oriented values (lower is better), a trial diverges when its last ``patience``
    values are all worse than ``best + ratio * (first - best)``: with ``ratio=1`` it is
    back where it started after having improved.

    Args:
        mode: ``"min"`` or ``"max"``.
        ratio: Fraction of the improvement so far that the curve may give back.
        patience: Consecutive points that must be past the line.
        min_points: Points needed before the rule applies.
    """

    rule = "divergence"

    def __init__(
        self, *, mode: Mode | str = "min", ratio: float = 1.0, patience: int = 2,
        min_points: int = 3,
    ) -> None:
        super().__init__(mode=mode)
        self.ratio = _positive("ratio", ratio)
        self.patience = _positive("patience", patience, integer=True)
        self.min_points = _positive("min_points", min_points, integer=True)

    def should_stop(
        self, history: Sequence[TrialResult], running: Iterable[str | TrialResult] | None = None
    ) -> dict[str, StopReason]:
        pool, ids = running_pool(history, running)
        out: dict[str, StopReason] = {}
        for tid in ids:
            steps, values = oriented_curve(pool[tid], self.mode)
            finite = values[np.isfinite(values)]
            if len(values) < max(self.min_points, self.patience + 1) or not finite.size:
                continue
            first, best = float(finite[0]), float(finite.min())
            line = best + self.ratio * max(first - best, 0.0)
            tail = values[-self.patience :]
            # NaN compares False: a NaN tail is the non-finite rule's business.
            if first > best and np.all(tail > line):
                sign = self.mode.sign()
                out[tid] = StopReason(
                    tid, self.rule,
                    f"last {self.patience} values are past the divergence line "
                    f"{line * sign:.4g} (best {best * sign:.4g}, first {first * sign:.4g})",
                    {"step": float(steps[-1]), "line": line * sign, "best": best * sign,
                     "first": first * sign, "last": [float(v) * sign for v in tail]},
                )
        return out


class ThresholdStopper(EarlyStopper):
    """Stops a trial that is not good enough by a given step.

    Args:
        thresholds: ``{step: value}``: from ``step`` on, the trial's best so far must be
            at least as good as ``value`` (``<=`` for min, ``>=`` for max).
        mode: ``"min"`` or ``"max"``.
    """

    rule = "threshold"

    def __init__(self, thresholds: Mapping[float, float], *, mode: Mode | str = "min") -> None:
        super().__init__(mode=mode)
        if not isinstance(thresholds, Mapping) or not thresholds:
            raise UserInputError("thresholds must be a non-empty {step: value} mapping")
        parsed = {}
        for step, value in thresholds.items():
            try:
                s, v = float(step), float(value)
            except (TypeError, ValueError):
                raise UserInputError(f"threshold {step!r}: {value!r} is not numeric") from None
            if not (math.isfinite(s) and math.isfinite(v)):
                raise UserInputError(f"threshold {step!r}: {value!r} must be finite")
            parsed[s] = v
        self.thresholds = dict(sorted(parsed.items()))

    def should_stop(
        self, history: Sequence[TrialResult], running: Iterable[str | TrialResult] | None = None
    ) -> dict[str, StopReason]:
        pool, ids = running_pool(history, running)
        sign = self.mode.sign()
        out: dict[str, StopReason] = {}
        for tid in ids:
            steps, values = oriented_curve(pool[tid], self.mode)
            if not steps.size:
                continue
            applicable = [(s, v) for s, v in self.thresholds.items() if s <= steps[-1]]
            if not applicable:
                continue
            at, limit = applicable[-1]
            best = best_until(steps, values, float(steps[-1]))
            if math.isnan(best) or best > limit * sign:
                word = "above" if self.mode is Mode.MIN else "below"
                out[tid] = StopReason(
                    tid, self.rule,
                    f"best value {best * sign:.4g} is {word} the threshold {limit:.4g} "
                    f"required from step {at:g}",
                    {"step": float(steps[-1]), "threshold_step": at, "threshold": limit,
                     "best": best * sign},
                )
        return out


class PatienceStopper(EarlyStopper):
    """Stops a trial whose best value has not improved for ``patience`` steps.

    Args:
        mode: ``"min"`` or ``"max"``.
        patience: Steps without an improvement larger than ``min_delta``.
        min_delta: Smallest change that counts as an improvement.
    """

    rule = "patience"

    def __init__(
        self, *, mode: Mode | str = "min", patience: float = 10, min_delta: float = 0.0
    ) -> None:
        super().__init__(mode=mode)
        self.patience = _positive("patience", patience)
        self.min_delta = _positive("min_delta", min_delta, allow_zero=True)

    def should_stop(
        self, history: Sequence[TrialResult], running: Iterable[str | TrialResult] | None = None
    ) -> dict[str, StopReason]:
        pool, ids = running_pool(history, running)
        out: dict[str, StopReason] = {}
        for tid in ids:
            steps, values = oriented_curve(pool[tid], self.mode)
            if not steps.size or steps[-1] - steps[0] < self.patience:
                continue
            cut = steps[-1] - self.patience
            before = best_until(steps, values, cut)
            after = best_until(steps, values, float(steps[-1]))
            if math.isfinite(before) and not after < before - self.min_delta:
                sign = self.mode.sign()
                out[tid] = StopReason(
                    tid, self.rule,
                    f"no improvement beyond {self.min_delta:g} in the last {self.patience:g} "
                    f"steps (best {after * sign:.4g})",
                    {"step": float(steps[-1]), "best_before": before * sign,
                     "best_now": after * sign},
                )
        return out
