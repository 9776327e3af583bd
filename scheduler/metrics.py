"""Curves from the store: :class:`StoreMetricSource` reads new points of runs as they log.

The agent calls :meth:`StoreMetricSource.new_points` once per step; each call returns only
the points beyond those it returned before (per run and metric), so an agent sees every
point once, whichever backend ran the trial. When a run's stored curve changes other than by
new steps (a retried or relaunched attempt rewound it, see :mod:`assay.store.rewind`, or
logged a step again), the trial is :meth:`~StoreMetricSource.replaced` and its whole curve
is returned again: the agent's stoppers never keep points the run no longer has.

Trials that log to an ``assay server`` (``$ASSAY_SERVER`` in their environment) are read
from that server the same way (``server=``): their run records and only the metric chunks
stored since the last read (``GET /api/runs/{id}/chunks?seq_after=``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import (
    AssayError,
    NotFoundError,
    PermissionDeniedError,
    ServerUnreachableError,
    UserInputError,
)
from ..store.records import RESERVED_PREFIX
from .base import MetricSource, Points

__all__ = ["StoreMetricSource"]

log = logging.getLogger(__name__)

#: Seconds between warnings while a server the curves come from cannot be read.
_WARN_EVERY = 60.0
#: Seconds one request to that server may take.
READ_TIMEOUT = 10.0


class StoreMetricSource(MetricSource):
    """New metric points of runs, read with ``assay.Api().history(run_id)``.

    Args:
        dir: The data directory (default: ``$ASSAY_DIR``, else ``~/.assay``).
        keys: Metric names to read (default: all but the system metrics under ``sys/``).
        server: Read the runs from this ``assay server`` instead (where trials log when
            ``$ASSAY_SERVER`` is set for them), with ``token`` (a viewer's is enough).
        token: The bearer token for ``server`` (default ``$ASSAY_TOKEN``).

    A point is new when its step is beyond the last step already returned for its run and
    metric. A stored point at or below that step written after the last read (a higher
    ``seq``), or fewer points there than were returned (a rewind dropped them), makes the
    trial :meth:`replaced`: its whole curve comes again.

    Each poll first asks where all the trials' runs stand in one query (one
    ``GET /api/runs/positions`` per 100 runs on a server; one ``GET /api/runs/{id}`` each on
    a server older than that), then reads the chunks of those that grew.

    A server that cannot be reached or does not answer within 10 s (restarting, a network
    blip) costs the agent that poll's points only: they come at a later poll, with a warning
    a minute meanwhile; a run whose chunks the server answers 5xx for costs its own points
    only. A token
    the server refuses raises :class:`~assay.errors.PermissionDeniedError`, a server too old
    to send metric chunks :class:`~assay.errors.UserInputError`.
    """

    def __init__(self, dir: str | os.PathLike[str] | None = None,
                 keys: Sequence[str] | None = None, *, server: str | None = None,
                 token: str | None = None) -> None:
        from ..sdk.api import Api
        from ..sdk.settings import data_dir

        if isinstance(keys, str):
            keys = [keys]
        if keys is not None and not all(isinstance(k, str) and k for k in keys):
            raise UserInputError(f"keys must be metric names, got {keys!r}",
                                 hint='e.g. keys=["val/loss"]')
        self.server: str | None = None
        self.reader: Any = None
        if server:
            from ..sdk.remote import public_url
            from ..sdk.remote_api import RemoteReader

            # A hung server costs a poll at most this long per request, not the default 30 s.
            self.reader = RemoteReader(server, token if token is not None
                                       else os.environ.get("ASSAY_TOKEN") or None,
                                       timeout=READ_TIMEOUT)
            self.server = public_url(self.reader.server)  # shown in state and reports
            self.api: Any = None
        else:
            self.api = Api(data_dir(dir))  # created if new: the agent may start before any run
        self.keys = list(keys) if keys is not None else None
        self._warned_at = -_WARN_EVERY
        # Per trial: per metric, the last step returned and how many points up to it; the
        # highest chunk seq read (points stored later have a higher one); and the run's
        # (attach, ingested_seq) when it was read (unchanged: nothing new was stored).
        self._seen: dict[str, dict[str, tuple[int, int]]] = {}
        self._seq: dict[str, int] = {}
        self._read_at: dict[str, tuple[int, int]] = {}
        self._replaced: set[str] = set()

    def new_points(self, trial_ids: Iterable[str]) -> Points:
        out: Points = {}
        self._replaced = set()
        ids = list(trial_ids)
        if not ids:
            return out
        try:  # where every run stands, in one query (one request to a server)
            positions = (self.api.store.run_positions(ids) if self.reader is None
                         else self.reader.run_positions(ids))
        except ServerUnreachableError as exc:
            self._failed(exc)
            return out  # the server is away: the next poll reads on
        except AssayError as exc:
            if self.reader is None or isinstance(exc, PermissionDeniedError | UserInputError):
                raise
            self._failed(exc)  # a 5xx or an odd answer: the next poll tries again
            return out
        for tid in ids:
            if tid not in positions:
                continue  # not ingested yet (or, on a server, deleted meanwhile)
            attach, seq, last_step = positions[tid]
            at = (attach, seq)
            if self._read_at.get(tid) == at:
                continue  # the ingester committed nothing of this run since the last read
            try:
                fresh = self._fresh(tid, at, last_step)
            except NotFoundError:  # deleted since the positions were read
                continue
            except ServerUnreachableError as exc:
                self._failed(exc)
                break  # the server is away: this poll ends here, the next one reads on
            except AssayError as exc:
                if self.reader is None or isinstance(exc, PermissionDeniedError | UserInputError):
                    raise
                self._failed(exc)  # this run's answer (a 5xx, an odd one): the others go on
                continue
            self._read_at[tid] = at
            if fresh:
                out[tid] = fresh
        return out

    def _failed(self, exc: AssayError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("cannot read trial curves from %s (%s); retrying at the next poll",
                        self.server, exc)

    def _chunks(self, tid: str, after: int | None = None) -> Any:
        """The run's metric chunks of ``keys`` (stored after seq ``after``, if given)."""
        if self.reader is not None:
            return self.reader.metric_chunks(tid, self.keys, seq_after=after)
        if after is None:
            return self.api.store.metric_chunks(tid, self.keys)
        return self.api.store.metric_chunks_after(tid, after, self.keys)

    def _fresh(self, tid: str, at: tuple[int, int], last_step: int) -> dict[str, list[Any]]:
        """The points of ``tid`` beyond those returned. Within one attach only chunks stored
        after the last read are read (a run's curve grows by new chunks); a new attach, a
        new chunk at or below a step already returned (a step logged again), or a last step
        below one returned (an "auto" rewind) reads the whole curve again, and when that
        changed what was returned the trial is replaced."""
        prior = self._read_at.get(tid)
        seen = self._seen.get(tid, {})
        if seen and prior is not None and prior[0] == at[0] and last_step >= max(
                last for last, _ in seen.values()):
            parts = self._parts(tid, self._chunks(tid, self._seq.get(tid, -1)))
            if all(part["step"].min() > seen.get(name, (-1, 0))[0]
                   for name, part in parts.items()):
                return self._take(tid, parts)
        parts = self._parts(tid, self._chunks(tid))
        if self._rewritten(tid, parts):
            self.forget(tid)
            self._replaced.add(tid)
        return self._take(tid, parts)

    def _parts(self, tid: str, chunks: Any) -> dict[str, Any]:
        """Points per metric (polars frames with step, value, seq)."""
        import polars as pl

        from ..store.history import history_frame

        df = history_frame(tid, chunks, with_seq=True)
        if self.keys is None:
            df = df.filter(~pl.col("key").str.starts_with(RESERVED_PREFIX))
        return {str(k[0] if isinstance(k, tuple) else k): p
                for k, p in df.group_by("key", maintain_order=True)}

    def _take(self, tid: str, parts: dict[str, Any]) -> dict[str, list[Any]]:
        """Return the points beyond those returned, and remember them."""
        import polars as pl

        seen = self._seen.setdefault(tid, {})
        points: dict[str, list[Any]] = {}
        for name, part in parts.items():
            self._seq[tid] = max(self._seq.get(tid, -1), int(part["seq"].max()))
            last = seen.get(name, (-1, 0))[0]
            fresh = part.filter(pl.col("step") > last).sort("step")
            if fresh.height == 0:
                continue
            points[name] = [(int(s), float(v)) for s, v in
                            zip(fresh["step"].to_list(), fresh["value"].to_list())]
            top = points[name][-1][0]
            done = seen[name][1] if name in seen else 0
            seen[name] = (top, done + fresh.height)
        return points

    def _rewritten(self, tid: str, parts: dict[str, Any]) -> bool:
        """Whether a curve returned for ``tid`` changed at or below its last returned step."""
        import polars as pl

        seq = self._seq.get(tid, -1)
        for name, (last, count) in self._seen.get(tid, {}).items():
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
        self._seen.pop(trial_id, None)
        self._seq.pop(trial_id, None)
        self._read_at.pop(trial_id, None)
