"""The learned stopper: stop a trial that the failure predictor is confident will end
worse than the current top-k, once there is enough evidence to judge."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ...errors import UserInputError
from ..base import EarlyStopper, Mode, running_pool
from ..records import StopReason, TrialResult, TrialStatus
from .features import FEATURES, Context, Curve, curve_features
from .predictor import FailurePredictor, relative_to_value
from .rules import _positive

__all__ = ["DEFAULT_LEADER_THRESHOLD", "DEFAULT_PROTECT_TOP", "DEFAULT_THRESHOLD", "LearnedStopper"]

DEFAULT_THRESHOLD: tuple[tuple[float, float], ...] = ((0.1, 0.9), (0.3, 0.8))
"""Default ``threshold`` schedule: (budget fraction, probability needed to stop)."""
_Meta = tuple[str, float, float, float, float, bool]
"""A candidate's trial id, step, centre, spread, top-k reference and whether it leads."""

DEFAULT_PROTECT_TOP = 0.33
"""Default ``protect_top``: the share of leaders at their step that the ordinary
threshold never stops."""
DEFAULT_LEADER_THRESHOLD: tuple[float, float] | None = (0.3, 0.995)
"""Default ``leader_threshold``: (budget fraction, probability) from which, and with which,
a leader may still be stopped."""


class LearnedStopper(EarlyStopper):
    """Stops trials the :class:`FailurePredictor` expects to miss the top-k.

    A running trial is stopped when the calibrated probability that its final value is
    worse than the k-th best finished trial reaches ``threshold`` and the minimum-evidence
    rule holds: at least ``min_points`` curve points, ``min_fraction`` of the budget done,
    and ``top_k`` trials to compare with. Every reason carries the predicted
    final value with its 10-90% interval, the probability, the reference value and the
    curve features.

    ``threshold`` and ``protect_top`` may be schedules over the budget fraction, given as
    ``[(fraction, value), ...]`` (piecewise linear, flat before the first and after the
    last fraction). The default threshold is one: early on, when a trial is judged on few
    points, a probability of 0.9 is needed; from 30% of the budget 0.8 is enough, so
    mediocre runs stop mid-way instead of running in full. The leaders' guard stays at the
    best third throughout (narrowing it later in the budget saved more but lost the best
    trial more often on held-out digits sweeps: near-ties among the leaders); instead, from
    30% of the budget a leader is stopped at a probability of 0.995 or more. On the tuning
    sweeps that saved 2.9 more points of compute on simulated sweeps and 0.5 on digits
    without losing the best trial once more.

    Args:
        predictor: A fitted predictor; default :meth:`FailurePredictor.pretrained`.
        threshold: Probability of ending worse than the top-k needed to stop: a number
            in (0, 1], or a schedule of ``(budget_fraction, probability)`` pairs.
        mode: ``"min"`` or ``"max"``.
        max_step: The full budget of a trial (its last step); default: the longest
            curve in the history.
        top_k: The k of "the current top-k".
        min_points: Curve points a trial needs before it can be stopped.
        min_fraction: Fraction of ``max_step`` a trial must have run.
        count_running: Let other running trials' best values so far stand in for finals
            in the top-k reference (conservative: they can only improve), so stopping can
            start before the first trial finishes.
        require_interval: Also require the optimistic end of the predicted interval to
            be worse than the reference (more conservative).
        protect_top: Never stop a trial whose best value so far ranks in this top
            fraction of the trials compared at its step (the leaders are the costliest to
            stop by mistake; 0 disables the guard): a number in [0, 1), or a schedule of
            ``(budget_fraction, share)`` pairs.
        confirm: Prefixes of the curve (the latest and ``confirm - 1`` before it) that must
            all reach ``threshold``, so one noisy point does not decide a stop.
        leader_threshold: ``(budget_fraction, probability)``: from that fraction of the
            budget on, a leader (see ``protect_top``) is stopped when the probability
            reaches this much stricter bar - a trial in the top third whose curve has
            flattened far from the reference still wastes the rest of its budget.
            ``None`` never stops a leader.

    The defaults were chosen on tuning sweeps apart from those ``bench/bench_stoppers.py``
    reports: simulated seeds 500-899, the training half of its digits pool, and a second,
    independently trained pool of 400 digits runs; see the figures the benchmark prints. On simulated sweeps a few
    percent of sweeps are won by a plateau or late-blooming run that looks hopeless at
    10% of the budget; no curve-based rule that saves much can keep those.
    """

    rule = "learned"

    def __init__(
        self,
        predictor: FailurePredictor | None = None,
        threshold: float | Sequence[tuple[float, float]] = DEFAULT_THRESHOLD,
        *,
        mode: Mode | str = "min",
        max_step: float | None = None,
        top_k: int = 1,
        min_points: int = 2,
        min_fraction: float = 0.1,
        count_running: bool = True,
        require_interval: bool = False,
        protect_top: float | Sequence[tuple[float, float]] = DEFAULT_PROTECT_TOP,
        confirm: int = 2,
        leader_threshold: tuple[float, float] | None = DEFAULT_LEADER_THRESHOLD,
    ) -> None:
        super().__init__(mode=mode)
        if predictor is not None and not isinstance(predictor, FailurePredictor):
            raise UserInputError(f"predictor must be a FailurePredictor, got {type(predictor).__name__}")
        self._threshold = _schedule("threshold", threshold, lo=0.0, hi=1.0, lo_open=True)
        if isinstance(min_fraction, bool) or not isinstance(min_fraction, int | float) or not (
            0 <= min_fraction < 1
        ):
            raise UserInputError(f"min_fraction must be in [0, 1), got {min_fraction!r}")
        self.predictor = predictor if predictor is not None else FailurePredictor.pretrained()
        if not self.predictor.is_fitted:
            raise UserInputError("the predictor is not fitted", hint="fit it, or pass None for the pretrained one")
        self.threshold = float(threshold) if isinstance(threshold, int | float) else tuple(
            (float(f), float(v)) for f, v in threshold
        )
        self.max_step = None if max_step is None else float(_positive("max_step", max_step))
        self.top_k = _positive("top_k", top_k, integer=True)
        self.min_points = _positive("min_points", min_points, integer=True)
        self.min_fraction = float(min_fraction)
        self.count_running = bool(count_running)
        self.require_interval = bool(require_interval)
        self._protect = _schedule("protect_top", protect_top, lo=0.0, hi=1.0, hi_open=True)
        self.protect_top = float(protect_top) if isinstance(protect_top, int | float) else tuple(
            (float(f), float(v)) for f, v in protect_top
        )
        self.confirm = _positive("confirm", confirm, integer=True)
        self.leader_threshold = _leader_threshold(leader_threshold)

    def _need(self, fraction: float, leader: bool) -> float:
        """The probability needed to stop at ``fraction`` of the budget (inf: never)."""
        if not leader:
            return self._threshold(fraction)
        if self.leader_threshold is None or fraction < self.leader_threshold[0]:
            return math.inf
        return max(self.leader_threshold[1], self._threshold(fraction))

    def _confirmed(
        self, hits: list[int], meta: list[_Meta],
        curves: dict[str, Curve], pool: dict[str, TrialResult], max_step: float,
    ) -> list[int]:
        return _confirmed_impl(self, hits, meta, curves, pool, max_step)

    def should_stop(
        self, history: Sequence[TrialResult], running: Iterable[str | TrialResult] | None = None
    ) -> dict[str, StopReason]:
        pool, ids = running_pool(history, running)
        max_step = self.max_step or max(
            (t.curve[-1][0] for t in pool.values() if t.curve), default=1.0
        )
        sign = self.mode.sign()
        finals = {
            t.trial_id: t.value * sign for t in pool.values()
            if t.status is TrialStatus.COMPLETED and t.value is not None and math.isfinite(t.value)
        }
        # Running trials count with the best value they already reached: a conservative
        # stand-in for their final, so the rule can act before the first trial finishes.
        reached = {}
        if self.count_running:
            for tid in ids:
                vals = [v * sign for _, v in pool[tid].curve if math.isfinite(v)]
                if vals:
                    reached[tid] = min(vals)
        if len(finals) + max(len(reached) - 1, 0) < self.top_k:
            return {}
        curves = {tid: Curve.of(t, self.mode) for tid, t in pool.items() if t.curve}
        rows: list[np.ndarray] = []
        meta: list[_Meta] = []
        for tid in ids:
            t = pool[tid]
            finite = [v for _, v in t.curve if math.isfinite(v)]
            if len(finite) < self.min_points or not t.curve:
                continue
            step = t.curve[-1][0]
            if step < self.min_fraction * max_step or step >= max_step:
                continue
            refs = sorted([*finals.values(), *(v for o, v in reached.items() if o != tid)])
            if len(refs) < self.top_k:
                continue
            reference = refs[self.top_k - 1]
            pop = _population(curves, pool, tid, step)
            feats, center, spread = curve_features(
                curves[tid], step, max_step, Context(pop, reference, self.top_k)
            )
            rank = feats[FEATURES.index("rank")]
            # A leader at this step is the costliest trial to stop by mistake: it needs the
            # (much stricter) leader threshold, or is never stopped.
            leader = bool(pop.size and rank < self._protect(step / max_step))
            if leader and not math.isfinite(self._need(step / max_step, True)):
                continue
            rows.append(feats)
            meta.append((tid, step, center, spread, reference, leader))
        if not rows:
            return {}
        X = np.vstack(rows)
        probs = self.predictor.predict_probability(X)
        hits = [i for i, p in enumerate(probs) if p >= self._need(meta[i][1] / max_step, meta[i][5])]
        hits = self._confirmed(hits, meta, curves, pool, max_step)
        if not hits:
            return {}
        # Quantiles only for the trials about to be stopped: they are the evidence.
        qs = self.predictor.predict_quantiles(X[hits])
        out: dict[str, StopReason] = {}
        for j, i in enumerate(hits):
            tid, step, center, spread, reference, leader = meta[i]
            p = float(probs[i])
            lower, med, upper = (float(q) for q in qs[:, j])
            optimistic = min(lower, med) * spread + center
            if self.require_interval and not optimistic > reference:
                continue  # the optimistic end of the interval still beats the reference
            median, lo, hi = (relative_to_value(r, center, spread, self.mode)
                              for r in (med, lower, upper))
            bounds = sorted([lo, hi])
            ref_value = reference * sign
            out[tid] = StopReason(
                tid, self.rule,
                f"{p:.0%} likely to end worse than the current top-{self.top_k} "
                f"({ref_value:.4g}); predicted final {median:.4g} "
                f"[{bounds[0]:.4g}, {bounds[1]:.4g}] at step {step:g} of {max_step:g}"
                + (" (a leader at its step: held to the leader threshold)" if leader else ""),
                _evidence(p, median, bounds, ref_value, self, step, max_step, rows[i], leader),
            )
        return out


def _confirmed_impl(
    stopper: LearnedStopper, hits: list[int], meta: list[_Meta],
    curves: dict[str, Curve], pool: dict[str, TrialResult], max_step: float,
) -> list[int]:
    """Keep the hits whose earlier prefixes (``confirm - 1`` points back) also reach the
    threshold: one noisy point must not decide a stop."""
    for back in range(1, stopper.confirm):
        if not hits:
            break
        rows, keep, need = [], [], []
        for i in hits:
            tid, _, _, _, reference, leader = meta[i]
            c = curves[tid]
            if c.steps.size <= back:
                continue
            step = float(c.steps[-1 - back])
            pop = _population(curves, pool, tid, step)
            rows.append(curve_features(c, step, max_step, Context(pop, reference, stopper.top_k))[0])
            keep.append(i)
            need.append(stopper._need(step / max_step, leader))
        if not rows:
            return []
        probs = stopper.predictor.predict_probability(np.vstack(rows))
        hits = [i for i, p, t in zip(keep, probs, need) if p >= t]
    return hits


class _Schedule:
    """A value, constant or piecewise-linear in the budget fraction (flat past the ends)."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float]) -> None:
        self.xs, self.ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)

    def __call__(self, fraction: float) -> float:
        return float(np.interp(fraction, self.xs, self.ys))


def _schedule(
    name: str, value: Any, *, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False
) -> _Schedule:
    """Validate a number, or ``[(budget_fraction, value), ...]`` with increasing fractions
    in [0, 1], every value in the range (``lo``/``hi`` excluded when open)."""

    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not ok(value):
            raise UserInputError(f"{name} must be in {span}, got {value!r}")
        return _Schedule([0.0], [float(value)])
    hint = "a number, or pairs (budget_fraction, value) like [(0.1, 0.99), (0.5, 0.9)]"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise UserInputError(f"{name} must be a number or a non-empty schedule, got {value!r}",
                             hint=hint)
    xs: list[float] = []
    ys: list[float] = []
    for pair in value:
        if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise UserInputError(f"{name} schedule entries must be (budget_fraction, value) "
                                 f"pairs, got {pair!r}", hint=hint)
        f, v = pair
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 <= f <= 1:
            raise UserInputError(f"{name} schedule fractions must be in [0, 1], got {f!r}")
        if not ok(v):
            raise UserInputError(f"{name} schedule values must be in {span}, got {v!r}")
        if xs and f <= xs[-1]:
            raise UserInputError(f"{name} schedule fractions must increase, got {value!r}")
        xs.append(float(f))
        ys.append(float(v))
    return _Schedule(xs, ys)


def _leader_threshold(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    hint = "pass (budget_fraction, probability), e.g. (0.3, 0.995), or None to never stop a leader"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
        raise UserInputError(f"leader_threshold must be a (budget_fraction, probability) pair, "
                             f"got {value!r}", hint=hint)
    f, p = value
    for name, v, lo, hi in (("budget fraction", f, 0.0, 1.0), ("probability", p, 0.0, 1.0)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise UserInputError(f"leader_threshold {name} must be in [{lo:g}, {hi:g}], "
                                 f"got {v!r}", hint=hint)
    if p == 0:
        raise UserInputError("leader_threshold probability must be above 0", hint=hint)
    return float(f), float(p)


def _population(
    curves: dict[str, Curve], pool: dict[str, TrialResult], exclude: str, step: float
) -> np.ndarray:
    """Other trials' best values at ``step`` (as :func:`.._history.population_at`)."""
    vals = [
        c.best_until(step) for tid, c in curves.items()
        if tid != exclude and (c.steps[-1] >= step or pool[tid].status.is_finished)
    ]
    arr = np.asarray(vals, dtype=float)
    return arr[np.isfinite(arr)]


def _evidence(
    p: float, median: float, bounds: list[float], ref: float, s: LearnedStopper,
    step: float, max_step: float, feats: np.ndarray, leader: bool,
) -> dict[str, Any]:
    return {
        "probability_worse": p,
        "threshold": s._need(step / max_step, leader),
        "leader": leader,
        "predicted_final": median,
        "interval": bounds,
        "interval_level": 0.8,
        "reference": ref,
        "top_k": s.top_k,
        "step": step,
        "budget_fraction": step / max_step,
        "features": {name: float(v) for name, v in zip(FEATURES, feats)},
        "model": s.predictor.source,
    }
