"""The agent's suggestion thread: it keeps suggestions ready ahead of need, so a free slot
never waits for a searcher fit (BoTorch's takes seconds)."""

from __future__ import annotations

import logging
import threading
import traceback
from typing import TYPE_CHECKING

from ..policies import Suggestion

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["Suggester", "error_text"]

log = logging.getLogger("assay.agents.agent")


class Suggester(threading.Thread):
    """Keeps a queue of suggestions ready ahead of need (BoTorch fits take seconds)."""

    def __init__(self, agent: Agent) -> None:
        super().__init__(name=f"assay-suggest-{agent.agent_id}", daemon=True)
        self.agent = agent
        self.ready: list[Suggestion] = []
        self.mu = threading.Lock()
        self.want = threading.Event()
        self.closed = False
        self.busy = False
        # What the searcher's last answer said beyond its suggestions: it returned fewer
        # than asked (the space is exhausted, :meth:`Searcher.suggest`'s contract), or it
        # raised ("Type: message", with the traceback). Read by the agent's thread, which
        # records the decisions.
        self.exhausted = False
        self.error = ""
        self.error_trace = ""
        self.answers = 0  # searcher answers so far (tests wait on it)
        # The suggestion taken last: until the agent launches it (a trial) it is neither
        # queued nor in the history, and a refill computed meanwhile must not propose it.
        self.inflight: Suggestion | None = None
        # Bumped when the space changes: a suggestion computed before (by the old searcher)
        # is dropped instead of queued after the queue was cleared.
        self.generation = 0

    def run(self) -> None:
        while not self.closed:
            self.want.wait(1.0)
            self.want.clear()
            if self.closed:
                return
            with self.mu:
                need = self.agent.concurrency - len(self.ready)
                gen = self.generation
            if need <= 0:
                continue
            self.busy = True
            error = trace = ""
            try:
                got = self.agent._suggest(need)
            except Exception as e:  # recorded as a decision by the agent
                log.exception("searcher failed; slots fall back to random configs")
                got, error, trace = [], error_text(e), traceback.format_exc()
            finally:
                self.busy = False
            with self.mu:
                if gen == self.generation:
                    self.ready.extend(got)
                    self.exhausted = not error and len(got) < need
                    self.error, self.error_trace = error, trace
                self.answers += 1

    def take(self) -> Suggestion | None:
        with self.mu:
            s = self.ready.pop(0) if self.ready else None
            self.inflight = s
        self.want.set()
        return s

    def invalidate(self) -> None:
        with self.mu:
            self.ready.clear()
            self.generation += 1
            self.exhausted, self.error, self.error_trace = False, "", ""
        self.want.set()


def error_text(e: BaseException) -> str:
    """An exception as "Type: message" (its first 500 characters)."""
    msg = getattr(e, "message", None) or str(e)
    return f"{type(e).__name__}: {msg}"[:500]
