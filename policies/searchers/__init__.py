"""Searchers: which configuration to run next.

Model-free (grid, random, Sobol), Optuna's samplers through ask/tell (TPE, CMA-ES, any
sampler), and BoTorch Gaussian-process batch Bayesian optimisation.
"""

from __future__ import annotations

from .basic import GridSearcher, RandomSearcher, SobolSearcher
from .gp import BoTorchSearcher
from .optuna_based import CMAESSearcher, OptunaSearcher, TPESearcher

__all__ = [
    "BoTorchSearcher",
    "CMAESSearcher",
    "GridSearcher",
    "OptunaSearcher",
    "RandomSearcher",
    "SobolSearcher",
    "TPESearcher",
]
