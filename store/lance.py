"""The LanceDB implementation of :class:`~assay.store.base.Store`.

Tables live in ``<data dir>/lance``. Handles use strong read consistency, so a reader sees
commits made by other processes (LanceDB's default handle does not). Only the ingester writes,
under the data directory's ingest lock (see :mod:`assay.store.ingest`): LanceDB appends from
several processes at once can fail with commit conflicts.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa

# lancedb warns at every fork of a process that loaded it. Our forks (subprocess, Ray's
# process launches) exec at once, so no Python code of the child touches its runtime.
warnings.filterwarnings("ignore", message="lancedb fork support is experimental",
                        category=RuntimeWarning)

from ..errors import AssayError
from .base import Store
from .records import RESERVED_PREFIX, RunRecord, run_from_row, run_to_row
from .rewind import trim_chunks
from .schemas import METRICS_SCHEMA, RUNS_SCHEMA, TABLES

__all__ = ["LanceStore", "sql_str"]

log = logging.getLogger(__name__)



def sql_str(value: str) -> str:
    """Quote a string literal for a LanceDB filter."""
    return "'" + value.replace("'", "''") + "'"


_CHUNK_COLS = ["key", "seq", "step", "value", "time"]


class LanceStore(Store):
    """Runs and metric chunks in LanceDB tables under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.uri = str(self.root / "lance")
        self._db = lancedb.connect(self.uri, read_consistency_interval=timedelta(0))
        self._tables: dict[str, Any] = {}

    # -- tables ---------------------------------------------------------------------------
    def table(self, name: str, *, create: bool = False) -> Any | None:
        """The LanceDB table ``name`` of :data:`~.schemas.TABLES` (None if absent and not
        ``create``). Writers create tables under the ingest lock."""
        return self._table(name, create=create)

    def write_table(self, name: str) -> Any:
        """The table ``name``, created if missing (callers hold the ingest lock)."""
        return self._create_or_open(name)

    def _table(self, name: str, *, create: bool) -> Any | None:
        tbl = self._tables.get(name)
        if tbl is not None:
            return tbl
        if name in self._table_names():
            try:
                tbl = self._db.open_table(name)
            except ValueError:  # "was not found": listed while another process creates it
                if not create:
                    return None  # a reader: not there yet, as if not listed
                # A writer holds the ingest lock, so nobody is creating it now: a creation
                # cut short (a full disk, a kill) left a folder without a committed version.
                # It holds no data; without this, every later ingest would fail on it.
                self._clear_uncommitted(name)
                tbl = self._db.create_table(name, schema=TABLES[name][0], exist_ok=True)
        elif create:
            # Creation races are excluded by the ingest lock held by every writer.
            tbl = self._db.create_table(name, schema=TABLES[name][0], exist_ok=True)
        else:
            return None
        self._tables[name] = tbl
        return tbl

    def _clear_uncommitted(self, name: str) -> None:
        """Remove table ``name``'s folder if no version of it was ever committed; raise if
        one was (that table is damaged, not half-created, and is never removed here)."""
        import shutil

        folder = Path(self.uri) / f"{name}.lance"
        versions = folder / "_versions"
        if versions.is_dir() and any(versions.iterdir()):
            raise AssayError(
                f"the LanceDB table {name!r} in {self.uri} has committed versions but cannot "
                "be opened", hint="check the disk and the folder's permissions; back up "
                f"{folder} before repairing it")
        log.warning("assay: table %r in %s was left half-created (no committed version, "
                    "e.g. by a full disk); recreating it", name, self.uri)
        shutil.rmtree(folder)

    def _create_or_open(self, name: str) -> Any:
        tbl = self._table(name, create=True)
        if tbl is None:  # unreachable: create=True always yields a table
            raise RuntimeError(f"could not open or create table {name}")
        return tbl

    def _table_names(self) -> set[str]:
        res = self._db.list_tables()
        return set(getattr(res, "tables", res))

    def _ensure_index(self, name: str, tbl: Any) -> None:
        have = {tuple(ix.columns) for ix in tbl.list_indices()}
        if tbl.count_rows() == 0:
            return
        for col in TABLES[name][1]:
            if (col,) not in have:
                tbl.create_index(col, config=lancedb.index.BTree())

    # -- writes ---------------------------------------------------------------------------
    def upsert_runs(self, runs: Sequence[RunRecord]) -> None:
        if not runs:
            return
        tbl = self._create_or_open("runs")
        data = pa.Table.from_pylist([run_to_row(r) for r in runs], schema=RUNS_SCHEMA)
        (
            tbl.merge_insert("run_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(data)
        )

    def append_metrics(self, chunks: pa.Table) -> None:
        if chunks.num_rows == 0:
            return
        tbl = self._create_or_open("metrics")
        tbl.add(chunks.cast(METRICS_SCHEMA))

    def rewind_metrics(self, run_id: str, before_seq: int, step: int) -> int:
        """Two commits: trimmed copies of the chunks that straddle ``step`` are added, then
        every superseded chunk is deleted (``table.delete``: no schema change, no migration).

        Between the two the curve reads as before the rewind (a copy holds the same points
        as its original below ``step``, with the same ``seq``). A repeated call finds the
        copies already there (a row of the same key and ``seq`` ending below ``step``:
        ``(run_id, key, seq)`` is unique otherwise) and only deletes.
        """
        tbl = self._table("metrics", create=False)
        if tbl is None:
            return 0
        run, before, at = sql_str(run_id), int(before_seq), int(step)
        scope = (f"run_id = {run} AND seq < {before} "
                 f"AND NOT (key LIKE {sql_str(RESERVED_PREFIX + '%')})")
        where = f"{scope} AND step_max >= {at}"
        hit = tbl.search().where(where).limit(None).to_arrow().to_pylist()
        if not hit:
            return 0
        copies = trim_chunks(hit, at)
        if copies:
            seqs = ", ".join(str(int(s)) for s in sorted({r["seq"] for r in copies}))
            have = tbl.search().where(f"{scope} AND step_max < {at} AND seq IN ({seqs})") \
                .select(["key", "seq"]).limit(None).to_arrow()
            done = set(zip(have["key"].to_pylist(), have["seq"].to_pylist()))
            copies = [r for r in copies if (r["key"], r["seq"]) not in done]
        if copies:
            tbl.add(pa.Table.from_pylist(copies, schema=METRICS_SCHEMA))
        tbl.delete(where)
        return sum(len(r["step"]) for r in hit) - sum(len(r["step"]) for r in
                                                      trim_chunks(hit, at))

    # -- reads ----------------------------------------------------------------------------
    def runs_version(self) -> int | None:
        tbl = self._table("runs", create=False)
        return None if tbl is None else int(tbl.version)  # the latest commit's version

    def get_run(self, run_id: str) -> RunRecord | None:
        tbl = self._table("runs", create=False)
        if tbl is None:
            return None
        rows = tbl.search().where(f"run_id = {sql_str(run_id)}").limit(None).to_arrow().to_pylist()
        return run_from_row(rows[0]) if rows else None

    def run_positions(self, run_ids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        tbl = self._table("runs", create=False)
        ids = list(dict.fromkeys(run_ids))
        if tbl is None or not ids:
            return {}
        out: dict[str, tuple[int, int, int]] = {}
        for i in range(0, len(ids), 500):  # a bounded IN list per query
            where = "run_id IN (" + ", ".join(sql_str(r) for r in ids[i:i + 500]) + ")"
            rows = tbl.search().where(where).select(
                ["run_id", "attach", "ingested_seq", "last_step"]).limit(None).to_arrow()
            for row in rows.to_pylist():
                out[row["run_id"]] = (
                    row["attach"] or 0,
                    row["ingested_seq"] if row["ingested_seq"] is not None else -1,
                    row["last_step"] if row["last_step"] is not None else -1)
        return out

    def runs_table(self, project: str | None = None) -> pa.Table:
        tbl = self._table("runs", create=False)
        if tbl is None:
            return RUNS_SCHEMA.empty_table()
        if project is None:
            return tbl.to_arrow()
        return tbl.search().where(f"project = {sql_str(project)}").limit(None).to_arrow()

    def metric_chunks(self, run_id: str, keys: Sequence[str] | None = None) -> pa.Table:
        return self._chunks(run_id, keys, _CHUNK_COLS)

    def metric_chunks_after(self, run_id: str, after_seq: int,
                            keys: Sequence[str] | None = None) -> pa.Table:
        return self._chunks(run_id, keys, _CHUNK_COLS, f" AND seq > {int(after_seq)}")

    def _chunks(self, run_id: str, keys: Sequence[str] | None, cols: list[str],
                where_more: str = "") -> pa.Table:
        """A run's metric chunks (``cols``), of ``keys`` if given, matching ``where_more``."""
        tbl = self._table("metrics", create=False)
        if tbl is None or (keys is not None and not keys):
            return METRICS_SCHEMA.empty_table().select(cols)
        where = f"run_id = {sql_str(run_id)}" + where_more
        if keys is not None:
            where += " AND key IN (" + ", ".join(sql_str(k) for k in keys) + ")"
        return tbl.search().where(where).select(cols).limit(None).to_arrow()

    def metric_seqs(self, run_id: str, after: int) -> set[int]:
        tbl = self._table("metrics", create=False)
        if tbl is None:
            return set()
        t = (
            tbl.search()
            .where(f"run_id = {sql_str(run_id)} AND seq > {int(after)}")
            .select(["seq"])
            .limit(None)
            .to_arrow()
        )
        return set(t["seq"].to_pylist())

    # -- maintenance ----------------------------------------------------------------------
    def table_stats(self) -> dict[str, dict[str, int]]:
        """Rows, fragments and versions per table (for ``assay compact`` and benchmarks)."""
        out: dict[str, dict[str, int]] = {}
        for name in TABLES:
            tbl = self._table(name, create=False)
            if tbl is None:
                continue
            nfrag = tbl.stats()["fragment_stats"]["num_fragments"]
            out[name] = {"rows": tbl.count_rows(), "fragments": int(nfrag or 0), "version": tbl.version}
        return out

    def compact(self, cleanup_older_than: timedelta | None = None) -> dict[str, int]:
        """Compact files, build or refresh the ``run_id`` indices, drop old versions.

        Must run under the ingest lock (it commits). Readers holding an old version keep
        working: files of versions younger than ``cleanup_older_than`` are kept.
        """
        done: dict[str, int] = {}
        for name in TABLES:
            tbl = self._table(name, create=False)
            if tbl is None:
                continue
            self._ensure_index(name, tbl)
            tbl.optimize(cleanup_older_than=cleanup_older_than)
            done[name] = tbl.version
        return done

    def needs_compaction(self, max_fragments: int = 64) -> bool:
        stats = self.table_stats()
        return any(s["fragments"] > max_fragments for s in stats.values())
