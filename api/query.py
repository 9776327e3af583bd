"""The runs table behind ``GET /api/runs``: filter, sort and paginate in Polars.

:class:`RunsIndex` keeps the ``runs`` table parsed into one Polars frame and refreshes it
incrementally: a refresh that finds the table's version unchanged costs one version check;
otherwise only rows whose ``updated_at`` moved are re-read and re-parsed (plus a full re-read
every :data:`FULL_REFRESH` seconds, in case writers' clocks disagree). Queries then run on the
cached frame in milliseconds.

Columns of the frame (what ``sort=`` and ``filter=`` name, and ``GET /api/runs/columns`` lists):

- the run columns (:data:`CORE_COLUMNS`);
- ``config.<path>``: nested config dicts flattened with dots;
- ``summary.<key>``: a metric's last value, or the value set explicitly (which wins);
- ``summary_min.<key>``, ``summary_max.<key>``: a metric's minimum and maximum. They have a
  family of their own because any text is a valid key: a metric named ``loss.max`` is
  ``summary.loss.max``, and the maximum of ``loss`` is ``summary_max.loss``.

Two leaves that flatten to one name (config ``{"a.b": 1, "a": {"b": 2}}``) both stay: the one
with the fewer path parts keeps the dotted name (``config.a.b`` is 1), the other is named by its
path as a JSON list (``config.["a","b"]`` is 2).

Column values in the frame: numbers are floats (NaN as null, so NaN sorts last), lists are
JSON text; a column mixing numbers and text is text, and numeric comparisons on it cast
(non-numbers drop out).

Filters (``COLUMN OP VALUE``): ``~`` tests whether the column's text contains VALUE exactly as
typed; on ``tags`` ``=``/``!=`` test membership and ``~`` whether some tag contains VALUE. On
numeric columns VALUE is a number (``Infinity``, ``-Infinity`` and ``NaN`` included; ``=NaN``
is ``=null``), and ordering a numeric column against text is an error.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from ..errors import UserInputError
from .store_ext import ServerStore

__all__ = ["CORE_COLUMNS", "FULL_REFRESH", "RunsIndex", "RunsPage", "RunsQuery"]

FULL_REFRESH = 120.0
_OVERLAP = 10.0  # seconds of updated_at re-read on each incremental refresh
CORE_COLUMNS = ["run_id", "project", "name", "status", "group", "tags", "notes", "created_at",
                "updated_at", "finished_at", "host", "last_step", "ingested_seq", "error"]
_READ = [*CORE_COLUMNS, "config", "summary", "summary_set"]
_ORDER_OPS = ("<", "<=", ">", ">=")
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
DYNAMIC_PREFIXES = ("config.", "summary.", "summary_min.", "summary_max.")
"""Column families that exist once some run logs them (a missing one is all null)."""
_FILTER_RE = re.compile(r"^\s*(?P<col>[^<>=!~]+?)\s*(?P<op>==|!=|<=|>=|=|<|>|~)\s*(?P<val>\S.*?)\s*$")


def _text_value(raw: str) -> str:
    """A filter value as text: a JSON string literal ("a b") unquoted, anything else as typed."""
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            v = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(v, str):
            return v
    return raw


def _parse_value(col: str, raw: str) -> Any:
    """A filter value: JSON scalars (numbers, true/false, null, "quoted"), else the text.

    Infinity/NaN stay text here (a name may be "NaN"); numeric columns parse them as floats.
    """
    try:
        val = json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        return raw
    if isinstance(val, (list, dict)):
        raise UserInputError(f"filter values are single numbers, strings, true/false or null, "
                             f"not {raw}",
                             hint=f"lists and dicts are stored as JSON text: match it with "
                                  f"{col}~{raw}; for tags use tags=NAME")
    return val


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _json_text(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _cell(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        f = float(v)
        return None if math.isnan(f) else f
    return json.dumps(v, separators=(",", ":"), default=str)


def _leaves(d: Mapping[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out += _leaves(v, (*path, str(k)))
        else:
            out.append(((*path, str(k)), v))
    return out


def _flatten(leaves: Sequence[tuple[tuple[str, ...], Any]], prefix: str, out: dict[str, Any]) -> None:
    """Name each leaf ``prefix + ".".join(path)``; leaves that would share a name keep both.

    ``{"a.b": 1, "a": {"b": 2}}`` both flatten to ``a.b``. The plain name goes to the leaf with
    the fewest path parts (the literal key ``"a.b"``, which is also what the dashboard shows
    for ``a.b``); each other one is named by its path as a JSON list, ``prefix + '["a","b"]'``.
    A later leaf with the same path as an earlier one replaces it (explicit summary values
    override metric summaries).
    """
    by_path: dict[tuple[str, ...], Any] = {}
    for path, v in leaves:
        by_path.pop(path, None)
        by_path[path] = v
    names: dict[str, list[tuple[str, ...]]] = {}
    for path in by_path:
        names.setdefault(".".join(path), []).append(path)
    for name, paths in names.items():
        paths.sort(key=len)
        for i, path in enumerate(paths):
            col = prefix + (name if i == 0 else json.dumps(list(path), separators=(",", ":")))
            while col in out:  # a user key that is itself a JSON list: never overwrite
                col += "'"
            out[col] = _cell(by_path[path])


@dataclass(frozen=True)
class RunsQuery:
    """What ``GET /api/runs`` asks for (validated by :meth:`RunsIndex.query`)."""

    project: str | None = None
    status: Sequence[str] = ()
    tags: Sequence[str] = ()
    filters: Sequence[str] = ()
    sort: str = "created_at"
    order: str = "desc"
    limit: int = 50
    offset: int = 0
    cursor: str | None = None

    def fingerprint(self) -> str:
        raw = json.dumps([self.project, sorted(self.status), sorted(self.tags),
                          sorted(self.filters), self.sort, self.order])
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RunsPage:
    total: int
    runs: list[dict[str, Any]]
    next_cursor: str | None
    offset: int


class RunsIndex:
    """A cached, incrementally refreshed frame of every run (thread-safe)."""

    def __init__(self, store: ServerStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._version = -2
        self._frame = pl.DataFrame(schema={c: pl.String for c in ("run_id", "project")})
        self._details: dict[str, dict[str, Any]] = {}
        self._max_updated = 0.0
        self._full_at = 0.0
        self.generation = 0
        self._gen: dict[str, int] = {}

    # -- refresh --------------------------------------------------------------------------
    def refresh(self) -> pl.DataFrame:
        """Bring the frame up to the store's latest commit; return it."""
        with self._lock:
            version = self.store.runs_version()
            now = time.monotonic()
            full = version < self._version or now - self._full_at > FULL_REFRESH
            if version == self._version and not full:
                return self._frame
            where = None if full else f"updated_at > {self._max_updated - _OVERLAP!r}"
            table = self.store.runs_columns(_READ, where)
            self._apply(table.to_pylist(), full)
            self._version = version
            if full:
                self._full_at = now
            return self._frame

    def _apply(self, rows: list[dict[str, Any]], full: bool) -> None:
        changed: list[dict[str, Any]] = []
        seen: set[str] = set()
        for raw in rows:
            rid = raw["run_id"]
            seen.add(rid)
            old = self._details.get(rid)
            if old is not None and (old["updated_at"], old["ingested_seq"], old["status"]) == (
                    raw["updated_at"], raw["ingested_seq"], raw["status"]):
                continue
            changed.append(raw)
        gone = set(self._details) - seen if full else set()
        if not changed and not gone:
            return
        new_rows = []
        for raw in changed:
            detail, flat = _parse(raw)
            self._details[raw["run_id"]] = detail
            new_rows.append(flat)
            self._max_updated = max(self._max_updated, raw["updated_at"] or 0.0)
        for rid in gone:
            self._details.pop(rid, None)
        self.generation += 1
        for raw in changed:
            self._gen[raw["run_id"]] = self.generation
        for rid in gone:
            self._gen.pop(rid, None)
        drop = {r["run_id"] for r in changed} | gone
        parts = []
        if self._frame.height and "run_id" in self._frame.columns:
            parts.append(self._frame.filter(~pl.col("run_id").is_in(list(drop))))
        if new_rows:
            parts.append(pl.DataFrame(new_rows, infer_schema_length=None, strict=False))
        frame = pl.concat(parts, how="diagonal_relaxed") if parts else self._frame.clear()
        floats = [c for c, t in frame.schema.items() if t == pl.Float64]
        if floats:
            frame = frame.with_columns(pl.col(floats).fill_nan(None))
        self._frame = frame

    def changed_since(self, generation: int) -> list[str]:
        """Ids of runs whose row changed after ``generation`` (for the live stream)."""
        with self._lock:
            return [rid for rid, g in self._gen.items() if g > generation]

    def detail(self, run_id: str) -> dict[str, Any] | None:
        """The parsed row of a run as last refreshed (status, seq, config, summary, ...)."""
        return self._details.get(run_id)

    # -- queries --------------------------------------------------------------------------
    def columns(self, project: str | None = None) -> list[str]:
        df = self.refresh()
        if project is not None and df.height:
            df = df.filter(pl.col("project") == project)
            df = df.select([c for c in df.columns if df[c].null_count() < df.height])
        return df.columns

    def projects(self) -> list[dict[str, Any]]:
        """One entry per project: run counts by status and the last update."""
        df = self.refresh()
        if df.height == 0 or "project" not in df.columns:
            return []
        agg = (df.group_by("project")
               .agg(pl.len().alias("runs"),
                    (pl.col("status") == "running").sum().alias("running"),
                    pl.col("updated_at").max().alias("updated_at"),
                    pl.col("created_at").min().alias("created_at"))
               .sort("project"))
        return agg.to_dicts()

    def query(self, q: RunsQuery) -> RunsPage:
        """Filter, sort and paginate (offset or keyset cursor).

        Raises:
            UserInputError: a bad filter, an unknown core column, or a cursor of another query.
        """
        if q.order not in ("asc", "desc"):
            raise UserInputError(f"order must be 'asc' or 'desc', not {q.order!r}", hint="order=desc")
        for f in q.filters:
            if not _FILTER_RE.match(f):
                self._filter_expr(pl.DataFrame(), f)  # raises the parse error
        if q.sort not in CORE_COLUMNS and not q.sort.startswith(DYNAMIC_PREFIXES):
            raise UserInputError(f"cannot sort by unknown column {q.sort!r}",
                                 hint="sort by a run column (" + ", ".join(CORE_COLUMNS)
                                 + ") or a config./summary./summary_min./summary_max. column")
        cursor = self._decode_cursor(q) if q.cursor else None
        df = self.refresh()
        if df.height == 0 or "run_id" not in df.columns:
            return RunsPage(0, [], None, q.offset)
        if q.project is not None:
            df = df.filter(pl.col("project") == q.project)
        if q.status:
            df = df.filter(pl.col("status").is_in(list(q.status)))
        for tag in q.tags:
            df = df.filter(pl.col("tags").list.contains(tag))
        for f in q.filters:
            df = df.filter(self._filter_expr(df, f))
        sort = q.sort
        desc = q.order == "desc"
        if sort not in df.columns:
            if not sort.startswith(DYNAMIC_PREFIXES):
                raise UserInputError(f"cannot sort by unknown column {sort!r}",
                                     hint="sort by a run column (" + ", ".join(CORE_COLUMNS)
                                     + ") or a config./summary./summary_min./summary_max. column")
            df = df.with_columns(pl.lit(None).alias(sort))
        if df.schema[sort] == pl.List(pl.String):
            df = df.with_columns(pl.col(sort).list.join(",").alias("_sort"))
            sort = "_sort"
        offset = q.offset
        total = df.height
        if cursor is not None:
            value, after_id = cursor
            c, idc = pl.col(sort), pl.col("run_id")
            id_after = (idc < after_id) if desc else (idc > after_id)
            try:
                if value is None:
                    cond = c.is_null() & id_after
                else:
                    beyond = (c < value) if desc else (c > value)
                    cond = beyond | ((c == value) & id_after) | c.is_null()
                df = df.filter(cond)
            except pl.exceptions.PolarsError as exc:
                raise UserInputError(f"cursor does not fit column {q.sort!r}: {exc}",
                                     hint="start again without a cursor") from None
            offset = 0
        remaining = df.height
        df = df.sort([sort, "run_id"], descending=[desc, desc], nulls_last=True)
        page = df.slice(offset, q.limit)
        next_cursor = None
        if offset + page.height < remaining and page.height:
            last = page.row(page.height - 1, named=True)
            next_cursor = self._encode_cursor(q, last[sort], last["run_id"])
        out = []
        for row in page.select(CORE_COLUMNS).iter_rows(named=True):
            d = self._details.get(row["run_id"], {})
            # summary_stats: {key: {"last", "min", "max", "step"}} per metric, as GET
            # /api/runs/{id} has it (what the SDK's remote Api needs for summary_min/max).
            out.append({**row, "config": d.get("config", {}), "summary": d.get("summary", {}),
                        "summary_stats": d.get("summary_stats", {})})
        return RunsPage(total, out, next_cursor, offset)

    @staticmethod
    def _filter_expr(df: pl.DataFrame, text: str) -> pl.Expr:
        m = _FILTER_RE.match(text)
        if not m:
            raise UserInputError(f"cannot parse filter {text!r}",
                                 hint="write COLUMN OP VALUE with OP one of = != < <= > >= ~, "
                                      "e.g. config.lr<=0.01 or summary.val/acc>0.9")
        col, op, raw = m.group("col"), m.group("op"), m.group("val")
        op = "=" if op == "==" else op
        if col not in df.columns:
            if col.startswith(DYNAMIC_PREFIXES):
                return pl.lit(False)  # nobody logged it: nothing matches
            raise UserInputError(f"unknown filter column {col!r}",
                                 hint="filter on a run column (" + ", ".join(CORE_COLUMNS)
                                 + ") or a config./summary./summary_min./summary_max. column")
        c = pl.col(col)
        dtype = df.schema[col]
        word = _text_value(raw)
        if isinstance(dtype, pl.List):  # tags: membership, never a cast of the whole list
            if op not in ("=", "!=", "~"):
                raise UserInputError(f"{col} is a list of text, not numbers: only = (has), != "
                                     "(lacks) and ~ (some item contains) apply",
                                     hint=f"e.g. {col}={word}")
            if dtype.inner == pl.Null:  # no run has any: nothing to have
                return pl.lit(op == "!=")
            items = c.cast(pl.List(pl.String), strict=False)
            if op == "~":
                hit = items.list.eval(pl.element().str.contains(word, literal=True)).list.any()
            else:
                hit = items.list.contains(word)
            hit = hit.fill_null(False)
            return ~hit if op == "!=" else hit
        if op == "~":  # the text as typed: 1e-3 stays 1e-3, true stays true
            if dtype == pl.Null:
                return pl.lit(False)
            return c.cast(pl.String, strict=False).str.contains(word, literal=True).fill_null(False)
        val = _parse_value(col, raw)
        numeric = dtype.is_numeric()
        if (numeric or dtype == pl.Null) and isinstance(val, str):
            try:
                num = float(val)  # Infinity, -Infinity, NaN, inf, "5"
            except ValueError:
                num = None
            # An all-null column (only NaN or None logged) still reads NaN as null.
            if num is not None and (numeric or math.isnan(num)):
                val = num
        if val is None or (isinstance(val, float) and math.isnan(val)):
            if op not in ("=", "!="):
                raise UserInputError(f"cannot order {col} against {raw}",
                                     hint=f"test for a missing value with {col}=null or {col}!=null")
            # NaN is stored as null (see the module docstring): =NaN finds both.
            return c.is_null() if op == "=" else c.is_not_null()
        is_number = isinstance(val, (int, float)) and not isinstance(val, bool)
        if numeric:
            if is_number:
                val = float(val)
            elif op in _ORDER_OPS:
                raise UserInputError(f"{col} holds numbers; {raw!r} is not a number",
                                     hint=f"compare it with a number, e.g. {col}{op}0.5")
            else:  # = / != against text: compares the text form (nothing equals 'abc')
                c = c.cast(pl.String, strict=False)
                val = _json_text(val)
        elif is_number:
            if dtype == pl.String:
                c = c.cast(pl.Float64, strict=False)  # non-numbers drop out
            elif dtype not in (pl.Null,):
                raise UserInputError(f"column {col!r} holds {dtype}, not numbers",
                                     hint=f"compare it with a string: {col}={raw!r}")
            val = float(val)
        elif isinstance(val, bool) and dtype != pl.Boolean:
            c = c.cast(pl.String, strict=False)
            val = "true" if val else "false"
        elif isinstance(val, str) and dtype != pl.String:
            c = c.cast(pl.String, strict=False)
        exprs = {"=": c == val, "!=": c != val, "<": c < val, "<=": c <= val,
                 ">": c > val, ">=": c >= val}
        return exprs[op].fill_null(op == "!=")

    @staticmethod
    def _encode_cursor(q: RunsQuery, value: Any, run_id: str) -> str:
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        d: dict[str, Any] = {"v": value, "id": run_id, "q": q.fingerprint()}
        if isinstance(value, float) and not math.isfinite(value):
            # JSON has no inf/NaN: say which one, so the next page starts right after it
            # (None would mean "after the nulls" and skip every finite row).
            d["v"], d["nf"] = None, repr(value)
        raw = json.dumps(d, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def _decode_cursor(q: RunsQuery) -> tuple[Any, str]:
        try:
            text = q.cursor or ""
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            d = json.loads(raw)
            value, rid, fp = d["v"], d["id"], d["q"]
            if "nf" in d:
                value = _NON_FINITE[d["nf"]]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            rid = None
        if not isinstance(rid, str) or isinstance(value, (list, dict)):
            raise UserInputError("malformed cursor",
                                 hint="pass next_cursor from the previous page unchanged")
        if fp != q.fingerprint():
            raise UserInputError("this cursor belongs to a query with other filters or sort",
                                 hint="keep filters, sort and order unchanged while paging")
        return value, rid


def _parse(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(details for output, flat row for the frame) of one ``runs`` row."""
    config = json.loads(raw["config"] or "{}")
    summary = json.loads(raw["summary"] or "{}")
    summary_set = json.loads(raw["summary_set"] or "{}")
    values = {k: s.get("last") for k, s in summary.items()}
    values.update(summary_set)
    flat: dict[str, Any] = {c: raw[c] for c in CORE_COLUMNS}
    flat["tags"] = list(raw["tags"] or [])
    _flatten(_leaves(config), "config.", flat)
    # Metric keys are one path part each (a key "loss.max" is just a name); values set
    # explicitly come after them, so the same key's explicit value wins.
    _flatten([((k,), s.get("last")) for k, s in summary.items()] + _leaves(summary_set),
             "summary.", flat)
    for k, s in summary.items():  # statistics: a family of their own, no user key lands there
        flat[f"summary_min.{k}"] = _cell(s.get("min"))
        flat[f"summary_max.{k}"] = _cell(s.get("max"))
    detail = {c: raw[c] for c in CORE_COLUMNS}
    detail["tags"] = list(raw["tags"] or [])
    detail.update(config=config, summary=values, summary_stats=summary)
    return detail, flat
