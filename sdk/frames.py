"""One runs frame and one filter, shared by :class:`~assay.sdk.api.Api` on a data directory
and the server reader (:mod:`assay.sdk.remote_api`), so both answer the same columns."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import polars as pl

from ..errors import UserInputError

__all__ = ["check_run_id_arg", "filter_runs", "history_keys", "no_runs_warning", "run_row",
           "runs_frame"]

log = logging.getLogger(__name__)

_RUN_COLUMNS = ["run_id", "project", "name", "status", "group", "tags", "notes",
                "created_at", "updated_at", "finished_at", "host", "last_step", "error"]


def no_runs_warning(project: str, known: Sequence[str]) -> str | None:
    """What to say when ``project`` has no runs: nothing when no project has any (a new
    directory), else the projects there are and the closest name (a typo reads as an empty
    frame otherwise)."""
    if not known or project in known:
        return None
    close = difflib.get_close_matches(project, list(known), n=1)
    return (f"no runs in project {project!r}" + (f"; did you mean {close[0]!r}?" if close
                                                  else "") +
            " projects: " + ", ".join(sorted(known)[:20]))


def warn_missing_keys(run_id: str, wanted: Sequence[str] | None, df: pl.DataFrame,
                      known: Iterable[str]) -> None:
    """Log which of ``wanted`` a run never logged (with the closest it did), once per call."""
    if not wanted:
        return
    have = set(df["key"].unique().to_list()) if df.height else set()
    missing = [k for k in wanted if k not in have]
    if not missing:
        return
    names = sorted(set(known))
    hints = []
    for k in missing[:5]:
        close = difflib.get_close_matches(k, names, n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    log.warning("assay: run %s has no points of %s; its metrics: %s", run_id,
                ", ".join(hints), ", ".join(names[:20]) or "none")


def check_run_id_arg(run_id: Any) -> None:
    """Refuse a run id that is not a non-empty string (UserInputError)."""
    if not isinstance(run_id, str) or not run_id:
        raise UserInputError(f"run id must be a non-empty string, got {run_id!r}",
                             hint="see `assay runs` for ids")


def history_keys(keys: Any) -> list[str] | None:
    """``keys`` of :meth:`Api.history` as a list (one key, or an iterable of keys), None for
    every key. Raises UserInputError for anything else."""
    if keys is None:
        return None
    if isinstance(keys, str):
        return [keys]
    if not isinstance(keys, (bytes, Mapping)) and isinstance(keys, Iterable):
        out = list(keys)
        if all(isinstance(k, str) for k in out):
            return out
    raise UserInputError(f"keys must be a metric key or a list of keys, got {keys!r:.80}",
                         hint='e.g. keys="loss" or keys=["loss", "val/acc"]')


def run_row(core: Mapping[str, Any], config: Mapping[str, Any],
            summary: Mapping[str, Mapping[str, Any]],
            summary_set: Mapping[str, Any]) -> dict[str, Any]:
    """One row of :meth:`Api.runs`: the run columns (taken from ``core``), ``config.*``,
    then per metric ``summary.*``/``summary_min.*``/``summary_max.*`` from ``summary``
    (``{key: {"last", "min", "max", ...}}``), then the values set explicitly, which win."""
    row: dict[str, Any] = {c: core[c] for c in _RUN_COLUMNS}
    for k, v in _flatten(config).items():
        row[f"config.{k}"] = v
    for k, s in summary.items():
        # min/max in their own columns, as the server's runs query has them: a
        # summary key named "loss.max" must not collide with the max of "loss".
        row[f"summary.{k}"] = s["last"]
        row[f"summary_min.{k}"] = s["min"]
        row[f"summary_max.{k}"] = s["max"]
    for k, v in _flatten(summary_set).items():
        row[f"summary.{k}"] = v
    return row


def runs_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """The frame of :meth:`Api.runs` from :func:`run_row` rows: times as UTC datetimes,
    sorted by ``created_at`` (then ``run_id``).

    Rows are put in that order before the frame is built, so that the ``config.*`` and
    ``summary.*`` columns come in the order runs first have them, whatever order the rows
    were read in (a table's physical order moves a run to the end when its record changes).
    """
    if not rows:
        df = pl.DataFrame(schema={c: pl.String for c in _RUN_COLUMNS})
    else:
        rows = sorted(rows, key=lambda r: (r["created_at"] is not None, r["created_at"] or 0.0,
                                           r["run_id"]))
        df = pl.DataFrame(rows, infer_schema_length=None, strict=False)
    for c in ("created_at", "updated_at", "finished_at"):
        if c in df.columns:
            df = df.with_columns(
                (pl.col(c).cast(pl.Float64) * 1e6).cast(pl.Int64)
                .cast(pl.Datetime("us", "UTC")).alias(c))
    if rows:
        df = df.sort("created_at", maintain_order=True)
    return df


def filter_runs(df: pl.DataFrame,
                filters: Mapping[str, Any] | pl.Expr | None) -> pl.DataFrame:
    """``df`` filtered as :meth:`Api.runs` documents (an expression, or column: value)."""
    if filters is None:
        return df
    if isinstance(filters, pl.Expr):
        return df.filter(filters)
    if not isinstance(filters, Mapping):
        raise UserInputError("filters must be a mapping or a polars expression",
                             hint='e.g. filters={"status": "completed"}')
    for col, want in filters.items():
        if col not in df.columns:
            raise UserInputError(f"unknown column {col!r} in filters",
                                 hint="columns: " + ", ".join(df.columns[:40]))
        df = df.filter(pl.col(col) == want)
    return df


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v if not isinstance(v, list) else str(v)
    return out
