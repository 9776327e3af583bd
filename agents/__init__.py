"""Controller agents: objectives, the ``step()`` decision loop, overrides, coordination."""

from __future__ import annotations

from typing import Any

from .hlc import HLC, HybridLogicalClock
from .objective import Objective

__all__ = ["Objective", "Agent", "HLC", "HybridLogicalClock"]


def __getattr__(name: str) -> Any:
    if name == "Agent":
        from .agent import Agent

        return Agent
    raise AttributeError(name)
