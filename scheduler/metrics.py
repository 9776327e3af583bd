"""Curves from the store: :class:`StoreMetricSource` reads new points of runs as they log.

The agent calls :meth:`StoreMetricSource.new_points` once per step; each call returns only
the points beyond those it returned before (per run and metric), so an agent sees every
point once, whichever backend ran the trial. When a run's stored curve changes other than by
new steps (a retried or relaunched attempt rewound it, see :mod:`assay.store.rewind`, or
logged a step again), the trial is :meth:`~StoreMetricSource.replaced` and its whole curve
is returned again: the agent's stoppers never keep points the run no longer has.
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
    metric. A stored point at or below that step written after the last read (a higher
    ``seq``), or fewer points there than were returned (a rewind dropped them), makes the
    trial :meth:`replaced`: its whole curve comes again.
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
        # Per (trial, metric): the last step returned and how many points up to it; per
        # trial: the highest chunk seq read (points stored later have a higher one).
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}
        self._seq: dict[str, int] = {}
        self._replaced: set[str] = set()

    def new_points(self, trial_ids: Iterable[str]) -> Points:
        import polars as pl

        from ..store.history import history_frame

        out: Points = {}
        self._replaced = set()
        for tid in trial_ids:
            try:
                self.api.run(tid)
            except NotFoundError:  # not ingested yet
                continue
            df = history_frame(tid, self.api.store.metric_chunks(tid, self.keys), with_seq=True)
            if self.keys is None:
                df = df.filter(~pl.col("key").str.starts_with(RESERVED_PREFIX))
            parts = {str(k[0] if isinstance(k, tuple) else k): p
                     for k, p in df.group_by("key", maintain_order=True)}
            if self._rewritten(tid, parts):
                self.forget(tid)
                self._replaced.add(tid)
            if df.height:
                self._seq[tid] = int(df["seq"].max())  # type: ignore[arg-type]
            points: dict[str, list[tuple[int, float]]] = {}
            for name, part in parts.items():
                last = self._seen.get((tid, name), (-1, 0))[0]
                fresh = part.filter(pl.col("step") > last).sort("step")
                if fresh.height == 0:
                    continue
                pts: list[Any] = list(zip(fresh["step"].to_list(), fresh["value"].to_list()))
                points[name] = [(int(s), float(v)) for s, v in pts]
                top = points[name][-1][0]
                self._seen[(tid, name)] = (top, part.filter(pl.col("step") <= top).height)
            if points:
                out[tid] = points
        return out

    def _rewritten(self, tid: str, parts: dict[str, Any]) -> bool:
        """Whether a curve returned for ``tid`` changed at or below its last returned step."""
        import polars as pl

        seq = self._seq.get(tid, -1)
        for (t, name), (last, count) in self._seen.items():
            if t != tid:
                continue
            part = parts.get(name)
            if part is None:
                return True  # every point of the metric is gone
            below = part.filter(pl.col("step") <= last)
            if below.height < count or below.filter(pl.col("seq") > seq).height:
                return True
        return False

    def replaced(self) -> set[str]:
        return set(self._replaced)

    def forget(self, trial_id: str) -> None:
        """Drop what was returned for a trial (e.g. once it is finished and persisted)."""
        for k in [k for k in self._seen if k[0] == trial_id]:
            del self._seen[k]
        self._seq.pop(trial_id, None)
