"""Canonical JSON and digests: the bytes that assay hashes and signs.

Two records that mean the same thing must hash the same, on any machine, in any process. So
everything assay signs goes through :func:`canonical_json` first:

* object keys sorted by Unicode code point (which is also UTF-8 byte order), no whitespace,
  UTF-8 output with non-ASCII characters written as themselves (never ``\\uXXXX`` escapes);
* integers in decimal, floats in Python's shortest round-trip ``repr`` (``0.1``, ``1e+16``,
  ``-0.0``), which is exact and the same on every IEEE-754 platform;
* NaN and infinities, which JSON lacks, as the strings ``"NaN"``, ``"Infinity"`` and
  ``"-Infinity"``. To keep the encoding unambiguous, a *string* with one of those three values
  is rejected: otherwise ``float("nan")`` and ``"NaN"`` would hash alike. :func:`canonical_loads`
  turns the three strings back into floats, so a decode/encode round trip gives the same bytes;
* only JSON types: ``dict`` with ``str`` keys, ``list``/``tuple``, ``str``, ``int``, ``float``,
  ``bool``, ``None``, and NumPy scalars (converted to their Python twins). Anything else (sets,
  bytes, datetimes, objects, non-string keys) is a :class:`~assay.errors.UserInputError` that
  names where in the value it sits.

:func:`rows_digest` digests many metric rows at once, column-wise, without per-row JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from ..errors import UserInputError

__all__ = [
    "NON_FINITE_STRINGS",
    "canonical_json",
    "canonical_loads",
    "rows_digest",
    "sha256_digest",
    "sha256_hex",
]

NON_FINITE_STRINGS: dict[str, float] = {
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
}

_ROWS_DOMAIN = b"assay.rows_digest.v1\n"
_CANONICAL_NAN = np.int64(0x7FF8000000000000)


def canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` as canonical JSON bytes (see the module docstring for the rules).

    Args:
        obj: A JSON-like value: dicts with str keys, lists/tuples, str, int, float, bool, None,
            NumPy scalars.

    Returns:
        The UTF-8 bytes of its canonical encoding.

    Raises:
        UserInputError: if ``obj`` holds a non-JSON type, a non-str key, a string equal to
            ``"NaN"``/``"Infinity"``/``"-Infinity"``, a lone surrogate, or a reference cycle.
    """
    plain = _normalize(obj, "value", set())
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UserInputError(
            "value holds a string that is not valid Unicode (a lone surrogate)",
            hint="decode bytes with errors='replace' or drop the invalid characters first",
        ) from exc


def canonical_loads(data: bytes | str) -> Any:
    """Decode canonical JSON, turning ``"NaN"``/``"Infinity"``/``"-Infinity"`` back into floats.

    ``canonical_json(canonical_loads(b)) == b`` for every ``b`` that :func:`canonical_json`
    produced.
    """
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"not valid JSON: {exc}",
                             hint="pass bytes produced by canonical_json") from exc
    return _restore(value)


def sha256_hex(obj: Any) -> str:
    """Return the hex SHA-256 of ``canonical_json(obj)``."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def sha256_digest(obj: Any) -> str:
    """Return ``"sha256:<hex>"`` of ``canonical_json(obj)`` (the form blob digests use)."""
    return "sha256:" + sha256_hex(obj)


def _normalize(obj: Any, where: str, active: set[int]) -> Any:
    # bool before int: bool is a subclass of int and must stay true/false.
    if obj is None or isinstance(obj, bool | str):
        if isinstance(obj, str) and obj in NON_FINITE_STRINGS:
            raise UserInputError(
                f"{where} is the string {obj!r}, which canonical JSON reserves for the float",
                hint=f"pass float({obj!r}) if you meant the number, or another string",
            )
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _float(float(obj))
    if isinstance(obj, np.generic):
        return _numpy_scalar(obj, where)
    if isinstance(obj, Mapping):
        return _container(obj, where, active, _mapping)
    if isinstance(obj, list | tuple):
        return _container(obj, where, active, _sequence)
    raise UserInputError(
        f"{where} is a {type(obj).__name__}, which canonical JSON cannot encode",
        hint="convert it to a JSON type first (sets to sorted lists, datetimes to ISO strings, "
             "bytes to hex or base64, objects to dicts)",
    )


def _container(obj: Any, where: str, active: set[int], encode: Any) -> Any:
    if id(obj) in active:
        raise UserInputError(f"{where} contains itself (a reference cycle)",
                             hint="pass a tree of values, not a graph")
    active.add(id(obj))
    try:
        return encode(obj, where, active)
    finally:
        active.discard(id(obj))


def _mapping(obj: Mapping[Any, Any], where: str, active: set[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise UserInputError(
                f"{where} has a key {key!r} of type {type(key).__name__}; keys must be str",
                hint="convert the keys to strings yourself, so 1 and '1' cannot collide",
            )
        out[key] = _normalize(value, f"{where}[{key!r}]", active)
    return out


def _sequence(obj: list[Any] | tuple[Any, ...], where: str, active: set[int]) -> list[Any]:
    return [_normalize(v, f"{where}[{i}]", active) for i, v in enumerate(obj)]


def _float(x: float) -> float | str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _numpy_scalar(obj: np.generic, where: str) -> Any:
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return _float(float(obj))
    raise UserInputError(f"{where} is a NumPy {obj.dtype}, which canonical JSON cannot encode",
                         hint="convert it to int, float, bool or str first")


def _restore(value: Any) -> Any:
    if isinstance(value, str):
        return NON_FINITE_STRINGS.get(value, value)
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- metric rows

def rows_digest(rows: pa.Table | pl.DataFrame | Iterable[tuple[str, int, float]]) -> str:
    """Digest metric rows ``(key, step, value)`` independently of their order.

    The rows are sorted by ``key`` (UTF-8 byte order), then ``step``, then the bit pattern of
    ``value`` (a tie-break that only matters for duplicate ``(key, step)`` rows; every row
    counts, duplicates included, so pass rows deduplicated as the store holds them). Steps are
    int64, values float64 (float32 and integer values widen exactly); every NaN is hashed as the
    one quiet NaN, ``-0.0`` and ``0.0`` stay distinct. The hashed bytes are, in order::

        b"assay.rows_digest.v1\\n"
        u64 row count, u64 number of key runs
        per key run: u64 byte length, UTF-8 key, u64 rows in the run
        all steps as little-endian int64, then all values as little-endian float64

    so equal row sets give equal digests whatever the input type, chunking or order. One
    million rows take about a tenth of a second (a columnar sort and one pass of SHA-256).

    Args:
        rows: A pyarrow Table or polars DataFrame with columns ``key`` (string), ``step``
            (integer) and ``value`` (float or integer), other columns ignored; or an iterable
            of ``(key, step, value)`` tuples.

    Returns:
        ``"sha256:<hex>"``.

    Raises:
        UserInputError: on a missing column, a null, or a column of the wrong type.
    """
    frame = _rows_frame(rows)
    n = frame.height
    if n:
        keys = frame["key"].unique().sort()
        codes = frame["key"].cast(pl.Enum(keys.to_list())).to_physical()
        values = frame["value"].cast(pl.Float64).to_numpy()
        bits = values.view(np.int64).copy()
        bits[np.isnan(values)] = _CANONICAL_NAN
        order = pl.DataFrame({"c": codes, "s": frame["step"], "b": bits}).sort(["c", "s", "b"])
        runs = order["c"].rle()
        run_lengths = runs.struct.field("len").to_list()
        run_keys = [keys[c] for c in runs.struct.field("value").to_list()]
        steps = np.ascontiguousarray(order["s"].to_numpy(), dtype="<i8")
        value_bits = np.ascontiguousarray(order["b"].to_numpy(), dtype="<i8")
    else:
        run_lengths, run_keys = [], []
        steps = value_bits = np.empty(0, dtype="<i8")
    h = hashlib.sha256(_ROWS_DOMAIN)
    h.update(struct.pack("<QQ", n, len(run_keys)))
    for key, count in zip(run_keys, run_lengths, strict=True):
        raw = key.encode("utf-8")
        h.update(struct.pack("<Q", len(raw)) + raw + struct.pack("<Q", count))
    h.update(steps.data)
    h.update(value_bits.data)
    return "sha256:" + h.hexdigest()


def _rows_frame(rows: Any) -> pl.DataFrame:
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    if isinstance(rows, pa.Table):
        missing = {"key", "step", "value"} - set(rows.column_names)
        _check_missing(missing)
        frame = pl.from_arrow(rows.select(["key", "step", "value"]))
        if not isinstance(frame, pl.DataFrame):  # pragma: no cover - from_arrow of a Table
            raise UserInputError("could not read the rows as a table")
    elif isinstance(rows, pl.DataFrame):
        _check_missing({"key", "step", "value"} - set(rows.columns))
        frame = rows.select(["key", "step", "value"])
    elif isinstance(rows, str | bytes | Mapping):
        raise UserInputError(
            f"rows_digest takes a table or an iterable of (key, step, value), not a "
            f"{type(rows).__name__}",
            hint="pass a pyarrow Table, a polars DataFrame or a list of tuples",
        )
    else:
        frame = _frame_from_tuples(rows)
    return _check_types(frame)


def _frame_from_tuples(rows: Iterable[Any]) -> pl.DataFrame:
    keys: list[Any] = []
    steps: list[Any] = []
    values: list[Any] = []
    for i, row in enumerate(rows):
        try:
            key, step, value = row
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"row {i} is {row!r}, not a (key, step, value) triple",
                                 hint="yield 3-tuples") from exc
        keys.append(key)
        steps.append(step)
        values.append(value)
    try:
        return pl.DataFrame(
            {"key": keys, "step": steps, "value": values},
            schema={"key": pl.String, "step": pl.Int64, "value": pl.Float64},
            strict=True,
        )
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserInputError(f"could not read the rows as (str, int, float): {first_line}",
                             hint="keys must be str, steps int and values numbers") from exc


def _check_missing(missing: set[str]) -> None:
    if missing:
        raise UserInputError(f"rows lack the column(s) {sorted(missing)}",
                             hint="rename the columns to key, step and value")


def _check_types(frame: pl.DataFrame) -> pl.DataFrame:
    schema = frame.schema
    if schema["key"] != pl.String and not isinstance(schema["key"], pl.Categorical | pl.Enum):
        raise UserInputError(f"column key is {schema['key']}, not a string",
                             hint="cast key to a string column")
    if not schema["step"].is_integer():
        raise UserInputError(f"column step is {schema['step']}, not an integer",
                             hint="cast step to int64")
    if not schema["value"].is_numeric():
        raise UserInputError(f"column value is {schema['value']}, not numeric",
                             hint="cast value to float64")
    for name in ("key", "step", "value"):
        nulls = frame[name].null_count()
        if nulls:
            raise UserInputError(f"column {name} has {nulls} null(s)",
                                 hint="drop the rows with nulls or fill them (NaN for values)")
    return frame.with_columns(pl.col("key").cast(pl.String), pl.col("step").cast(pl.Int64))
