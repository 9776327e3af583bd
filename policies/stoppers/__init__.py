"""Early stoppers: which running trials to stop, each with a reason and its evidence.

Rules on a trial's own curve (non-finite values, divergence, thresholds, patience),
rules against the other trials (median, ASHA, Hyperband), a learned rule driven by a
failure predictor, and their composition (AnyOf, AllOf).
"""

from __future__ import annotations

from .asha import ASHAStopper, HyperbandStopper
from .compose import AllOf, AnyOf
from .learned import LearnedStopper
from .median import MedianStopper
from .predictor import FailurePredictor, Prediction
from .rules import DivergenceStopper, NonFiniteStopper, PatienceStopper, ThresholdStopper

__all__ = [
    "ASHAStopper",
    "AllOf",
    "AnyOf",
    "DivergenceStopper",
    "FailurePredictor",
    "HyperbandStopper",
    "LearnedStopper",
    "MedianStopper",
    "NonFiniteStopper",
    "PatienceStopper",
    "Prediction",
    "ThresholdStopper",
]
