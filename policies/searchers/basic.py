"""Model-free searchers: grid, random and Sobol.

Random and Sobol are stateless: their draws are indexed by the length of the history, so
equal histories give equal suggestions and a restarted agent needs no saved state.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import UserInputError
from ..base import Mode, Searcher, check_history
from ..records import Suggestion, TrialResult
from ..space import SearchSpace

__all__ = ["GridSearcher", "RandomSearcher", "SobolSearcher", "sobol_points"]

_MAX_RETRIES = 64


def _dedup_fill(
    space: SearchSpace,
    seen: set[str],
    n: int,
    draw: Callable[[int], list[dict[str, Any]]],
) -> list[tuple[dict[str, Any], bool]]:
    """Take ``n`` configs from ``draw`` avoiding ``seen``; after retries, accept repeats.

    Returns (config, was_duplicate) pairs; repeats only happen in exhausted discrete spaces.
    """
    out: list[tuple[dict[str, Any], bool]] = []
    pool: list[dict[str, Any]] = []
    tries = 0
    while len(out) < n:
        if not pool:
            pool = draw(max(n - len(out), 1) * (1 if tries == 0 else 4))
            tries += 1
        config = pool.pop(0)
        k = space.key(config)
        if k not in seen or tries > _MAX_RETRIES:
            out.append((config, k in seen))
            seen.add(k)
    return out


class GridSearcher(Searcher):
    """Walks the grid of the space in a fixed order, skipping configs already tried.

    Args:
        space: The search space.
        points_per_dim: Values per continuous (and large integer) parameter.
        mode: Unused by the grid; kept for a uniform constructor.
        seed: With ``shuffle``, the seed of the visiting order.
        shuffle: Visit the grid in a random (seeded) order instead of lexicographically.
    """

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        *,
        points_per_dim: int = 5,
        mode: Mode | str = "min",
        metric: str | None = None,
        seed: int = 0,
        shuffle: bool = False,
    ) -> None:
        super().__init__(space, mode=mode, metric=metric, seed=seed)
        if isinstance(points_per_dim, bool) or not isinstance(points_per_dim, int) or (
            points_per_dim < 1
        ):
            raise UserInputError(f"points_per_dim must be a positive int, got {points_per_dim!r}")
        self.points_per_dim = points_per_dim
        self.shuffle = shuffle
        self._shuffled: list[dict[str, Any]] | None = None

    @property
    def grid_size(self) -> int:
        """Points in the grid (an upper bound when conditions merge some of them)."""
        return math.prod(len(self.space[n].grid(self.points_per_dim)) for n in self.space.tunable)

    def _walk(self) -> Iterable[dict[str, Any]]:
        if not self.shuffle:
            return self.space.grid(self.points_per_dim)  # lazy: grids can be huge
        if self._shuffled is None:
            grid = list(self.space.grid(self.points_per_dim))
            order = np.random.default_rng(self.seed).permutation(len(grid))
            self._shuffled = [grid[i] for i in order]
        return self._shuffled

    def suggest(self, history: Sequence[TrialResult], n: int = 1) -> list[Suggestion]:
        n = self._check_n(n)
        seen = self._seen_keys(check_history(history))
        out: list[Suggestion] = []
        for i, config in enumerate(self._walk()):
            if len(out) == n:
                break
            if self.space.key(config) in seen:
                continue
            out.append(
                Suggestion(
                    config,
                    {"method": "grid", "grid_index": i, "grid_size": self.grid_size,
                     "points_per_dim": self.points_per_dim},
                )
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "points_per_dim": self.points_per_dim,
                "shuffle": self.shuffle}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.points_per_dim = int(state.get("points_per_dim", self.points_per_dim))
        self.shuffle = bool(state.get("shuffle", self.shuffle))
        self._shuffled = None


class RandomSearcher(Searcher):
    """Independent uniform draws (log-uniform for log parameters).

    Draw ``i`` of a call is seeded by ``(seed, len(history))``, so equal histories give
    equal suggestions. Configs already in the history are redrawn (finite discrete
    spaces may still repeat once exhausted; the explanation says so).
    """

    def suggest(self, history: Sequence[TrialResult], n: int = 1) -> list[Suggestion]:
        n = self._check_n(n)
        history = check_history(history)
        rng = np.random.default_rng([self.seed, len(history)])

        def draw(k: int) -> list[dict[str, Any]]:
            return [self.space.sample(rng) for _ in range(k)]

        picked = _dedup_fill(self.space, self._seen_keys(history), n, draw)
        return [
            Suggestion(c, {"method": "random", "repeat_of_tried_config": dup})
            for c, dup in picked
        ]


def sobol_points(dim: int, start: int, n: int, seed: int) -> np.ndarray:
    """Points ``start .. start+n-1`` of a scrambled Sobol sequence in ``[0, 1]^dim``."""
    from scipy.stats import qmc

    if dim == 0:
        return np.zeros((n, 0))
    engine = qmc.Sobol(d=dim, scramble=True, seed=seed)
    if start:
        engine.fast_forward(start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # balance needs powers of 2; fine here
        return engine.random(n)


class SobolSearcher(Searcher):
    """A scrambled Sobol sequence over the unit cube of the space (a space-filling design).

    The sequence index continues from ``len(history)``, so successive calls walk the
    sequence without any saved state.
    """

    def suggest(self, history: Sequence[TrialResult], n: int = 1) -> list[Suggestion]:
        n = self._check_n(n)
        history = check_history(history)
        d = len(self.space.tunable)
        cursor = [len(history)]

        def draw(k: int) -> list[dict[str, Any]]:
            pts = sobol_points(d, cursor[0], k, self.seed)
            cursor[0] += k
            return [self.space.from_unit(p) for p in pts]

        start = cursor[0]
        picked = _dedup_fill(self.space, self._seen_keys(history), n, draw)
        return [
            Suggestion(
                c,
                {"method": "sobol", "sequence_start": start, "repeat_of_tried_config": dup},
            )
            for c, dup in picked
        ]
