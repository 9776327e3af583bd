"""The two policy interfaces: :class:`Searcher` and :class:`EarlyStopper`.

Both are pure functions of a read-only history (a sequence of
:class:`~assay.policies.records.TrialResult`). They never touch Ray, the store or the
network, and they never mutate the history. The controller agent calls them from its
``step()`` loop:

* ``EarlyStopper.should_stop(history, running)`` once per step, before launching;
* ``Searcher.suggest(history, n)`` while capacity and budget remain.

A searcher may carry a little state across calls (a random generator, a Sobol counter,
GP hyperparameters to warm-start the next fit); :meth:`Searcher.state_dict` exposes it as
JSON-friendly data so a restarted agent resumes exactly where it was.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from ..errors import UserInputError
from .records import StopReason, Suggestion, TrialResult, TrialStatus
from .space import SearchSpace, as_space

__all__ = ["EarlyStopper", "Mode", "Searcher", "check_history", "running_pool"]


class Mode(StrEnum):
    """Direction of optimisation."""

    MIN = "min"
    MAX = "max"

    @classmethod
    def parse(cls, mode: Mode | str) -> Mode:
        """``"min"``/``"max"`` (any case) to a :class:`Mode`; anything else is an error."""
        try:
            return cls(str(mode).lower())
        except ValueError:
            raise UserInputError(
                f"mode must be 'min' or 'max', got {mode!r}",
                hint="'min' for losses, 'max' for accuracies and rewards",
            ) from None

    def sign(self) -> float:
        """+1 for min, -1 for max: multiply a value by it so that lower is better."""
        return 1.0 if self is Mode.MIN else -1.0


def check_history(history: Sequence[TrialResult] | None) -> list[TrialResult]:
    """Validate a history: a sequence of :class:`TrialResult` with unique trial ids.

    Raises:
        UserInputError: for non-TrialResult items or duplicate ids.
    """
    if history is None:
        return []
    if isinstance(history, str | bytes) or not isinstance(history, Iterable):
        raise UserInputError(f"history must be a list of TrialResult, got {type(history).__name__}")
    out = list(history)
    seen: set[str] = set()
    for item in out:
        if not isinstance(item, TrialResult):
            raise UserInputError(
                f"history holds a {type(item).__name__}, not a TrialResult",
                hint="build TrialResult(trial_id, config, status, curve, final) for each trial",
            )
        if item.trial_id in seen:
            raise UserInputError(
                f"history holds trial {item.trial_id!r} twice",
                hint="pass each trial once, with its latest state",
            )
        seen.add(item.trial_id)
    return out


def running_pool(
    history: Sequence[TrialResult], running: Iterable[str | TrialResult] | None
) -> tuple[dict[str, TrialResult], list[str]]:
    """Merge ``running`` into the history and list the candidate trial ids.

    ``running`` may hold trial ids (of trials in ``history``) or TrialResults (added to
    the pool when not already in it). ``None`` means every trial whose status is running.

    Returns:
        The pool by trial id (history plus running results), and the candidate ids in
        order.

    Raises:
        UserInputError: for ids that are not in the history.
    """
    pool = {t.trial_id: t for t in check_history(history)}
    if running is None:
        return pool, [t.trial_id for t in pool.values() if t.status is TrialStatus.RUNNING]
    if isinstance(running, str | bytes):
        raise UserInputError("running must be a list of trial ids, not a single string")
    ids: list[str] = []
    for item in running:
        if isinstance(item, TrialResult):
            pool[item.trial_id] = item
            ids.append(item.trial_id)
        elif str(item) in pool:
            ids.append(str(item))
        else:
            raise UserInputError(
                f"running trial {item!r} is not in the history",
                hint="include running trials (with their partial curves) in the history",
            )
    return pool, list(dict.fromkeys(ids))


class Searcher(ABC):
    """Chooses the next configurations to run.

    Args:
        space: The search space (a :class:`SearchSpace` or its dict form).
        mode: ``"min"`` or ``"max"``.
        metric: Name of the objective in :attr:`TrialResult.metrics`; ``None`` (default)
            uses the trial's objective value (:attr:`TrialResult.value`).
        seed: Seed of every random choice, so that equal histories give equal answers.
    """

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        *,
        mode: Mode | str = "min",
        metric: str | None = None,
        seed: int = 0,
    ) -> None:
        self.space = as_space(space)
        self.mode = Mode.parse(mode)
        self.metric = metric
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserInputError(f"seed must be an int, got {seed!r}")
        self.seed = seed

    def _seen_keys(self, history: Sequence[TrialResult]) -> set[str]:
        """``space.key`` of every config in ``history``, memoised per trial id (an agent asks
        after every launch, and keying a long history each time made that quadratic)."""
        memo: dict[str, tuple[Any, str]] = self.__dict__.setdefault("_key_memo", {})
        if self.__dict__.get("_key_memo_space") is not self.space:
            memo.clear()
            self.__dict__["_key_memo_space"] = self.space
        out = set()
        for t in history:
            hit = memo.get(t.trial_id)
            if hit is None or (hit[0] is not t.config and hit[0] != t.config):
                hit = memo[t.trial_id] = (t.config, self.space.key(t.config))
            out.add(hit[1])
        return out

    @abstractmethod
    def suggest(self, history: Sequence[TrialResult], n: int = 1) -> list[Suggestion]:
        """Propose up to ``n`` configurations.

        Called by the agent whenever it has capacity. ``history`` holds every trial so
        far, finished or not: pending and running trials must not be proposed again, and
        model-based searchers treat them as pending points. The history is read-only.

        Args:
            history: All trials of the search so far (may be empty).
            n: How many configurations are wanted (>= 1).

        Returns:
            At most ``n`` suggestions; fewer only when the space is exhausted (grid).

        Raises:
            UserInputError: for ``n <= 0`` or a malformed history.
        """

    def state_dict(self) -> dict[str, Any]:
        """JSON-friendly state to persist between agent restarts."""
        return {"class": type(self).__name__, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (of a searcher of the same class).

        Raises:
            UserInputError: when the state belongs to another searcher class.
        """
        if state.get("class") != type(self).__name__:
            raise UserInputError(
                f"state of {state.get('class')!r} cannot be loaded into {type(self).__name__}"
            )
        self.seed = int(state.get("seed", self.seed))

    @staticmethod
    def _check_n(n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise UserInputError(
                f"n must be a positive int, got {n!r}", hint="ask for at least one suggestion"
            )
        return n


class EarlyStopper(ABC):
    """Decides which running trials to stop, with a reason for each.

    Args:
        mode: ``"min"`` or ``"max"``; the curve of every trial is the objective metric.
    """

    rule: str = "stopper"
    """Name written into every :class:`StopReason` this stopper gives."""

    def __init__(self, *, mode: Mode | str = "min") -> None:
        self.mode = Mode.parse(mode)

    @abstractmethod
    def should_stop(
        self,
        history: Sequence[TrialResult],
        running: Iterable[str | TrialResult] | None = None,
    ) -> dict[str, StopReason]:
        """Which of the ``running`` trials to stop now.

        Called by the agent once per step. The decision is a function of the history
        alone (no hidden state), so a replay gives the same decisions. Must not mutate
        the history.

        Args:
            history: All trials, finished ones with full curves and running ones with
                their curves so far.
            running: The candidates: trial ids in ``history`` or TrialResults; ``None``
                means every trial whose status is ``running``.

        Returns:
            ``{trial_id: StopReason}`` for the trials to stop; trials not listed go on.
        """
