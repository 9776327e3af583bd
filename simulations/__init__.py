"""Simulations and small real workloads for demos, tests and benchmarks.

* :class:`CurveSimulator` - learning curves with known ground truth and failure modes.
* :func:`train_digits` - a real MLP on scikit-learn's digits, epoch by epoch.
* :mod:`.pretrain` - the simulated examples the failure predictor ships with.

Torch (for the digits workload) loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .curves import SHAPES, CurveSimulator, SimulatedRun, simulate_sweep

_LAZY = {
    "train_digits": ".digits",
    "DIGITS_SPACE": ".digits",
    "load_digits_split": ".digits",
    "pretrain_examples": ".pretrain",
    "write_pretrained": ".pretrain",
}

__all__ = [
    "DIGITS_SPACE",
    "SHAPES",
    "CurveSimulator",
    "SimulatedRun",
    "load_digits_split",
    "pretrain_examples",
    "simulate_sweep",
    "train_digits",
    "write_pretrained",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
