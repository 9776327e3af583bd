"""Simulations and small real workloads for demos, tests and benchmarks.

* :class:`CurveSimulator` - learning curves with known ground truth and failure modes.
* :func:`train_digits` - a real MLP on scikit-learn's digits, epoch by epoch.
* :mod:`.pretrain` - the simulated examples the failure predictor ships with.

Torch (for the digits workload) loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _lazy
from .curves import SHAPES, CurveSimulator, SimulatedRun, simulate_sweep

_LAZY = {
    "train_digits": ".digits",
    "DIGITS_SPACE": ".digits",
    "load_digits_split": ".digits",
    "pretrain_examples": ".pretrain",
    "write_pretrained": ".pretrain",
}

if TYPE_CHECKING:  # the real names for type checkers; loaded lazily at run time
    from .digits import DIGITS_SPACE, load_digits_split, train_digits
    from .pretrain import pretrain_examples, write_pretrained

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
    return _lazy.load(__name__, _LAZY, name, globals())
