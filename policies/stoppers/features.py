"""Features of a partial learning curve, relative to the other trials of its sweep.

Every feature is scale-free (ranks, fractions, or values divided by a robust spread of
the sweep at the same step), so one model transfers between metrics and projects: the
model shipped with assay is trained on simulated curves and refined on a project's own.
Values are oriented so lower is better.

The same code builds training examples from finished sweeps (:func:`sweep_examples`) and
features of running trials (:func:`curve_features`), so training and use cannot drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..base import Mode
from ..records import TrialResult, TrialStatus

__all__ = ["FEATURES", "TOP_KS", "Context", "Curve", "curve_features", "sweep_examples"]

FEATURES: tuple[str, ...] = (
    "budget_fraction",  # step / max_step
    "log_points",  # log(1 + points so far)
    "rank",  # share of the other trials better at this step (0 = leader)
    "z_best",  # (best so far - sweep median at step) / spread
    "z_last",  # (last value - sweep median at step) / spread
    "z_gap_leader",  # (best so far - best of the others at step) / spread
    "z_gap_ref",  # (best so far - current top-k final) / spread
    "progress",  # (first - best so far) / spread: how far it has come
    "slope",  # recent slope per unit of budget / spread (negative = improving)
    "curvature",  # change of slope between the older and recent halves / spread
    "noise",  # residual spread of the recent points / spread
    "z_extrap_log",  # value extrapolated to max_step along a fit on log(step), vs median
    "z_extrap_pow",  # extrapolated along a fit on step**-0.5, vs the median
    "z_extrap_gap_ref",  # the more optimistic extrapolation minus the top-k reference
    "zl_gap_ref",  # best so far minus the reference, in units of the leaders' spread
    "zl_extrap_gap_ref",  # optimistic extrapolation minus the reference, same units
    "log_top_k",  # log k of the "top-k" reference
    "log_population",  # log(1 + trials compared at this step)
)

TOP_KS = (1, 2, 3, 5)
"""The k values training examples are drawn with (k is a feature, so any k works)."""


@dataclass(frozen=True)
class Curve:
    """An oriented curve with its running best, for fast ``best until step`` lookups."""

    steps: np.ndarray
    values: np.ndarray
    best: np.ndarray

    @classmethod
    def of(cls, trial: TrialResult, mode: Mode) -> Curve:
        if not trial.curve:
            e = np.empty(0)
            return cls(e, e, e)
        arr = np.asarray(trial.curve, dtype=float)
        values = arr[:, 1] * mode.sign()
        finite = np.where(np.isfinite(values), values, np.inf)
        return cls(arr[:, 0], values, np.minimum.accumulate(finite))

    def best_until(self, step: float) -> float:
        i = int(np.searchsorted(self.steps, step, side="right")) - 1
        if i < 0 or not math.isfinite(self.best[i]):
            return math.nan
        return float(self.best[i])


@dataclass(frozen=True)
class Context:
    """What the other trials say at a step: their best values and the top-k reference."""

    population: np.ndarray
    reference: float  # k-th best final among finished trials; NaN when fewer than k
    top_k: int


def _spread(values: np.ndarray, own: float, own_range: float) -> tuple[float, float]:
    """Centre and robust spread of the sweep at a step (quartiles, never the range: one
    exploding run must not flatten every feature)."""
    pts = values[np.isfinite(values)]
    if math.isfinite(own):
        pts = np.append(pts, own)
    if pts.size >= 2:
        q25, q50, q75 = np.percentile(pts, [25, 50, 75])
        mad = 1.4826 * float(np.median(np.abs(pts - q50)))
        spread = max(q75 - q25, mad)
        center = float(q50)
    else:
        center = own if math.isfinite(own) else 0.0
        spread = 0.0
    if spread <= 0:
        spread = own_range
    floor = 1e-9 + 1e-3 * abs(center)
    return center, float(max(spread, floor))


def curve_features(
    curve: Curve, step: float, max_step: float, ctx: Context
) -> tuple[np.ndarray, float, float]:
    """Features of ``curve`` up to ``step``.

    Returns:
        The feature vector (order of :data:`FEATURES`; NaN where undefined), and the
        ``center`` and ``spread`` that turn a relative prediction back into a value.
    """
    n = int(np.searchsorted(curve.steps, step, side="right"))
    steps, values = curve.steps[:n], curve.values[:n]
    ok = np.isfinite(values)
    fs, fv = steps[ok], values[ok]
    best = curve.best_until(step)
    last = float(fv[-1]) if fv.size else math.nan
    first = float(fv[0]) if fv.size else math.nan
    own_range = float(np.subtract(*np.percentile(fv, [90, 10]))) if fv.size >= 2 else 0.0
    pop = ctx.population
    center, spread = _spread(pop, best, own_range)
    slope = curvature = noise = math.nan
    if fv.size >= 3:
        x = fs / max_step
        m = max(3, math.ceil(0.4 * fv.size))
        xr, yr = x[-m:], fv[-m:]
        if np.ptp(xr) > 0:
            coef = np.polyfit(xr, yr, 1)
            slope = coef[0] / spread
            noise = float(np.std(yr - np.polyval(coef, xr))) / spread
        half = fv.size // 2
        if half >= 2 and np.ptp(x[:half]) > 0 and np.ptp(x[half:]) > 0:
            s_old = np.polyfit(x[:half], fv[:half], 1)[0]
            s_new = np.polyfit(x[half:], fv[half:], 1)[0]
            curvature = (s_new - s_old) / spread
    extrap_log = extrap_pow = math.nan
    if fv.size >= 3:
        m = max(3, fv.size // 2)
        ts, ys = fs[-m:], fv[-m:]
        for basis, target in ((np.log, "log"), (lambda t: t ** -0.5, "pow")):
            bx = basis(np.maximum(ts, 1e-9))
            if np.ptp(bx) > 0:
                coef = np.polyfit(bx, ys, 1)
                guess = float(np.polyval(coef, basis(np.asarray(max_step, dtype=float))))
                # Curves flatten: never extrapolate past the best or beyond a full spread.
                guess = min(guess, best) if math.isfinite(best) else guess
                if target == "log":
                    extrap_log = guess
                else:
                    extrap_pow = guess
    optimistic = np.nanmin([extrap_log, extrap_pow]) if fv.size >= 3 else math.nan
    pop_f = pop[np.isfinite(pop)]
    # The spread among the leaders (best quarter): the scale on which the top-k race is
    # decided, which a sweep full of hopeless runs would otherwise drown.
    lead = np.append(pop_f, best) if math.isfinite(best) else pop_f
    lead_scale = float(np.percentile(lead, 25) - lead.min()) if lead.size >= 4 else math.nan
    if not lead_scale > 0:
        lead_scale = spread
    lead_scale = max(lead_scale, 1e-9 + 1e-3 * abs(center))
    has_ref = math.isfinite(ctx.reference)
    feats = np.array(
        [
            step / max_step,
            math.log1p(n),
            float((pop_f < best).mean()) if pop_f.size and math.isfinite(best) else math.nan,
            (best - center) / spread,
            (last - center) / spread,
            (best - pop_f.min()) / spread if pop_f.size else math.nan,
            (best - ctx.reference) / spread if math.isfinite(ctx.reference) else math.nan,
            (first - best) / spread,
            slope,
            curvature,
            noise,
            (extrap_log - center) / spread,
            (extrap_pow - center) / spread,
            (optimistic - ctx.reference) / spread if has_ref else math.nan,
            (best - ctx.reference) / lead_scale if has_ref else math.nan,
            (optimistic - ctx.reference) / lead_scale if has_ref else math.nan,
            math.log(ctx.top_k),
            math.log1p(pop_f.size),
        ],
        dtype=float,
    )
    return np.clip(feats, -1e3, 1e3), center, spread


def _final(trial: TrialResult, mode: Mode) -> float:
    """Oriented final value; +inf for a diverged trial; NaN when unusable."""
    if trial.curve and not math.isfinite(trial.curve[-1][1]):
        return math.inf
    v = trial.value
    if trial.status is not TrialStatus.COMPLETED or v is None:
        return math.nan
    return v * mode.sign() if math.isfinite(v) else math.inf


def sweep_examples(
    sweep: Sequence[TrialResult],
    mode: Mode,
    max_step: float,
    rng: np.random.Generator,
    *,
    points_per_trial: int = 12,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training examples from one finished sweep, in completion order.

    Trial ``i`` is seen as it was mid-run: compared with trials ``0..i-1`` (finished
    before it) at a few prefixes of its curve, with ``k`` drawn from :data:`TOP_KS`.

    Returns:
        Features (rows of :data:`FEATURES`), the final value relative to the prefix
        (``(final - center) / spread``; NaN for diverged trials), and whether the trial
        ended worse than the top-k reference (NaN when fewer than ``k`` finished before).
    """
    curves = [Curve.of(t, mode) for t in sweep]
    finals = np.array([_final(t, mode) for t in sweep])
    rows: list[np.ndarray] = []
    rel: list[float] = []
    fail: list[float] = []
    for i, trial in enumerate(sweep):
        c = curves[i]
        if not math.isfinite(finals[i]) and finals[i] != math.inf:
            continue  # crashed or unfinished: its end says nothing about its quality
        if c.steps.size < 2:
            continue
        done = finals[:i][np.isfinite(finals[:i])]
        prefixes = c.steps[:-1]
        if prefixes.size > points_per_trial:
            prefixes = np.sort(rng.choice(prefixes, points_per_trial, replace=False))
        for step in prefixes:
            k = int(rng.choice(TOP_KS))
            ref = float(np.sort(done)[k - 1]) if done.size >= k else math.nan
            pop = np.array([curves[j].best_until(step) for j in range(i)])
            feats, center, spread = curve_features(c, float(step), max_step, Context(pop, ref, k))
            rows.append(feats)
            rel.append((finals[i] - center) / spread if math.isfinite(finals[i]) else math.nan)
            fail.append(float(finals[i] > ref) if math.isfinite(ref) else math.nan)
    if not rows:
        return np.zeros((0, len(FEATURES))), np.zeros(0), np.zeros(0)
    return np.vstack(rows), np.clip(np.asarray(rel), -1e3, 1e3), np.asarray(fail)
