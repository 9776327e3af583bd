"""Search spaces: the space helpers, validation, (de)serialisation and encodings.

A space maps names to parameters::

    space = SearchSpace({
        "lr": loguniform(1e-5, 1e-1),
        "depth": integer(1, 8),
        "act": choice(["relu", "gelu"]),
        "optimizer": choice(["sgd", "adam"]),
        "momentum": uniform(0.0, 0.99, when={"optimizer": "sgd"}),  # conditional
        "epochs": 30,                                                 # fixed value
    })

or, in the dict/JSON/YAML form objectives are written in::

    lr: {loguniform: [1.0e-5, 0.1]}
    depth: {integer: [1, 8]}
    act: {choice: [relu, gelu]}
    momentum: {uniform: [0.0, 0.99], when: {optimizer: sgd}}
    epochs: 30

A mapping value is always a parameter spec (a fixed mapping value is written
``{fixed: {...}}``), so a misspelt type is an error rather than a silent constant.
Conditional parameters name parents defined before them; an inactive parameter is
absent from the config.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import UserInputError
from .params import (
    PARAM_TYPES,
    Choice,
    Fixed,
    Integer,
    LogUniform,
    Param,
    ParamKind,
    Uniform,
    choice,
    fixed,
    integer,
    loguniform,
    uniform,
)

__all__ = [
    "Choice",
    "Fixed",
    "Integer",
    "LogUniform",
    "Param",
    "ParamKind",
    "SearchSpace",
    "Uniform",
    "as_space",
    "choice",
    "fixed",
    "integer",
    "loguniform",
    "uniform",
]

_SPEC_EXTRAS = {"when", "log"}


def _parse_param(name: str, value: Any) -> Param:
    if isinstance(value, Param):
        return value
    if not isinstance(value, Mapping):
        return Fixed(value=value)
    kinds = [k for k in value if k not in _SPEC_EXTRAS]
    if len(kinds) != 1:
        known = ", ".join(PARAM_TYPES)
        raise UserInputError(
            f"parameter {name!r}: a spec needs exactly one type key, got {sorted(map(str, value))}",
            hint=f"write e.g. {{loguniform: [1e-4, 0.1]}}; types: {known}; "
            "wrap a constant mapping as {fixed: {...}}",
        )
    kind = str(kinds[0])
    args = value[kinds[0]]
    when = value.get("when")
    extra = set(value) - {kinds[0]} - ({"when", "log"} if kind == "integer" else {"when"})
    if extra:
        raise UserInputError(f"parameter {name!r}: unexpected keys {sorted(extra)} for {kind}")
    try:
        if kind in ("uniform", "loguniform", "integer"):
            if isinstance(args, Mapping):
                low, high = args.get("low"), args.get("high")
            elif isinstance(args, list | tuple) and len(args) == 2:
                low, high = args
            else:
                raise UserInputError(
                    f"parameter {name!r}: {kind} takes [low, high], got {args!r}",
                    hint=f"write {{{kind}: [low, high]}}",
                )
            # None bounds (a mapping without low/high) fail the number checks below.
            if kind == "uniform":
                return uniform(low, high, when=when)  # type: ignore[arg-type]
            if kind == "loguniform":
                return loguniform(low, high, when=when)  # type: ignore[arg-type]
            return integer(low, high, log=bool(value.get("log", False)), when=when)  # type: ignore[arg-type]
        if kind == "choice":
            return choice(args, when=when)
        if kind == "fixed":
            return fixed(args, when=when)
    except UserInputError as err:  # named once, whether or not the check named it
        said = err.message if err.message.startswith(f"parameter {name!r}") else \
            f"parameter {name!r}: {err.message}"
        raise UserInputError(said, hint=err.hint) from None
    raise UserInputError(
        f"parameter {name!r}: unknown parameter type {kind!r}",
        hint=f"known types: {', '.join(PARAM_TYPES)}",
    )


class SearchSpace(Mapping[str, Param]):
    """An ordered, immutable mapping of parameter names to parameters.

    Args:
        params: Name -> :class:`Param`, dict-form spec, or constant. Order matters for
            conditional parameters: a parent must come before its children.

    Raises:
        UserInputError: for empty spaces, bad names, bad specs, or conditions naming
            unknown or later parents or values outside the parent's domain.
    """

    _params: dict[str, Param]

    def __init__(self, params: Mapping[str, Any]) -> None:
        if isinstance(params, SearchSpace):
            params = dict(params._params)
        if not isinstance(params, Mapping) or not params:
            raise UserInputError(
                "a search space needs at least one parameter",
                hint='for example {"lr": loguniform(1e-5, 1e-1)}',
            )
        parsed: dict[str, Param] = {}
        for name, value in params.items():
            if not isinstance(name, str) or not name:
                raise UserInputError(f"parameter names must be non-empty strings, got {name!r}")
            param = _parse_param(name, value)
            for parent, allowed in (param.when or {}).items():
                if parent not in parsed:
                    raise UserInputError(
                        f"parameter {name!r} depends on {parent!r}, which is not defined before it",
                        hint="list parents before the parameters conditioned on them",
                    )
                bad = [v for v in allowed if not parsed[parent].contains(v)]
                if bad:
                    raise UserInputError(
                        f"parameter {name!r}: condition values {bad!r} are not in {parent!r}'s "
                        "domain"
                    )
            parsed[name] = param
        self._params = parsed
        self.tunable: tuple[str, ...] = tuple(n for n, p in parsed.items() if not p.is_fixed)
        """Names of the parameters that vary (one dimension each in :meth:`to_unit`)."""

    # Mapping protocol
    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"SearchSpace({self.to_dict()!r})"

    @property
    def has_conditions(self) -> bool:
        """True when some parameter is conditional."""
        return any(p.when for p in self._params.values())

    def is_active(self, name: str, config: Mapping[str, Any]) -> bool:
        """Whether ``name`` is active under ``config`` (its parents' values allow it)."""
        when = self._params[name].when
        if not when:
            return True
        for parent, allowed in when.items():
            if parent not in config or not self.is_active(parent, config):
                return False
            if not any(self._params[parent].contains(v) and _eq(config[parent], v) for v in allowed):
                return False
        return True

    def complete(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A full config from tunable values: adds fixed values, drops inactive ones."""
        out: dict[str, Any] = {}
        for name, param in self._params.items():
            value = param.value if isinstance(param, Fixed) else values[name]
            if self.is_active(name, {**out, name: value}):
                out[name] = value
        return out

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A random config (log-uniform for log parameters)."""
        return self.from_unit(rng.random(len(self.tunable)))

    def from_unit(self, u: np.ndarray | list[float]) -> dict[str, Any]:
        """The config at point ``u`` of the unit cube (one coordinate per tunable name)."""
        u = np.asarray(u, dtype=float).reshape(-1)
        if u.shape[0] != len(self.tunable):
            raise UserInputError(
                f"expected {len(self.tunable)} unit coordinates, got {u.shape[0]}"
            )
        values = {n: self._params[n].from_unit(float(x)) for n, x in zip(self.tunable, u)}
        return self.complete(values)

    def to_unit(self, config: Mapping[str, Any]) -> np.ndarray:
        """Unit-cube coordinates of ``config``; inactive parameters sit at 0.5."""
        return np.array(
            [
                self._params[n].to_unit(config[n]) if n in config and self.is_active(n, config)
                else 0.5
                for n in self.tunable
            ],
            dtype=float,
        )

    def contains(self, config: Mapping[str, Any]) -> bool:
        """Whether ``config`` is a valid point of this space (see :meth:`validate`)."""
        try:
            self.validate(config)
        except UserInputError:
            return False
        return True

    def validate(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``config`` against the space and return its active part.

        Raises:
            UserInputError: when an active parameter is missing or out of its domain.
        """
        if not isinstance(config, Mapping):
            raise UserInputError(f"a config must be a mapping, got {type(config).__name__}")
        out: dict[str, Any] = {}
        for name, param in self._params.items():
            if not self.is_active(name, config):
                continue
            if name not in config:
                raise UserInputError(f"config lacks parameter {name!r}")
            if not param.contains(config[name]):
                raise UserInputError(
                    f"config value {name}={config[name]!r} is outside {param.spec()!r}"
                )
            out[name] = config[name]
        return out

    def key(self, config: Mapping[str, Any]) -> str:
        """A canonical string for ``config``'s active values, for duplicate detection."""
        active = {n: config.get(n) for n in self._params if self.is_active(n, config)}
        return json.dumps(
            {n: (round(float(v), 10) if _num(v) else v) for n, v in active.items()},  # type: ignore[arg-type]
            sort_keys=True,
            default=repr,
        )

    def grid(self, points_per_dim: int = 5) -> Iterator[dict[str, Any]]:
        """Every config of the grid, in a fixed order, without duplicates.

        Continuous parameters take ``points_per_dim`` evenly spaced values (log-spaced
        for log parameters); discrete ones all their values, up to ``points_per_dim`` for
        integers.
        """
        if points_per_dim < 1:
            raise UserInputError(f"points_per_dim must be >= 1, got {points_per_dim}")
        axes = [self._params[n].grid(points_per_dim) for n in self.tunable]
        seen: set[str] = set()
        for combo in itertools.product(*axes):
            config = self.complete(dict(zip(self.tunable, combo)))
            k = self.key(config)
            if k not in seen:
                seen.add(k)
                yield config

    def to_dict(self) -> dict[str, Any]:
        """The dict form (plain lists, numbers and strings)."""
        return {name: param.spec() for name, param in self._params.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Parse the dict form."""
        return cls(data)

    def to_json(self) -> str:
        """The dict form as JSON."""
        return json.dumps(self.to_dict(), sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> SearchSpace:
        """Parse the JSON form."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserInputError(f"search space is not valid JSON: {err}") from None
        return cls(data)

    def to_yaml(self) -> str:
        """The dict form as YAML (block style, order kept)."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_yaml(cls, text: str) -> SearchSpace:
        """Parse the YAML form."""
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise UserInputError(f"search space is not valid YAML: {err}") from None
        return cls(data)


def _num(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _num(a) and _num(b):
        return float(a) == float(b)
    return bool(a == b)


def as_space(space: SearchSpace | Mapping[str, Any]) -> SearchSpace:
    """Accept a :class:`SearchSpace` or anything its constructor takes."""
    return space if isinstance(space, SearchSpace) else SearchSpace(space)
