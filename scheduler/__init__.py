"""How trials run: backends, clocks, metric sources and budget accounting.

``RayBackend`` and ``StoreMetricSource`` load on first use, so simulations (``SimBackend``)
never import Ray or LanceDB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _lazy
from .base import (
    Backend,
    EventKind,
    MetricSource,
    Points,
    Resources,
    TargetKind,
    TrialEvent,
    TrialSpec,
    Usage,
)
from .budget import Budget, BudgetLedger, Remaining, format_duration, parse_duration
from .clock import Clock, RealClock, SimClock
from .sim_backend import (
    CurveSimulatorLike,
    CurveSimulatorSource,
    SimBackend,
    SimulatedCrash,
    StopMode,
    WorkerLost,
)

__all__ = [
    "Backend", "Budget", "BudgetLedger", "Clock", "CurveSimulatorLike", "CurveSimulatorSource",
    "EventKind", "MetricSource", "Points", "RayBackend", "RealClock", "Remaining", "Resources",
    "SimBackend", "SimClock", "SimulatedCrash", "StopMode", "StoreMetricSource", "TargetKind",
    "TrialEvent", "TrialSpec", "Usage", "WorkerLost", "format_duration", "parse_duration",
]


_LAZY = {"RayBackend": ".ray_backend", "StoreMetricSource": ".metrics"}

if TYPE_CHECKING:  # the real names for type checkers; loaded lazily at run time
    from .metrics import StoreMetricSource
    from .ray_backend import RayBackend


def __getattr__(name: str) -> Any:
    return _lazy.load(__name__, _LAZY, name, globals())
