"""The server's read extensions of :class:`~assay.store.lance.LanceStore`.

The server answers the same questions many times a second, so it needs reads the
:class:`~assay.store.base.Store` interface does not offer yet: the ``runs`` table's version
(to reuse a parsed runs table until something commits), a projection of the ``runs`` table
(the ``env`` column holds installed packages: kilobytes per run that the runs query never
needs), and metric chunks without their times. (A run's chunks after a sequence number,
the live stream's deltas, are the store's own :meth:`~assay.store.base.Store.metric_chunks_after`.)
They are read-only and use the store's own table handles (strongly consistent: a read sees
every commit of every process).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from ..store.lance import LanceStore
from ..store.schemas import RUNS_SCHEMA

__all__ = ["ServerStore"]

class ServerStore(LanceStore):
    """A LanceStore with the server's read paths (see the module docstring)."""

    def runs_version(self) -> int:
        """The ``runs`` table's current version (-1 before it exists)."""
        tbl = self._table("runs", create=False)
        return -1 if tbl is None else int(tbl.version)

    def runs_columns(self, columns: Sequence[str], where: str | None = None) -> pa.Table:
        """Some columns of the ``runs`` table, optionally filtered by a LanceDB SQL ``where``."""
        tbl = self._table("runs", create=False)
        if tbl is None:
            return RUNS_SCHEMA.empty_table().select(list(columns))
        q = tbl.search()
        if where:
            q = q.where(where)
        return q.select(list(columns)).limit(None).to_arrow()

    def metric_chunks(self, run_id: str, keys: Sequence[str] | None = None, *,
                      with_time: bool = True, step_min: int | None = None,
                      step_max: int | None = None, seq_after: int | None = None,
                      seq_max: int | None = None) -> pa.Table:
        """:meth:`LanceStore.metric_chunks`; without ``time`` when not needed (40% less to
        read); with ``step_min``/``step_max``, only the chunks holding steps in that range
        (whole chunks: the caller cuts them), so a window of a long curve reads that window;
        with ``seq_after``, only the chunks stored after it (:meth:`metric_chunks_after`);
        with ``seq_max``, none stored after that one (a snapshot read in several windows)."""
        cols = ["key", "seq", "step", "value", *(["time"] if with_time else [])]
        where = "" if seq_after is None else f" AND seq > {int(seq_after)}"
        if seq_max is not None:
            where += f" AND seq <= {int(seq_max)}"
        if step_min is not None:
            where += f" AND step_max >= {int(step_min)}"
        if step_max is not None:
            where += f" AND step_min <= {int(step_max)}"
        return self._chunks(run_id, keys, cols, where)
