"""An in-memory :class:`Store` for fast unit tests of the logic around the store."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from .base import Store
from .records import RunRecord, run_to_row
from .rewind import Rewind, apply_rewinds
from .schemas import METRICS_SCHEMA, RUNS_SCHEMA

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Keeps runs in a dict and metric chunks in a list of Arrow tables."""

    def __init__(self) -> None:
        self._runs: dict[str, RunRecord] = {}
        self._chunks: list[pa.Table] = []
        self._runs_version = 0

    def upsert_runs(self, runs: Sequence[RunRecord]) -> None:
        for r in runs:
            self._runs[r.run_id] = r
        self._runs_version += 1

    def runs_version(self) -> int | None:
        return self._runs_version

    def append_metrics(self, chunks: pa.Table) -> None:
        self._chunks.append(chunks.cast(METRICS_SCHEMA))

    def rewind_metrics(self, run_id: str, before_seq: int, step: int) -> int:
        t = self._all_chunks()
        kept = apply_rewinds(t, [Rewind(run_id, before_seq, step)])
        self._chunks = [kept]
        return _points(t) - _points(kept)

    def get_run(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)

    def runs_table(self, project: str | None = None) -> pa.Table:
        rows = [run_to_row(r) for r in self._runs.values() if project in (None, r.project)]
        return pa.Table.from_pylist(rows, schema=RUNS_SCHEMA)

    def _all_chunks(self) -> pa.Table:
        if not self._chunks:
            return METRICS_SCHEMA.empty_table()
        return pa.concat_tables(self._chunks)

    def metric_chunks(self, run_id: str, keys: Sequence[str] | None = None) -> pa.Table:
        t = self._all_chunks()
        t = t.filter(pc.equal(t["run_id"], run_id))
        if keys is not None:
            t = t.filter(pc.is_in(t["key"], pa.array(list(keys), pa.string())))
        return t.select(["key", "seq", "step", "value", "time"])

    def metric_seqs(self, run_id: str, after: int) -> set[int]:
        t = self.metric_chunks(run_id)
        return {s for s in t["seq"].to_pylist() if s > after}


def _points(t: pa.Table) -> int:
    return int(pc.sum(pc.list_value_length(t["step"])).as_py() or 0) if t.num_rows else 0
