"""Policies: the agents' decision logic, as pure functions of a read-only history.

Searchers choose configurations, early stoppers choose which running trials to stop,
and explanations say why (parameter importance, replays of finished sweeps). Nothing
here touches Ray, the store or the network.

Heavy modules (Optuna, BoTorch, scikit-learn) load on first use, so importing the space
helpers from ``assay`` stays cheap for training scripts.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import EarlyStopper, Mode, Searcher
from .records import StopReason, Suggestion, TrialResult, TrialStatus
from .space import (
    Choice,
    Fixed,
    Integer,
    LogUniform,
    Param,
    SearchSpace,
    Uniform,
    as_space,
    choice,
    fixed,
    integer,
    loguniform,
    uniform,
)

_LAZY = {
    "GridSearcher": ".searchers.basic",
    "RandomSearcher": ".searchers.basic",
    "SobolSearcher": ".searchers.basic",
    "OptunaSearcher": ".searchers.optuna_based",
    "TPESearcher": ".searchers.optuna_based",
    "CMAESSearcher": ".searchers.optuna_based",
    "BoTorchSearcher": ".searchers.gp",
    "MedianStopper": ".stoppers.median",
    "ASHAStopper": ".stoppers.asha",
    "HyperbandStopper": ".stoppers.asha",
    "NonFiniteStopper": ".stoppers.rules",
    "DivergenceStopper": ".stoppers.rules",
    "ThresholdStopper": ".stoppers.rules",
    "PatienceStopper": ".stoppers.rules",
    "AnyOf": ".stoppers.compose",
    "AllOf": ".stoppers.compose",
    "LearnedStopper": ".stoppers.learned",
    "FailurePredictor": ".stoppers.predictor",
    "param_importance": ".explain",
    "regret_curve": ".explain",
    "pareto_front": ".explain",
    "replay": ".replay",
    "ReplayReport": ".replay",
}

__all__ = [
    "ASHAStopper",
    "AllOf",
    "AnyOf",
    "BoTorchSearcher",
    "CMAESSearcher",
    "Choice",
    "DivergenceStopper",
    "EarlyStopper",
    "FailurePredictor",
    "Fixed",
    "GridSearcher",
    "HyperbandStopper",
    "Integer",
    "LearnedStopper",
    "LogUniform",
    "MedianStopper",
    "Mode",
    "NonFiniteStopper",
    "OptunaSearcher",
    "Param",
    "PatienceStopper",
    "RandomSearcher",
    "ReplayReport",
    "SearchSpace",
    "Searcher",
    "SobolSearcher",
    "StopReason",
    "Suggestion",
    "TPESearcher",
    "ThresholdStopper",
    "TrialResult",
    "TrialStatus",
    "Uniform",
    "as_space",
    "choice",
    "fixed",
    "integer",
    "loguniform",
    "param_importance",
    "pareto_front",
    "regret_curve",
    "replay",
    "uniform",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
