"""How trials run: backends, clocks, metric sources and budget accounting.

``RayBackend`` and ``StoreMetricSource`` load on first use, so simulations (``SimBackend``)
never import Ray or LanceDB.
"""

from __future__ import annotations

from typing import Any

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


def __getattr__(name: str) -> Any:
    if name == "RayBackend":
        from .ray_backend import RayBackend

        return RayBackend
    if name == "StoreMetricSource":
        from .metrics import StoreMetricSource

        return StoreMetricSource
    raise AttributeError(f"module 'assay.scheduler' has no attribute {name!r}")
