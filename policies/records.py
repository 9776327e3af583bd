"""The records that policies read and write: trial results, suggestions and stop reasons.

Policies are pure functions of a read-only history. The history is a sequence of
:class:`TrialResult`: one per trial, finished or not, with the curve of its objective
metric. Searchers answer with :class:`Suggestion` (a config and why it was chosen);
stoppers answer with :class:`StopReason` (which rule fired, and the evidence behind it).

All three are frozen dataclasses whose payloads are plain JSON-friendly values, so an
agent can persist them as decision rows without custom encoders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..errors import UserInputError
from ..frozen import FrozenDict

__all__ = ["FrozenDict", "StopReason", "Suggestion", "TrialResult", "TrialStatus", "json_safe"]


class TrialStatus(StrEnum):
    """Lifecycle state of a trial as the policies see it."""

    PENDING = "pending"
    """Suggested or queued, not started: counts as pending for batch suggestions."""
    RUNNING = "running"
    """Started, curve partial."""
    COMPLETED = "completed"
    """Ran its full budget; ``final`` is its result."""
    STOPPED = "stopped"
    """Stopped early by a stopper or a person; the curve is partial."""
    FAILED = "failed"
    """Crashed or diverged; may have a partial curve and no usable final value."""

    @property
    def is_finished(self) -> bool:
        """True for states that will never produce another curve point."""
        return self in (TrialStatus.COMPLETED, TrialStatus.STOPPED, TrialStatus.FAILED)

    @property
    def is_active(self) -> bool:
        """True for trials that occupy (or will occupy) a worker."""
        return self in (TrialStatus.PENDING, TrialStatus.RUNNING)


def _frozen_mapping(value: Mapping[str, Any] | None, what: str, trial_id: str) -> Mapping[str, Any]:
    if value is None:
        return FrozenDict({})
    if not isinstance(value, Mapping):
        raise UserInputError(
            f"trial {trial_id!r}: {what} must be a mapping, got {type(value).__name__}",
            hint=f"pass {what} as a dict of name -> value",
        )
    return FrozenDict(dict(value))


def _as_float(value: Any, what: str, trial_id: str) -> float:
    if value is None:
        raise UserInputError(
            f"trial {trial_id!r}: {what} is missing (None)",
            hint="drop the point, or log NaN if the metric was genuinely not a number",
        )
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserInputError(
            f"trial {trial_id!r}: {what} is not a number: {value!r}",
            hint="curve points are (step, value) pairs of numbers",
        ) from None


@dataclass(frozen=True)
class TrialResult:
    """One trial as policies see it: its config, its state and its objective curve.

    Args:
        trial_id: Unique id of the trial (the run id in the store).
        config: The configuration the trial ran with.
        status: Lifecycle state (a :class:`TrialStatus` or its string value).
        curve: The objective metric as ``(step, value)`` pairs. Stored sorted by step;
            later duplicates of a step replace earlier ones (idempotent replays). NaN and
            infinite values are kept: they are evidence of divergence.
        final: The trial's final objective value, if it has one. When absent,
            :attr:`value` falls back to the last curve point.
        metrics: Final values of other metrics by name: extra objectives of a
            multi-objective search, outcome-constraint values (``{"memory_gb": 7.2}``).
        resources: Resources used so far by name (``{"epochs": 12, "gpu_hours": 0.4}``).

    Raises:
        UserInputError: for an unknown status, a non-mapping config, or curve points
            that are missing or not numbers.
    """

    trial_id: str
    config: Mapping[str, Any]
    status: TrialStatus = TrialStatus.COMPLETED
    curve: Sequence[tuple[float, float]] = ()
    final: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    resources: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tid = str(self.trial_id)
        object.__setattr__(self, "trial_id", tid)
        try:
            object.__setattr__(self, "status", TrialStatus(self.status))
        except ValueError:
            known = ", ".join(s.value for s in TrialStatus)
            raise UserInputError(
                f"trial {tid!r}: unknown status {self.status!r}", hint=f"use one of: {known}"
            ) from None
        object.__setattr__(self, "config", _frozen_mapping(self.config, "config", tid))
        points: dict[float, float] = {}
        for i, point in enumerate(self.curve):
            try:
                step, value = point
            except (TypeError, ValueError):
                raise UserInputError(
                    f"trial {tid!r}: curve point {i} is not a (step, value) pair: {point!r}"
                ) from None
            s = _as_float(step, f"step of curve point {i}", tid)
            if not math.isfinite(s):
                raise UserInputError(f"trial {tid!r}: curve point {i} has step {s}")
            points[s] = _as_float(value, f"value of curve point {i} (step {s:g})", tid)
        object.__setattr__(self, "curve", tuple(sorted(points.items())))
        if self.final is not None:
            object.__setattr__(self, "final", _as_float(self.final, "final", tid))
        metrics = _frozen_mapping(self.metrics, "metrics", tid)
        object.__setattr__(
            self,
            "metrics",
            FrozenDict({k: _as_float(v, f"metric {k!r}", tid) for k, v in metrics.items()}),
        )
        resources = _frozen_mapping(self.resources, "resources", tid)
        object.__setattr__(
            self,
            "resources",
            FrozenDict(
                {k: _as_float(v, f"resource {k!r}", tid) for k, v in resources.items()}
            ),
        )

    @property
    def value(self) -> float | None:
        """The objective value to judge the trial by: ``final``, else the last curve value."""
        if self.final is not None:
            return self.final
        if self.curve:
            return self.curve[-1][1]
        return None

    @property
    def last_step(self) -> float | None:
        """Step of the latest curve point, or None for an empty curve."""
        return self.curve[-1][0] if self.curve else None

    def metric(self, name: str | None) -> float | None:
        """A final metric by name; ``None`` names the objective (:attr:`value`)."""
        if name is None:
            return self.value
        return self.metrics.get(name)

    def truncated(self, step: float, status: TrialStatus | str | None = None) -> TrialResult:
        """A copy holding only the curve up to ``step`` (inclusive), without a final value.

        Used by replays and simulations to show a trial as it looked mid-run.
        """
        return TrialResult(
            trial_id=self.trial_id,
            config=self.config,
            status=TrialStatus.RUNNING if status is None else TrialStatus(status),
            curve=[p for p in self.curve if p[0] <= step],
            final=None,
            metrics={},
            resources=self.resources,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict; :meth:`from_dict` reverses it."""
        return {
            "trial_id": self.trial_id,
            "config": dict(self.config),
            "status": self.status.value,
            "curve": [[s, v] for s, v in self.curve],
            "final": self.final,
            "metrics": dict(self.metrics),
            "resources": dict(self.resources),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialResult:
        """Build a result from :meth:`to_dict` output (or any dict with those keys)."""
        if "trial_id" not in data or "config" not in data:
            raise UserInputError(
                "a trial result needs at least 'trial_id' and 'config'",
                hint=f"got keys: {sorted(data)}",
            )
        return cls(
            trial_id=data["trial_id"],
            config=data["config"],
            status=data.get("status", TrialStatus.COMPLETED),
            curve=[tuple(p) for p in data.get("curve", ())],
            final=data.get("final"),
            metrics=data.get("metrics") or {},
            resources=data.get("resources") or {},
        )

    @classmethod
    def from_rows(
        cls,
        trial_id: str,
        config: Mapping[str, Any],
        status: TrialStatus | str,
        rows: Iterable[Mapping[str, Any]],
        metric: str,
        *,
        final: float | None = None,
        metrics: Mapping[str, float] | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> TrialResult:
        """Build a result from metric rows as the store returns them.

        Args:
            trial_id: The run id.
            config: The run's config.
            status: The run's state.
            rows: Metric rows with ``key``, ``step`` and ``value`` fields (for example
                ``df.iter_rows(named=True)`` on a Polars frame); rows of other keys are
                ignored, so all of a run's rows can be passed.
            metric: The objective metric's key.
            final: The final value (e.g. the run summary's entry); when None and the run
                completed, the last curve point stands in (see :attr:`value`).
            metrics: Final values of other metrics (objectives, constraints).
            resources: Resources used.
        """
        curve = [(r["step"], r["value"]) for r in rows if r.get("key", metric) == metric]
        return cls(
            trial_id=trial_id,
            config=config,
            status=status,  # type: ignore[arg-type]  # a string is coerced in __post_init__
            curve=curve,
            final=final,
            metrics=metrics or {},
            resources=resources or {},
        )


@dataclass(frozen=True)
class Suggestion:
    """A configuration a searcher proposes, with why it was chosen.

    Attributes:
        config: The configuration to run (active parameters and fixed values).
        explanation: JSON-friendly reasons: always ``method``; model-based searchers add
            the acquisition value, predicted mean and standard deviation, and the
            incumbent; initial designs say so (``"sobol initial design"``).
    """

    config: Mapping[str, Any]
    explanation: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", FrozenDict(dict(self.config)))
        object.__setattr__(self, "explanation", FrozenDict(json_safe(self.explanation)))


@dataclass(frozen=True)
class StopReason:
    """Why a stopper wants a running trial stopped.

    Attributes:
        trial_id: The trial to stop.
        rule: Name of the rule that fired (``"median"``, ``"asha"``, ``"learned"``, ...).
        message: One human sentence.
        evidence: JSON-friendly facts behind the decision: the step and rung, the values
            compared, for the learned rule the predicted final with its interval, the
            failure probability and the curve features.
    """

    trial_id: str
    rule: str
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "evidence", FrozenDict(json_safe(self.evidence)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of the reason."""
        return {
            "trial_id": self.trial_id,
            "rule": self.rule,
            "message": self.message,
            "evidence": _thaw(self.evidence),
        }


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


def json_safe(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays, tuples and enums to plain JSON types.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON has
    no such numbers); mappings become dicts with string keys.
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, str | bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        # Strict JSON (and Starlette's encoder) rejects NaN/Infinity: write them as text.
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy arrays and scalars, torch tensors
        return json_safe(tolist())
    item = getattr(value, "item", None)
    if callable(item):
        return json_safe(item())
    return str(value)
