"""Metric chunks to point rows: the one place a run's curve is reassembled."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

__all__ = ["history_frame"]


def history_frame(run_id: str, chunks: pa.Table, *, with_seq: bool = False) -> pl.DataFrame:
    """Explode metric chunks into one row per point: run_id, key, step, value, time (and,
    ``with_seq``, the ``seq`` of the chunk each point was stored in: a later write has a
    higher one).

    Sorted by key then step; if a (key, step) was logged more than once (a resumed run that
    re-logged a step) the last write wins.
    """
    extra = ["seq"] if with_seq else []
    if chunks.num_rows == 0:
        return pl.DataFrame(schema={"run_id": pl.String, "key": pl.String, "step": pl.Int64,
                                    "value": pl.Float64,
                                    "time": pl.Datetime("us", "UTC"),
                                    **{c: pl.Int64 for c in extra}})
    frame = pl.from_arrow(chunks)
    if not isinstance(frame, pl.DataFrame):
        raise TypeError("metric chunks must be a table")
    df = (
        frame
        .sort("seq")
        .explode(["step", "value", "time"])
    )
    df = df.with_columns(pl.int_range(pl.len()).alias("_order"))
    df = df.sort(["key", "step", "_order"])
    dup = df.select(
        ((pl.col("step").diff() == 0) & (pl.col("key") == pl.col("key").shift())).any()
    ).item()
    if dup:
        df = df.unique(subset=["key", "step"], keep="last", maintain_order=True)
    return df.select(
        pl.lit(run_id).alias("run_id"),
        "key",
        "step",
        "value",
        (pl.col("time") * 1e6).cast(pl.Int64).cast(pl.Datetime("us", "UTC")).alias("time"),
        *extra,
    )
