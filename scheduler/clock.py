"""Clocks: where a loop and a backend get the time from.

:class:`RealClock` is wall-clock time; :class:`SimClock` is simulated time that only moves
when the loop moves it (Syne Tune's ``TimeKeeper`` idea), so the same agent loop runs against
a simulator far faster than real time and tests never sleep.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from typing import Any

from ..errors import UserInputError

__all__ = ["Clock", "RealClock", "SimClock"]


def _non_negative(value: Any, what: str, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 \
            or math.isinf(value):
        raise UserInputError(f"{what} must be a finite number >= 0, got {value!r}", hint=hint)
    return float(value)


class Clock(ABC):
    """Where a loop and a backend get the time from (seconds, as a float)."""

    @abstractmethod
    def now(self) -> float:
        """The current time in seconds (epoch seconds for :class:`RealClock`)."""

    @abstractmethod
    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``: really (:class:`RealClock`) or by advancing (:class:`SimClock`)."""


class RealClock(Clock):
    """Wall-clock time (``time.time``); ``sleep`` really sleeps."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class SimClock(Clock):
    """Simulated time that only moves when the loop moves it (never sleeps).

    Args:
        start: The time the clock shows at first.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = _non_negative(start, "start", "simulated time starts at 0 or later")

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds``: a loop written for real time runs unchanged in simulation."""
        self.advance(seconds)

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (>= 0) and return the new time."""
        self._now += _non_negative(seconds, "seconds", "a simulated clock only moves forward")
        return self._now

    def advance_to(self, t: float) -> float:
        """Move the clock to time ``t``; a time in the past leaves it where it is."""
        self._now = max(self._now, _non_negative(t, "t", "times are seconds >= 0"))
        return self._now


