"""Curves from the store: :class:`StoreMetricSource` reads new points of runs as they log.

The agent calls :meth:`StoreMetricSource.new_points` once per step; each call returns only
the points beyond those it returned before (per run and metric), so an agent sees every
point once, whichever backend ran the trial.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import NotFoundError, UserInputError
from ..store.records import RESERVED_PREFIX
from .base import MetricSource, Points

__all__ = ["StoreMetricSource"]


class StoreMetricSource(MetricSource):
    """New metric points of runs, read with ``assay.Api().history(run_id)``.

    Args:
        dir: The data directory (default: ``$ASSAY_DIR``, else ``~/.assay``).
        keys: Metric names to read (default: all but the system metrics under ``sys/``).

    A point is new when its step is beyond the last step already returned for its run and
    metric; a resumed run that logs a step again is not re-reported.
    """

    def __init__(self, dir: str | os.PathLike[str] | None = None,
                 keys: Sequence[str] | None = None) -> None:
        from ..sdk.api import Api

        if isinstance(keys, str):
            keys = [keys]
        if keys is not None and not all(isinstance(k, str) and k for k in keys):
            raise UserInputError(f"keys must be metric names, got {keys!r}",
                                 hint='e.g. keys=["val/loss"]')
        self.api = Api(dir)
        self.keys = list(keys) if keys is not None else None
        self._seen: dict[tuple[str, str], int] = {}

    def new_points(self, trial_ids: Iterable[str]) -> Points:
        import polars as pl

        out: Points = {}
        for tid in trial_ids:
            try:
                df = self.api.history(tid, self.keys)
            except NotFoundError:  # not ingested yet
                continue
            if df.height == 0:
                continue
            if self.keys is None:
                df = df.filter(~pl.col("key").str.starts_with(RESERVED_PREFIX))
            points: dict[str, list[tuple[int, float]]] = {}
            for key, part in df.group_by("key", maintain_order=True):
                name = str(key[0] if isinstance(key, tuple) else key)
                last = self._seen.get((tid, name), -1)
                fresh = part.filter(pl.col("step") > last).sort("step")
                if fresh.height == 0:
                    continue
                pts: list[Any] = list(zip(fresh["step"].to_list(), fresh["value"].to_list()))
                points[name] = [(int(s), float(v)) for s, v in pts]
                self._seen[(tid, name)] = points[name][-1][0]
            if points:
                out[tid] = points
        return out

    def forget(self, trial_id: str) -> None:
        """Drop what was returned for a trial (e.g. once it is finished and persisted)."""
        for k in [k for k in self._seen if k[0] == trial_id]:
            del self._seen[k]
