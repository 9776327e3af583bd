"""Explanations over a sweep: parameter importance, regret curves, Pareto fronts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import UserInputError
from .base import Mode, check_history
from .records import TrialResult, TrialStatus
from .space import SearchSpace, as_space

__all__ = ["param_importance", "pareto_front", "pareto_mask", "regret_curve"]


def pareto_mask(Y: np.ndarray) -> np.ndarray:
    """Rows of ``Y`` (every column to maximise) that no other row dominates."""
    Y = np.asarray(Y, dtype=float)
    mask = np.ones(Y.shape[0], dtype=bool)
    for i in range(Y.shape[0]):
        dominated = np.all(Y >= Y[i], axis=1) & np.any(Y > Y[i], axis=1)
        mask[i] = not dominated.any()
    return mask


def param_importance(
    history: Sequence[TrialResult],
    space: SearchSpace | Mapping[str, Any],
    *,
    mode: Mode | str = "min",
    metric: str | None = None,
    evaluator: str = "fanova",
    seed: int = 0,
) -> dict[str, float]:
    """How much each parameter explains the objective's variation over a finished sweep.

    Builds an in-memory Optuna study from the completed trials and runs Optuna's
    importance evaluators. Conditional parameters count only when active in every
    trial (Optuna's rule).

    Args:
        history: The sweep's trials (unfinished and failed ones are ignored).
        space: The sweep's search space.
        mode: Direction of the objective.
        metric: Objective name in ``TrialResult.metrics``; None uses the trial value.
        evaluator: ``"fanova"`` (functional ANOVA on a random forest),
            ``"mean_decrease_impurity"``, or ``"ped_anova"``.
        seed: Seed of the evaluator.

    Returns:
        ``{parameter: importance}``, importances summing to 1, most important first.

    Raises:
        UserInputError: with fewer than two usable trials or an unknown evaluator.
    """
    import optuna.importance as oi

    from .searchers.optuna_based import _quiet, build_study

    evaluators = {
        "fanova": lambda: oi.FanovaImportanceEvaluator(seed=seed),
        "mean_decrease_impurity": lambda: oi.MeanDecreaseImpurityImportanceEvaluator(seed=seed),
        "ped_anova": lambda: oi.PedAnovaImportanceEvaluator(),
    }
    if evaluator not in evaluators:
        raise UserInputError(
            f"unknown importance evaluator {evaluator!r}", hint=f"use one of {sorted(evaluators)}"
        )
    space = as_space(space)
    history = [t for t in check_history(history) if t.status is TrialStatus.COMPLETED]
    study, _ = build_study(history, space, [Mode.parse(mode)], [metric])
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        raise UserInputError(
            f"parameter importance needs at least 2 completed trials with a finite value, "
            f"got {len(complete)}"
        )
    if not space.tunable:
        return {}
    with _quiet():
        result = oi.get_param_importances(study, evaluator=evaluators[evaluator]())
    return {k: float(v) for k, v in result.items()}


def regret_curve(
    history: Sequence[TrialResult],
    *,
    mode: Mode | str = "min",
    metric: str | None = None,
    optimum: float | None = None,
) -> list[dict[str, Any]]:
    """Best value so far after each trial, in history order, with its regret if known.

    Returns:
        One dict per trial: ``trial``, ``trial_id``, ``value`` (None when unusable),
        ``best``, and ``regret`` (``|best - optimum|``) when ``optimum`` is given.
    """
    mode = Mode.parse(mode)
    sign = mode.sign()
    best = math.inf
    out = []
    for i, t in enumerate(check_history(history)):
        v = t.metric(metric) if t.status in (TrialStatus.COMPLETED, TrialStatus.STOPPED) else None
        usable = v is not None and math.isfinite(v)
        if usable:
            best = min(best, v * sign)  # type: ignore[operator]
        row: dict[str, Any] = {
            "trial": i + 1, "trial_id": t.trial_id, "value": v if usable else None,
            "best": best * sign if math.isfinite(best) else None,
        }
        if optimum is not None:
            row["regret"] = abs(best * sign - optimum) if math.isfinite(best) else None
        out.append(row)
    return out


def pareto_front(
    history: Sequence[TrialResult],
    objectives: Mapping[str | None, Mode | str],
) -> list[TrialResult]:
    """Completed trials that no other completed trial dominates on ``objectives``.

    Args:
        history: The trials.
        objectives: ``{metric: mode}``; ``None`` names the trial's objective value.
    """
    if not objectives:
        raise UserInputError("pareto_front needs at least one objective")
    names = list(objectives)
    signs = np.array([1.0 if Mode.parse(m) is Mode.MAX else -1.0 for m in objectives.values()])
    rows, trials = [], []
    for t in check_history(history):
        if t.status is not TrialStatus.COMPLETED:
            continue
        vals = [t.metric(n) for n in names]
        if all(v is not None and math.isfinite(v) for v in vals):
            rows.append(vals)
            trials.append(t)
    if not rows:
        return []
    mask = pareto_mask(np.asarray(rows, dtype=float) * signs)
    return [t for t, keep in zip(trials, mask) if keep]
