"""Rewinds: a resumed attach that restarts its run at step ``s`` supersedes the points that
earlier attaches logged at steps ``>= s`` (W&B's ``resume_from="<run>?_step=s"``).

An attach declares it in its ``run`` WAL record (``"resume_from_step": s``, written by
``assay.init(resume=..., resume_from_step=s)``, and by a backend relaunching a trial from the
top with ``s = 0``). The ingester applies it in WAL order, before any point of that attach
reaches the store: every point of an earlier record (``seq`` below the run record's) at a
step ``>= s`` is dropped (:meth:`~assay.store.base.Store.rewind_metrics`), and the run's
summary statistics and last step are recomputed from the points that remain. System metrics
(``sys/`` keys) count their own steps and are never rewound; config and explicit summary
values carry on as for any resume. The rewind itself stays on record in the audit trail
(``run.rewind``, with the attach, step and points superseded).

Points are stored in chunks (one row per run, key and WAL record), so a chunk that straddles
``s`` is replaced by a trimmed copy with the same ``seq`` (the last write of a step still wins
by ``seq``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .records import RESERVED_PREFIX, merge_summary

if TYPE_CHECKING:  # the training process imports this module: no pyarrow there
    import pyarrow as pa

__all__ = ["REWIND_FIELD", "Rewind", "apply_rewinds", "chunk_tuples", "rebuild_summary",
           "rewinds", "trim_chunks", "valid_step"]

REWIND_FIELD = "resume_from_step"
"""The ``run`` record's field that declares a rewind."""

_STEP_LIMIT = 1 << 63


@dataclass(frozen=True)
class Rewind:
    """Points of ``run_id`` logged by records below ``seq`` at steps ``>= step`` are superseded."""

    run_id: str
    seq: int
    step: int
    attach: int = 0


def valid_step(step: object) -> bool:
    """Whether ``step`` can start a rewind (an int in ``[0, 2**63)``, not a bool)."""
    return type(step) is int and 0 <= step < _STEP_LIMIT


def rewinds(key: str) -> bool:
    """Whether points of metric ``key`` are ever superseded (system metrics are not)."""
    return not key.startswith(RESERVED_PREFIX)


def trim_chunks(rows: Iterable[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """Chunk rows (dicts with ``step``, ``value``, ``time`` lists) cut to their points below
    ``step``, in their order; rows left with no point are dropped. ``step_min``/``step_max``
    are recomputed where present."""
    out = []
    for row in rows:
        keep = [i for i, s in enumerate(row["step"]) if s < step]
        if not keep:
            continue
        if len(keep) < len(row["step"]):
            row = dict(row)
            for col in ("step", "value", "time"):
                if col in row:
                    row[col] = [row[col][i] for i in keep]
            if "step_min" in row:
                row["step_min"], row["step_max"] = min(row["step"]), max(row["step"])
        out.append(row)
    return out


def apply_rewinds(table: pa.Table, rewinds_: Sequence[Rewind]) -> pa.Table:
    """``table`` (metric chunks of one or more runs: ``key``, ``seq``, ``step``, ... and
    ``run_id`` when more than one run) without the points ``rewinds_`` supersede, applied
    in order. Chunk rows keep their columns and order."""
    import pyarrow as pa

    if table.num_rows == 0 or not rewinds_:
        return table
    rows = table.to_pylist()
    for rw in rewinds_:
        out: list[dict[str, Any]] = []
        for row in rows:
            hit = (row.get("run_id", rw.run_id) == rw.run_id and row["seq"] < rw.seq
                   and rewinds(row["key"]) and max(row["step"], default=-1) >= rw.step)
            out += trim_chunks([row], rw.step) if hit else [row]
        rows = out
    return pa.Table.from_pylist(rows, schema=table.schema)


def rebuild_summary(
    chunks: Iterable[tuple[int, str, Sequence[int], Sequence[float]]],
    summary: dict[str, dict[str, float]],
) -> tuple[dict[str, dict[str, float]], int]:
    """A run's automatic summary and last step, recomputed from the chunks that remain.

    Args:
        chunks: ``(seq, key, steps, values)`` of every remaining chunk of the run (any order;
            they are folded by ``seq``, so ``last`` is the last value logged, and of a step
            logged more than once only the last write counts).
        summary: The run's current summary: its system-metric entries are kept as they are.

    Returns:
        The new summary and the highest step of a non-system metric (-1 when none is left).
    """
    out = {k: dict(v) for k, v in summary.items() if not rewinds(k)}
    # As the history reads them: the last write of a (key, step) wins, so a value written
    # over (a step logged again) counts in no min or max.
    kept: dict[str, dict[int, tuple[tuple[int, int], float]]] = {}
    for seq, key, steps, vals in chunks:
        if not rewinds(key):
            continue
        at = kept.setdefault(key, {})
        for i, (st, v) in enumerate(zip(steps, vals)):
            if st not in at or at[st][0] < (seq, i):
                at[st] = ((seq, i), v)
    last_step = -1
    for key, at in kept.items():
        if not at:
            continue
        order = sorted(at.items(), key=lambda kv: kv[1][0])  # in the order they were logged
        merge_summary(out, [key], [st for st, _ in order], [[v for _, (_, v) in order]])
        last_step = max(last_step, max(at))
    return out, last_step


def chunk_tuples(table: pa.Table) -> list[tuple[int, str, list[int], list[float]]]:
    """``(seq, key, steps, values)`` per row of a metric chunk table."""
    return list(zip(table["seq"].to_pylist(), table["key"].to_pylist(),
                    table["step"].to_pylist(), table["value"].to_pylist()))
