"""The learned stopper retrains as the agent's trials finish.

A refit of the failure predictor takes seconds (four gradient-boosted models over the
simulated prior plus the sweep's own curves), so it runs in a thread; the agent swaps the new
predictor in at a later step, in its own loop, and records a ``retrain`` decision.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserInputError
from ..policies import AllOf, AnyOf, EarlyStopper, LearnedStopper, TrialResult

__all__ = ["DEFAULT_REFIT_EVERY", "PredictorRefitter", "Refitted", "find_learned"]

log = logging.getLogger(__name__)

DEFAULT_REFIT_EVERY = 8
"""Finished trials between two refits, unless the objective's ``learned`` options say
``refit_every`` (0 turns refitting off)."""


def find_learned(stopper: EarlyStopper | None) -> LearnedStopper | None:
    """The learned stopper inside ``stopper`` (itself, or a member of AnyOf/AllOf)."""
    if isinstance(stopper, LearnedStopper):
        return stopper
    if isinstance(stopper, AnyOf | AllOf):
        for s in stopper.stoppers:
            found = find_learned(s)
            if found is not None:
                return found
    return None


@dataclass(frozen=True)
class Refitted:
    """A refit that finished: the new predictor and what it was fitted on."""

    predictor: Any
    trials: int
    seconds: float

    def evidence(self) -> dict[str, Any]:
        return {"trials": self.trials, "examples": self.predictor.n_examples,
                "seconds": round(self.seconds, 2), "model": self.predictor.source}


class PredictorRefitter:
    """Refits a :class:`LearnedStopper`'s predictor every ``every`` finished trials.

    Each refit starts from the predictor the stopper began with (the pretrained one), plus
    every finished trial of this sweep so far, so examples are never counted twice.

    Args:
        stopper: The learned stopper to keep up to date.
        mode: The objective's direction.
        every: Finished trials between refits (>= 1).
    """

    def __init__(self, stopper: LearnedStopper, mode: str, every: int) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UserInputError(f"refit_every must be an int >= 1, got {every!r}",
                                 hint="or 0 in the objective to turn refitting off")
        self.stopper = stopper
        self.mode = mode
        self.every = every
        self._base = copy.deepcopy(stopper.predictor)
        self._next_at = every
        self._thread: threading.Thread | None = None
        self._done: Refitted | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poll(self, finished: Sequence[TrialResult]) -> Refitted | None:
        """Install a finished refit (returned, for the agent's decision log), and start the
        next one when ``finished`` has grown by ``every`` trials since the last start."""
        done, self._done = self._done, None
        if done is not None:
            self.stopper.predictor = done.predictor
        if not self.busy and len(finished) >= self._next_at:
            self._next_at = len(finished) + self.every
            self._thread = threading.Thread(target=self._work, args=(list(finished),),
                                            name="assay-refit", daemon=True)
            self._thread.start()
        return done

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a running refit (tests and shutdown)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self, finished: list[TrialResult]) -> None:
        t0 = time.monotonic()
        try:
            pred = copy.deepcopy(self._base).partial_fit(finished, mode=self.mode,
                                                         max_step=self.stopper.max_step)
        except UserInputError as e:  # e.g. no usable curves yet: keep the current model
            log.info("failure predictor not refitted: %s", e.message)
            return
        except Exception:  # a refit must never take the agent down
            log.exception("failure predictor refit failed; keeping the current model")
            return
        self._done = Refitted(pred, len(finished), time.monotonic() - t0)
