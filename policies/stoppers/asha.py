"""Successive halving, asynchronous (ASHA, Li et al. 2020) and with Hyperband brackets.

Rungs sit at ``min_step * reduction_factor**k`` below ``max_step``. A running trial is
judged when its latest point is the first to reach a rung, against every trial that
reached that rung before it: it goes on only if its best value by the rung is in the top
``1 / reduction_factor``. As in ASHA, a promoted trial is never judged again at a lower
rung, so the first trials always get to finish. The decision depends on the history
alone (no promotion bookkeeping), so replays and restarted agents decide alike; an agent
that polls less often than every step may let a trial pass a rung unjudged.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence

import numpy as np

from ...errors import UserInputError
from .._history import best_until, oriented_curve
from ..base import EarlyStopper, Mode, running_pool
from ..records import StopReason, TrialResult
from .rules import _positive

__all__ = ["ASHAStopper", "HyperbandStopper", "rungs"]


def rungs(min_step: float, max_step: float, reduction_factor: float) -> list[float]:
    """Rung steps ``min_step * rf**k`` strictly below ``max_step``."""
    out: list[float] = []
    r = float(min_step)
    while r < max_step:
        out.append(r)
        r *= reduction_factor
    return out


def _check(min_step: float, max_step: float, reduction_factor: float) -> None:
    _positive("min_step", min_step)
    _positive("max_step", max_step)
    if min_step >= max_step:
        raise UserInputError(f"min_step ({min_step:g}) must be below max_step ({max_step:g})")
    if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, int | float) or (
        not reduction_factor > 1
    ):
        raise UserInputError(f"reduction_factor must be > 1, got {reduction_factor!r}")


def _judge(
    stopper: EarlyStopper,
    pool: dict[str, TrialResult],
    ids: list[str],
    members: dict[str, TrialResult],
    levels: list[float],
    reduction_factor: float,
    min_trials: int,
    extra: dict[str, object],
) -> dict[str, StopReason]:
    """Apply successive halving at ``levels`` to candidates ``ids`` among ``members``."""
    mode = stopper.mode
    sign = mode.sign()
    curves = {tid: oriented_curve(t, mode) for tid, t in members.items()}
    out: dict[str, StopReason] = {}
    for tid in ids:
        steps, values = curves.get(tid) or oriented_curve(pool[tid], mode)
        if not steps.size:
            continue
        reached = [(i, r) for i, r in enumerate(levels) if steps[-1] >= r]
        if not reached:
            continue
        k, rung = reached[-1]
        if steps.size > 1 and steps[-2] >= rung:
            continue  # judged at this rung when it got there; promoted since
        mine = best_until(steps, values, rung)
        at_rung = [
            best_until(s, v, rung)
            for other, (s, v) in curves.items()
            if other != tid and s.size and s[-1] >= rung
        ]
        at_rung = [v for v in at_rung if not math.isnan(v)]
        if len(at_rung) + 1 < min_trials:
            continue
        everyone = np.asarray(at_rung + [mine if not math.isnan(mine) else np.inf])
        keep = max(1, int(len(everyone) // reduction_factor))
        cutoff = float(np.sort(everyone)[keep - 1])
        if math.isnan(mine) or mine > cutoff:
            rank = int((everyone < (mine if not math.isnan(mine) else np.inf)).sum()) + 1
            out[tid] = StopReason(
                tid, stopper.rule,
                f"at rung {k} (step {rung:g}) its best {mine * sign:.4g} ranks {rank} of "
                f"{len(everyone)}; only the top {keep} go on (cutoff {cutoff * sign:.4g})",
                {"rung": k, "rung_step": rung, "value_at_rung": mine * sign,
                 "cutoff": cutoff * sign, "rank": rank, "n_at_rung": len(everyone),
                 "n_kept": keep, "reduction_factor": reduction_factor, **extra},
            )
    return out


class ASHAStopper(EarlyStopper):
    """Asynchronous successive halving in stopping mode.

    Args:
        max_step: The full budget of a trial (e.g. its epochs).
        mode: ``"min"`` or ``"max"``.
        min_step: The first rung (the least a trial runs before it can be stopped).
        reduction_factor: Keep the top ``1/reduction_factor`` at every rung.
        min_trials_per_rung: Trials (this one included) that must have reached a rung
            before anyone is judged there; defaults to ``reduction_factor`` rounded up.
    """

    rule = "asha"

    def __init__(
        self,
        max_step: float,
        *,
        mode: Mode | str = "min",
        min_step: float = 1,
        reduction_factor: float = 3,
        min_trials_per_rung: int | None = None,
    ) -> None:
        super().__init__(mode=mode)
        _check(min_step, max_step, reduction_factor)
        self.max_step, self.min_step, self.reduction_factor = max_step, min_step, reduction_factor
        self.min_trials_per_rung = (
            math.ceil(reduction_factor) if min_trials_per_rung is None
            else _positive("min_trials_per_rung", min_trials_per_rung, integer=True)
        )
        self.rungs = rungs(min_step, max_step, reduction_factor)

    def should_stop(
        self, history: Sequence[TrialResult], running: Iterable[str | TrialResult] | None = None
    ) -> dict[str, StopReason]:
        pool, ids = running_pool(history, running)
        return _judge(self, pool, ids, pool, self.rungs, self.reduction_factor,
                      self.min_trials_per_rung, {})


class HyperbandStopper(EarlyStopper):
    """Asynchronous Hyperband: ASHA in several brackets with later first rungs.

    Bracket ``b`` starts its rungs at ``min_step * reduction_factor**b``, so bracket 0
    is aggressive and the last one lets trials run long before judging them. A trial's
    bracket is a stable hash of its id; each bracket judges only its own trials.

    Args:
        max_step: The full budget of a trial.
        mode: ``"min"`` or ``"max"``.
        min_step: First rung of bracket 0.
        reduction_factor: As in :class:`ASHAStopper`.
        brackets: Number of brackets (default: all that fit below ``max_step``).
        min_trials_per_rung: As in :class:`ASHAStopper`.
    """

    rule = "hyperband"

    def __init__(
        self,
        max_step: float,
        *,
        mode: Mode | str = "min",
        min_step: float = 1,
        reduction_factor: float = 3,
        brackets: int | None = None,
        min_trials_per_rung: int | None = None,
    ) -> None:
        super().__init__(mode=mode)
        _check(min_step, max_step, reduction_factor)
        levels = rungs(min_step, max_step, reduction_factor)
        most = len(levels)
        if brackets is None:
            brackets = most
        if isinstance(brackets, bool) or not isinstance(brackets, int) or not 1 <= brackets <= most:
            raise UserInputError(f"brackets must be an int in [1, {most}], got {brackets!r}")
        self.max_step, self.min_step, self.reduction_factor = max_step, min_step, reduction_factor
        self.brackets = [levels[b:] for b in range(brackets)]
        self.min_trials_per_rung = (
            math.ceil(reduction_factor) if min_trials_per_rung is None
            else _positive("min_trials_per_rung", min_trials_per_rung, integer=True)
        )

    def bracket_of(self, trial_id: str) -> int:
        """The bracket a trial belongs to (stable across processes)."""
        return zlib.crc32(trial_id.encode()) % len(self.brackets)

    def should_stop(
        self, history: Sequence[TrialResult], running: Iterable[str | TrialResult] | None = None
    ) -> dict[str, StopReason]:
        pool, ids = running_pool(history, running)
        out: dict[str, StopReason] = {}
        for b, levels in enumerate(self.brackets):
            members = {tid: t for tid, t in pool.items() if self.bracket_of(tid) == b}
            mine = [tid for tid in ids if tid in members]
            if mine:
                out.update(_judge(self, pool, mine, members, levels, self.reduction_factor,
                                  self.min_trials_per_rung, {"bracket": b}))
        return out
