"""Composition of stoppers: :class:`AnyOf` (stop when one rule fires) and :class:`AllOf`
(stop only when every rule fires), as Ax's Or/And early-stopping strategies."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ...errors import UserInputError
from ..base import EarlyStopper, running_pool
from ..records import StopReason, TrialResult

__all__ = ["AllOf", "AnyOf"]


def _check(stoppers: tuple[EarlyStopper, ...], name: str) -> tuple[EarlyStopper, ...]:
    if not stoppers:
        raise UserInputError(f"{name}() needs at least one stopper")
    for s in stoppers:
        if not isinstance(s, EarlyStopper):
            raise UserInputError(f"{name}() takes stoppers, got {type(s).__name__}")
    modes = {s.mode for s in stoppers}
    if len(modes) > 1:
        listed = ", ".join(f"{type(s).__name__}(mode={s.mode.value!r})" for s in stoppers)
        raise UserInputError(
            f"{name}() needs stoppers of one mode, got {listed}",
            hint="give every stopper the same mode ('min' or 'max'): they judge the same metric",
        )
    return stoppers


class AnyOf(EarlyStopper):
    """Stops a trial when any of ``stoppers`` wants it stopped.

    The reason is the first firing stopper's (in the given order), with the names of the
    other rules that fired added to its evidence as ``also_fired``.
    """

    def __init__(self, *stoppers: EarlyStopper) -> None:
        self.stoppers = _check(stoppers, "AnyOf")
        self.mode = self.stoppers[0].mode
        self.rule = "any_of(" + ",".join(s.rule for s in self.stoppers) + ")"

    def should_stop(
        self, history: Sequence[TrialResult], running: Iterable[str | TrialResult] | None = None
    ) -> dict[str, StopReason]:
        pool, ids = running_pool(history, running)
        history = list(pool.values())
        fired: dict[str, list[StopReason]] = {}
        for s in self.stoppers:
            for tid, reason in s.should_stop(history, ids).items():
                fired.setdefault(tid, []).append(reason)
        out: dict[str, StopReason] = {}
        for tid in ids:
            if tid not in fired:
                continue
            first, *others = fired[tid]
            evidence = dict(first.evidence)
            if others:
                evidence["also_fired"] = [r.rule for r in others]
            out[tid] = StopReason(tid, first.rule, first.message, evidence)
        return out


class AllOf(EarlyStopper):
    """Stops a trial only when every one of ``stoppers`` wants it stopped.

    The reason names all rules; its evidence holds each rule's evidence by rule name.
    """

    def __init__(self, *stoppers: EarlyStopper) -> None:
        self.stoppers = _check(stoppers, "AllOf")
        self.mode = self.stoppers[0].mode
        self.rule = "all_of(" + ",".join(s.rule for s in self.stoppers) + ")"

    def should_stop(
        self, history: Sequence[TrialResult], running: Iterable[str | TrialResult] | None = None
    ) -> dict[str, StopReason]:
        pool, ids = running_pool(history, running)
        history = list(pool.values())
        candidates = list(ids)
        per_rule: list[dict[str, StopReason]] = []
        for s in self.stoppers:
            decided = s.should_stop(history, candidates)
            per_rule.append(decided)
            candidates = [tid for tid in candidates if tid in decided]
            if not candidates:
                return {}
        out: dict[str, StopReason] = {}
        for tid in candidates:
            reasons = [d[tid] for d in per_rule]
            out[tid] = StopReason(
                tid, self.rule, "; ".join(r.message for r in reasons),
                {f"{i}:{r.rule}": dict(r.evidence) for i, r in enumerate(reasons)},
            )
        return out
