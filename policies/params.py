"""Parameter types of a search space and the helpers that build them.

See :mod:`assay.policies.space` for the space itself and its dict/YAML form.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from ..errors import UserInputError
from .records import FrozenDict

__all__ = [
    "PARAM_TYPES",
    "Choice",
    "Fixed",
    "Integer",
    "LogUniform",
    "Param",
    "ParamKind",
    "Uniform",
    "choice",
    "fixed",
    "integer",
    "loguniform",
    "uniform",
]


class ParamKind(StrEnum):
    """The parameter types a space can hold; the values are the dict-form keys."""

    UNIFORM = "uniform"
    LOGUNIFORM = "loguniform"
    INTEGER = "integer"
    CHOICE = "choice"
    FIXED = "fixed"


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise UserInputError(f"{what} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise UserInputError(f"{what} must be finite, got {value!r}")
    return out


_INT_LIMIT = 2**53
"""Integer bounds stay within the integers a float holds exactly (and int64 holds): the
searchers work in floats, so beyond it the values they suggest are not the integers meant."""


def _check_range(kind: str, low: float, high: float) -> None:
    if not math.isfinite(high - low):  # e.g. uniform(-1e308, 1e308): every sampler overflows
        raise UserInputError(
            f"{kind}({low:g}, {high:g}) is too wide: its width overflows a float",
            hint="use bounds whose difference is below about 1.8e308, or a log scale",
        )
    if low == high:
        raise UserInputError(
            f"{kind}({low:g}, {high:g}) is an empty range",
            hint="use a fixed value for a parameter that does not vary",
        )
    if low > high:
        raise UserInputError(
            f"{kind}({low:g}, {high:g}) has low >= high", hint="write the range as (low, high)"
        )


def _freeze_when(when: Mapping[str, Any] | None) -> FrozenDict | None:
    if when is None:
        return None
    if not isinstance(when, Mapping) or not when:
        raise UserInputError(
            f"a condition must be a non-empty mapping of parent -> value(s), got {when!r}",
            hint='for example when={"optimizer": "sgd"}',
        )
    out = {}
    for parent, allowed in when.items():
        values = tuple(allowed) if isinstance(allowed, list | tuple | set) else (allowed,)
        if not values:
            raise UserInputError(f"condition on {parent!r} allows no value")
        out[str(parent)] = values
    return FrozenDict(out)


@dataclass(frozen=True)
class Param(ABC):
    """Base of all parameter types.

    Attributes:
        when: Optional condition ``{parent: value or values}``; the parameter is active
            (sampled and present in configs) only when every parent has an allowed value.
    """

    when: FrozenDict | None = field(default=None, kw_only=True)

    kind: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", _freeze_when(self.when))

    @property
    def is_fixed(self) -> bool:
        """True for constants, which take no dimension of the search."""
        return False

    @abstractmethod
    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in this parameter's domain."""

    @abstractmethod
    def from_unit(self, u: float) -> Any:
        """Map ``u`` in [0, 1] to a value (log scale for log parameters)."""

    @abstractmethod
    def to_unit(self, value: Any) -> float:
        """Inverse of :meth:`from_unit`: the position of ``value`` in [0, 1]."""

    def grid(self, points: int) -> list[Any]:
        """``points`` evenly spaced values (all values of a discrete parameter, at most)."""
        return [self.from_unit(u) for u in np.linspace(0.0, 1.0, points)] if points > 1 else [
            self.from_unit(0.5)
        ]

    @abstractmethod
    def spec(self) -> Any:
        """The dict-form spec of this parameter."""

    def _with_when(self, spec: dict[str, Any]) -> dict[str, Any]:
        if self.when:
            spec["when"] = {k: list(v) if len(v) > 1 else v[0] for k, v in self.when.items()}
        return spec


@dataclass(frozen=True)
class Uniform(Param):
    """A float drawn uniformly from ``[low, high]``."""

    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "kind", ParamKind.UNIFORM.value)
        low, high = _number(self.low, "uniform low"), _number(self.high, "uniform high")
        _check_range("uniform", low, high)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def contains(self, value: Any) -> bool:
        return _is_number(value) and self.low <= float(value) <= self.high

    def from_unit(self, u: float) -> float:
        return float(self.low + min(max(u, 0.0), 1.0) * (self.high - self.low))

    def to_unit(self, value: Any) -> float:
        return (float(value) - self.low) / (self.high - self.low)

    def spec(self) -> Any:
        return self._with_when({self.kind: [self.low, self.high]})


@dataclass(frozen=True)
class LogUniform(Param):
    """A positive float drawn uniformly in log space from ``[low, high]``."""

    low: float = 1e-3
    high: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "kind", ParamKind.LOGUNIFORM.value)
        low, high = _number(self.low, "loguniform low"), _number(self.high, "loguniform high")
        if low <= 0.0 or high <= 0.0:
            raise UserInputError(
                f"loguniform({low:g}, {high:g}) reaches zero or below: a log range must be "
                "strictly positive",
                hint="use uniform(...) for ranges through zero, or a positive low bound",
            )
        _check_range("loguniform", low, high)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def contains(self, value: Any) -> bool:
        return _is_number(value) and self.low * (1 - 1e-12) <= float(value) <= self.high * (
            1 + 1e-12
        )

    def from_unit(self, u: float) -> float:
        lo, hi = math.log(self.low), math.log(self.high)
        return float(min(max(math.exp(lo + min(max(u, 0.0), 1.0) * (hi - lo)), self.low), self.high))

    def to_unit(self, value: Any) -> float:
        lo, hi = math.log(self.low), math.log(self.high)
        return (math.log(max(float(value), 1e-300)) - lo) / (hi - lo)

    def spec(self) -> Any:
        return self._with_when({self.kind: [self.low, self.high]})


@dataclass(frozen=True)
class Integer(Param):
    """An integer in ``[low, high]`` (both included), optionally on a log scale."""

    low: int = 0
    high: int = 1
    log: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "kind", ParamKind.INTEGER.value)
        low, high = _number(self.low, "integer low"), _number(self.high, "integer high")
        if low != int(low) or high != int(high):
            raise UserInputError(f"integer({low:g}, {high:g}) needs whole-number bounds")
        if max(abs(low), abs(high)) > _INT_LIMIT:
            raise UserInputError(f"integer({low:g}, {high:g}) has a bound beyond 2**53",
                                 hint="use integer bounds within +-9007199254740992, or a "
                                      "loguniform float for a wider range")
        if self.log and low < 1:
            raise UserInputError(
                f"integer({low:g}, {high:g}, log=True) reaches zero or below: a log range must "
                "be strictly positive",
                hint="start the range at 1 or drop log=True",
            )
        _check_range("integer", low, high)
        object.__setattr__(self, "low", int(low))
        object.__setattr__(self, "high", int(high))
        object.__setattr__(self, "log", bool(self.log))

    def contains(self, value: Any) -> bool:
        return _is_number(value) and float(value) == int(value) and self.low <= value <= self.high

    def _edges(self) -> tuple[float, float]:
        if self.log:
            return math.log(self.low - 0.5 if self.low > 1 else 0.5), math.log(self.high + 0.5)
        return self.low - 0.5, self.high + 0.5

    def from_unit(self, u: float) -> int:
        lo, hi = self._edges()
        x = lo + min(max(u, 0.0), 1.0) * (hi - lo)
        value = math.exp(x) if self.log else x
        return int(min(max(round(value), self.low), self.high))

    def to_unit(self, value: Any) -> float:
        lo, hi = self._edges()
        x = math.log(float(value)) if self.log else float(value)
        return (x - lo) / (hi - lo)

    def grid(self, points: int) -> list[Any]:
        values = [self.from_unit(u) for u in np.linspace(0.0, 1.0, max(points, 1))]
        return sorted(set(values))

    def spec(self) -> Any:
        spec: dict[str, Any] = {self.kind: [self.low, self.high]}
        if self.log:
            spec["log"] = True
        return self._with_when(spec)


@dataclass(frozen=True)
class Choice(Param):
    """One of a finite list of options (strings, numbers, booleans, None)."""

    options: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "kind", ParamKind.CHOICE.value)
        if isinstance(self.options, str | bytes) or not isinstance(self.options, Sequence):
            raise UserInputError(
                f"choice(...) takes a list of options, got {self.options!r}",
                hint='write choice(["relu", "gelu"])',
            )
        options = tuple(self.options)
        if not options:
            raise UserInputError("choice([]) has no options", hint="give at least one option")
        if len({json.dumps(o, sort_keys=True, default=repr) for o in options}) != len(options):
            raise UserInputError(f"choice({list(options)!r}) repeats an option")
        object.__setattr__(self, "options", options)

    def contains(self, value: Any) -> bool:
        return any(_same(value, o) for o in self.options)

    def index(self, value: Any) -> int:
        """Position of ``value`` among the options."""
        for i, o in enumerate(self.options):
            if _same(value, o):
                return i
        raise UserInputError(f"{value!r} is not one of {list(self.options)!r}")

    def from_unit(self, u: float) -> Any:
        k = len(self.options)
        return self.options[min(int(min(max(u, 0.0), 1.0) * k), k - 1)]

    def to_unit(self, value: Any) -> float:
        return (self.index(value) + 0.5) / len(self.options)

    def grid(self, points: int) -> list[Any]:
        return list(self.options)

    def spec(self) -> Any:
        return self._with_when({self.kind: list(self.options)})


@dataclass(frozen=True)
class Fixed(Param):
    """A constant that every config carries."""

    value: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "kind", ParamKind.FIXED.value)

    @property
    def is_fixed(self) -> bool:
        return True

    def contains(self, value: Any) -> bool:
        return _same(value, self.value)

    def from_unit(self, u: float) -> Any:
        return self.value

    def to_unit(self, value: Any) -> float:
        return 0.5

    def grid(self, points: int) -> list[Any]:
        return [self.value]

    def spec(self) -> Any:
        if self.when or isinstance(self.value, Mapping):
            return self._with_when({self.kind: self.value})
        return self.value


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(
        value, int | float | np.integer | np.floating
    ) and math.isfinite(float(value))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):  # True == 1 must not match choice([1, 2])
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return float(a) == float(b)
    return bool(a == b)


def uniform(low: float, high: float, *, when: Mapping[str, Any] | None = None) -> Uniform:
    """A float uniform on ``[low, high]``."""
    return Uniform(low=low, high=high, when=when)  # type: ignore[arg-type]


def loguniform(low: float, high: float, *, when: Mapping[str, Any] | None = None) -> LogUniform:
    """A positive float uniform in log space on ``[low, high]``."""
    return LogUniform(low=low, high=high, when=when)  # type: ignore[arg-type]


def integer(
    low: int, high: int, *, log: bool = False, when: Mapping[str, Any] | None = None
) -> Integer:
    """An integer on ``[low, high]`` (inclusive), optionally log-scaled."""
    return Integer(low=low, high=high, log=log, when=when)  # type: ignore[arg-type]


def choice(options: Sequence[Any], *, when: Mapping[str, Any] | None = None) -> Choice:
    """One of ``options``."""
    return Choice(options=options, when=when)  # type: ignore[arg-type]


def fixed(value: Any, *, when: Mapping[str, Any] | None = None) -> Fixed:
    """A constant (plain values in a space dict mean the same)."""
    return Fixed(value=value, when=when)  # type: ignore[arg-type]


PARAM_TYPES: dict[str, type[Param]] = {
    ParamKind.UNIFORM.value: Uniform,
    ParamKind.LOGUNIFORM.value: LogUniform,
    ParamKind.INTEGER.value: Integer,
    ParamKind.CHOICE.value: Choice,
    ParamKind.FIXED.value: Fixed,
}
