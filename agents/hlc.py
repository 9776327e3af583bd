"""Hybrid logical clocks: an order of events across hosts without trusting their wall clocks.

Every record an agent writes (decisions, overrides, leases, trial events) carries an HLC
timestamp (Kulkarni et al., 2014): the physical time in milliseconds, pushed forward to stay
ahead of every timestamp this node has seen, plus a counter for events within the same
millisecond. Records from many machines sort by it consistently with causality, even when
one machine's clock runs minutes behind: never compare raw wall clocks of different hosts.

The string form ``"<ms:013d>.<counter:06d>.<node>"`` sorts lexicographically in HLC order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserInputError

__all__ = ["HLC", "HybridLogicalClock"]


@dataclass(frozen=True, order=True)
class HLC:
    """One timestamp: (physical ms, logical counter, node id); ordered field by field."""

    ms: int
    counter: int
    node: str = ""

    def __str__(self) -> str:
        return f"{self.ms:013d}.{self.counter:06d}.{self.node}"

    @classmethod
    def parse(cls, text: str) -> HLC:
        try:
            ms, counter, node = text.split(".", 2)
            return cls(int(ms), int(counter), node)
        except (ValueError, AttributeError):
            raise UserInputError(f"not an HLC timestamp: {text!r}",
                                 hint="HLC strings look like '1732700000000.000003.node'") from None


class HybridLogicalClock:
    """A node's HLC. ``now()`` stamps a local or send event; ``update(remote)`` merges a
    timestamp received from another node (call it before acting on what it stamped)."""

    def __init__(self, node: str, physical_ms: Callable[[], int] | None = None) -> None:
        self.node = node
        self._phys = physical_ms or (lambda: time.time_ns() // 1_000_000)
        self._l = 0
        self._c = 0
        self._mu = threading.Lock()

    def now(self) -> HLC:
        with self._mu:
            pt = self._phys()
            if pt > self._l:
                self._l, self._c = pt, 0
            else:
                self._c += 1
            return HLC(self._l, self._c, self.node)

    def update(self, remote: HLC | str) -> HLC:
        m = HLC.parse(remote) if isinstance(remote, str) else remote
        with self._mu:
            pt = self._phys()
            top = max(self._l, m.ms, pt)
            if top == self._l and top == m.ms:
                self._c = max(self._c, m.counter) + 1
            elif top == self._l:
                self._c += 1
            elif top == m.ms:
                self._c = m.counter + 1
            else:
                self._c = 0
            self._l = top
            return HLC(self._l, self._c, self.node)
