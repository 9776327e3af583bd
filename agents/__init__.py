"""Controller agents: objectives, the ``step()`` decision loop, overrides, coordination."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _lazy
from .hlc import HLC, HybridLogicalClock
from .objective import Objective

__all__ = ["HLC", "Agent", "HybridLogicalClock", "Objective"]


_LAZY = {"Agent": ".agent"}

if TYPE_CHECKING:  # the real name for type checkers; loaded lazily at run time
    from .agent import Agent


def __getattr__(name: str) -> Any:
    return _lazy.load(__name__, _LAZY, name, globals())
