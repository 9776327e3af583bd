"""Turn config and summary values into JSON-safe Python values, or say what is wrong."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import enum
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from ..errors import UserInputError

__all__ = ["to_jsonable"]


def to_jsonable(obj: Any, *, what: str, path: str = "") -> Any:
    """Convert ``obj`` (nested dicts/lists of scalars; NumPy and torch scalars and arrays,
    paths, enums, datetimes, dataclass instances and argparse namespaces are converted) or
    raise :class:`UserInputError`."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise UserInputError(
                    f"{what} key {path}{k!r} is a {type(k).__name__}, not a string",
                    hint=f"use string keys in {what}",
                )
            out[k] = to_jsonable(v, what=what, path=f"{path}{k}.")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, what=what, path=f"{path}[{i}].") for i, v in enumerate(obj)]
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, what=what, path=path)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # as init(config=) takes
        return to_jsonable(dataclasses.asdict(obj), what=what, path=path)
    if isinstance(obj, argparse.Namespace):
        return to_jsonable(vars(obj), what=what, path=path)
    tolist = getattr(obj, "tolist", None)  # numpy scalars/arrays, torch tensors
    if callable(tolist):
        if hasattr(obj, "detach"):
            obj = obj.detach().cpu()
            tolist = obj.tolist
        return to_jsonable(tolist(), what=what, path=path)
    name = path.rstrip(".") or "value"
    raise UserInputError(
        f"{what} entry {name!r} has a value of type {type(obj).__name__} that cannot be stored "
        f"as JSON: {obj!r:.80}",
        hint=f"store plain numbers, strings, lists or dicts in {what} (e.g. str(value))",
    )


def is_finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
