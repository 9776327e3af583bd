"""Canonical JSON and digests: the bytes that assay hashes and signs.

Two records that mean the same thing must hash the same, on any machine, in any process. So
everything assay signs goes through :func:`canonical_json` first:

* object keys sorted by Unicode code point (which is also UTF-8 byte order), no whitespace,
  UTF-8 output with non-ASCII characters written as themselves (never ``\\uXXXX`` escapes);
* integers in decimal, floats in Python's shortest round-trip ``repr`` (``0.1``, ``1e+16``,
  ``-0.0``), which is exact and the same on every IEEE-754 platform;
* NaN and infinities, which JSON lacks, as the strings ``"NaN"``, ``"Infinity"`` and
  ``"-Infinity"``. To keep the encoding unambiguous, a *string* with one of those three values
  (a legal config value, such as a padding token) is written with a leading NUL character, as
  is any string that starts with NUL; otherwise ``float("nan")`` and ``"NaN"`` would hash
  alike. :func:`canonical_loads` undoes both, so a decode/encode round trip gives the same
  bytes;
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
import sys
from collections.abc import Mapping
from typing import Any

from ..errors import UserInputError

__all__ = [
    "NON_FINITE_STRINGS",
    "canonical_json",
    "canonical_loads",
    "from_strict_json",
    "rows_digest",
    "sha256_digest",
    "sha256_hex",
    "to_strict_json",
]

_ESCAPE = "\x00"  # marks a string that would otherwise read as a float (or as escaped)

NON_FINITE_STRINGS: dict[str, float] = {
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
}



def canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` as canonical JSON bytes (see the module docstring for the rules).

    Args:
        obj: A JSON-like value: dicts with str keys, lists/tuples, str, int, float, bool, None,
            NumPy scalars.

    Returns:
        The UTF-8 bytes of its canonical encoding.

    Raises:
        UserInputError: if ``obj`` holds a non-JSON type, a non-str key, a lone surrogate,
            or a reference cycle.
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


def to_strict_json(obj: Any) -> Any:
    """``obj`` as strict JSON values (what :func:`canonical_json` encodes, keys unsorted):
    NaN and infinities as ``"NaN"``/``"Infinity"``/``"-Infinity"``, a string that reads as
    one (or starts with NUL) NUL-escaped, tuples as lists. :func:`from_strict_json` undoes it.

    Raises:
        UserInputError: as :func:`canonical_json`.
    """
    return _normalize(obj, "value", set())


def from_strict_json(value: Any) -> Any:
    """The inverse of :func:`to_strict_json` (floats back from their strings, escapes off)."""
    return _restore(value)


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
        if isinstance(obj, str) and (obj in NON_FINITE_STRINGS or obj.startswith(_ESCAPE)):
            return _ESCAPE + obj  # the string, not the float its text names
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _float(float(obj))
    np = sys.modules.get("numpy")  # not imported: obj cannot be a NumPy scalar
    if np is not None and isinstance(obj, np.generic):
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


def _numpy_scalar(obj: Any, where: str) -> Any:
    import numpy as np

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
        if value.startswith(_ESCAPE):
            return value[1:]
        return NON_FINITE_STRINGS.get(value, value)
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    return value


def rows_digest(rows: Any) -> str:
    """See :func:`assay.store.digest.rows_digest` (kept here for compatibility)."""
    from .digest import rows_digest as _rd

    return _rd(rows)
