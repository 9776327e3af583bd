"""The store interface: the one place the experiment graph's tables are read and written.

Contract (every implementation passes ``tests/store/store_contract.py``):
- ``append_metrics``, ``rewind_metrics`` and ``upsert_runs`` are the write primitives; the
  ingester is their only caller on a data directory, and it calls them under the directory's
  ingest lock, so an implementation need not be safe against concurrent writers, only against
  concurrent readers.
- Reads see every write committed before they started, from any process.
- Records returned are immutable snapshots; callers must not expect them to update.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import pyarrow as pa

from .records import RunRecord

__all__ = ["Store"]


class Store(ABC):
    """Runs and metric chunks of one data directory."""

    @abstractmethod
    def upsert_runs(self, runs: Sequence[RunRecord]) -> None:
        """Insert or replace runs by ``run_id`` (called by the ingester)."""

    @abstractmethod
    def append_metrics(self, chunks: pa.Table) -> None:
        """Append metric chunks (``METRICS_SCHEMA``); one call is one commit."""

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None if it is unknown."""

    def run_positions(self, run_ids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        """Where each known run of ``run_ids`` stands: ``(attach, ingested_seq, last_step)``
        (what a reader polling curves compares to tell which runs grew); unknown ids are
        left out. Stores answer all ids in one query where they can."""
        out = {}
        for rid in dict.fromkeys(run_ids):
            r = self.get_run(rid)
            if r is not None:
                out[rid] = (r.attach, r.ingested_seq, r.last_step)
        return out

    @abstractmethod
    def runs_table(self, project: str | None = None) -> pa.Table:
        """Rows of ``RUNS_SCHEMA``, optionally of one project."""

    @abstractmethod
    def metric_chunks(self, run_id: str, keys: Sequence[str] | None = None) -> pa.Table:
        """A run's metric chunks (columns key, seq, step, value, time), in no set order."""

    def metric_chunks_after(self, run_id: str, after_seq: int,
                            keys: Sequence[str] | None = None) -> pa.Table:
        """A run's metric chunks with ``seq > after_seq`` (what was stored since a read that
        saw chunks up to ``after_seq``; same columns as :meth:`metric_chunks`)."""
        import pyarrow.compute as pc

        t = self.metric_chunks(run_id, keys)
        return t.filter(pc.greater(t["seq"], int(after_seq)))

    @abstractmethod
    def rewind_metrics(self, run_id: str, before_seq: int, step: int) -> int:
        """Drop the run's points at steps ``>= step`` of chunks with ``seq < before_seq``,
        system metrics (``sys/``) excepted; returns how many points were dropped.

        Called by the ingester (under the ingest lock) to apply a rewind
        (:mod:`assay.store.rewind`) before it appends the rewinding attach's points. A chunk
        that straddles ``step`` is replaced by a trimmed copy with the same ``seq``. Must be
        idempotent, and crash-safe: interrupted at any point, the run's curve reads either
        as before or as after (a second call completes it), never with a point lost below
        ``step``.
        """

    @abstractmethod
    def metric_seqs(self, run_id: str, after: int) -> set[int]:
        """WAL sequence numbers above ``after`` already appended for a run (crash recovery)."""

    def runs_version(self) -> int | None:
        """A number that changes whenever the runs table changes (None: unknown, so callers
        that cache runs must re-read them)."""
        return None

    def compact(self) -> dict[str, int]:
        """Merge small files and refresh indices; returns a count per table. Optional."""
        return {}

    def close(self) -> None:
        """Release handles. Optional."""
