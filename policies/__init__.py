"""Policies: the agents' decision logic, as pure functions of a read-only history.

Searchers choose configurations, early stoppers choose which running trials to stop,
and explanations say why (parameter importance, replays of finished sweeps). Nothing
here touches Ray, the store or the network.

Heavy modules (Optuna, BoTorch, scikit-learn) load on first use, so importing the space
helpers from ``assay`` stays cheap for training scripts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _lazy
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

if TYPE_CHECKING:  # the real names for type checkers; loaded lazily at run time
    from .explain import param_importance, pareto_front, regret_curve
    from .replay import ReplayReport, replay
    from .searchers.basic import GridSearcher, RandomSearcher, SobolSearcher
    from .searchers.gp import BoTorchSearcher
    from .searchers.optuna_based import CMAESSearcher, OptunaSearcher, TPESearcher
    from .stoppers.asha import ASHAStopper, HyperbandStopper
    from .stoppers.compose import AllOf, AnyOf
    from .stoppers.learned import LearnedStopper
    from .stoppers.median import MedianStopper
    from .stoppers.predictor import FailurePredictor
    from .stoppers.rules import (
        DivergenceStopper,
        NonFiniteStopper,
        PatienceStopper,
        ThresholdStopper,
    )

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
    return _lazy.load(__name__, _LAZY, name, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
