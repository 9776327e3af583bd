"""Encoding of configs as points of the unit cube for Gaussian-process models.

Numeric parameters take one column each (log scale for log parameters, integers at their
bin centres); a choice among ``k > 1`` options takes ``k`` one-hot columns. Candidates are
optimised in the continuous relaxation and rounded back: integers to the nearest value,
one-hot groups to their arg-max. Inactive conditional parameters sit at a constant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..space import Choice, SearchSpace


@dataclass(frozen=True)
class _Column:
    name: str
    start: int
    width: int
    onehot: bool


class GPEncoder:
    """Maps configs of ``space`` to and from ``[0, 1]^dim``."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        cols: list[_Column] = []
        start = 0
        for name in space.tunable:
            p = space[name]
            if isinstance(p, Choice):
                width = len(p.options) if len(p.options) > 1 else 0
                cols.append(_Column(name, start, width, True))
            else:
                width = 1
                cols.append(_Column(name, start, 1, False))
            start += width
        self.columns = tuple(cols)
        self.dim = start

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        """The unit-cube point of ``config``."""
        x = np.zeros(self.dim)
        for c in self.columns:
            active = c.name in config and self.space.is_active(c.name, config)
            p = self.space[c.name]
            if c.onehot:
                if active and c.width:
                    x[c.start + p.index(config[c.name])] = 1.0  # type: ignore[attr-defined]
            else:
                x[c.start] = p.to_unit(config[c.name]) if active else 0.5
        return x

    def encode_many(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Rows of :meth:`encode`."""
        if not configs:
            return np.zeros((0, self.dim))
        return np.stack([self.encode(c) for c in configs])

    def decode(self, x: np.ndarray) -> dict[str, Any]:
        """The config nearest to relaxed point ``x`` (rounded, arg-max one-hots)."""
        values: dict[str, Any] = {}
        for c in self.columns:
            p = self.space[c.name]
            if c.onehot:
                opts = p.options  # type: ignore[attr-defined]
                values[c.name] = opts[int(np.argmax(x[c.start : c.start + c.width]))] if c.width else opts[0]
            else:
                values[c.name] = p.from_unit(float(x[c.start]))
        return self.space.complete(values)

    def round(self, x: np.ndarray) -> np.ndarray:
        """Project relaxed points onto valid configs (rows of ``x``)."""
        x = np.atleast_2d(x)
        return np.stack([self.encode(self.decode(row)) for row in x])
