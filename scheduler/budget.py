"""Budgets and their accounting: how many trials, how long, how many CPU- and GPU-hours.

A :class:`Budget` is what an objective allows; a :class:`BudgetLedger` is what has been
spent, per run, per agent and per project. CPU-hours are reserved CPUs times wall hours of
every attempt (a retried trial pays for each attempt), GPU-hours likewise; running trials
count with what they have used so far. An attempt lost with a restarting agent is charged
up to the ledger's last save (:meth:`BudgetLedger.record_lost`): when it died is unknown.
The agent asks :meth:`BudgetLedger.can_launch` before every launch and
:meth:`BudgetLedger.exhausted` each step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserInputError
from .base import EventKind, Resources, TrialEvent, TrialSpec, Usage
from .clock import Clock

__all__ = ["Budget", "BudgetLedger", "Remaining", "format_duration", "parse_duration"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd])")
_ALIASES = {"wall_clock": "wall_clock_s"}  # what objectives may write -> the field
_DURATION_HINT = 'write durations like "90s", "20m", "2h", "1h30m", "1.5d" or seconds as a number'


def parse_duration(value: str | float, *, what: str = "duration") -> float:
    """Seconds in ``value``: a number of seconds, or text such as ``"20m"`` or ``"1h30m"``.

    Raises:
        UserInputError: for text that is not a duration, and for negative or infinite ones.
    """
    if isinstance(value, bool):
        raise UserInputError(f"{what} must be a duration, got {value!r}", hint=_DURATION_HINT)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or _PART.sub("", text).strip():
                raise UserInputError(f"cannot read {what} {value!r}", hint=_DURATION_HINT) \
                    from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise UserInputError(f"{what} must be a duration, got {type(value).__name__}",
                             hint=_DURATION_HINT)
    if not math.isfinite(seconds) or seconds < 0:
        raise UserInputError(f"{what} must be a finite duration >= 0, got {value!r}",
                             hint=_DURATION_HINT)
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form: ``"90s"``, ``"20m"``, ``"2h30m"``."""
    s = round(seconds)
    if s < 120:
        return f"{s}s"
    h, rem = divmod(s, 3600)
    m = rem // 60
    if h == 0:
        return f"{m}m"
    return f"{h}h{m:02d}m" if m else f"{h}h"


MAX_TRIALS = 10_000_000
"""The largest trial budget (as a project budget's): more is a typo, None is no limit."""


def _limit(value: Any, what: str, unit_s: float, *, zero_ok: bool = False) -> float | None:
    """A positive limit in the field's unit (seconds or hours); text is a duration.

    ``zero_ok``: a zero CPU- or GPU-hour budget is meaningful (trials that need that
    resource may not run; the others are unaffected), unlike zero trials or wall clock.
    """
    if value is None:
        return None
    amount = parse_duration(value, what=what) / unit_s if isinstance(value, str) \
        else parse_duration(value, what=what)
    if amount == 0 and not zero_ok:
        raise UserInputError(f"{what} budget is zero: nothing could ever run",
                             hint=f"give a positive {what}, or None for no limit")
    return amount


@dataclass(frozen=True)
class Budget:
    """What an objective may spend; ``None`` means no limit.

    Args:
        trials: Trials to launch (retries do not count).
        wall_clock_s: Seconds from the start of the search; text such as ``"2h"`` works.
        cpu_hours: CPU-hours (reserved CPUs x wall hours); a number, or text (``"30m"``).
        gpu_hours: GPU-hours likewise.

    Raises:
        UserInputError: for negative, zero or unreadable limits.
    """

    trials: int | None = None
    wall_clock_s: float | None = None
    cpu_hours: float | None = None
    gpu_hours: float | None = None

    def __post_init__(self) -> None:
        t = self.trials
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, int):
                raise UserInputError(f"trials budget must be an int, got {t!r}",
                                     hint="e.g. trials=50, or None for no limit")
            if t <= 0:
                raise UserInputError(f"trials budget must be at least 1, got {t}",
                                     hint="a search needs at least one trial; None is no limit")
            if t > MAX_TRIALS:
                raise UserInputError(f"trials budget must be at most {MAX_TRIALS:,}, got {t:,}",
                                     hint="None (or leaving trials out) is no limit")
        object.__setattr__(self, "wall_clock_s", _limit(self.wall_clock_s, "wall_clock_s", 1.0))
        object.__setattr__(self, "cpu_hours", _limit(self.cpu_hours, "cpu_hours", 3600.0,
                                                                 zero_ok=True))
        object.__setattr__(self, "gpu_hours", _limit(self.gpu_hours, "gpu_hours", 3600.0,
                                                                 zero_ok=True))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Budget:
        """Read an objective's ``budget:`` section (``wall_clock`` is an alias of
        ``wall_clock_s``), e.g. ``{"trials": 40, "wall_clock": "2h", "gpu_hours": 4}``.

        Raises:
            UserInputError: for unknown keys, both spellings of one key, invalid limits.
        """
        return cls(**cls.normalize(data))

    @staticmethod
    def normalize(data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with every alias replaced by its field name (``wall_clock`` becomes
        ``wall_clock_s``), so that two budget mappings merge key by key: an override's
        ``wall_clock_s`` replaces an objective's ``wall_clock``. Values are not checked.

        Raises:
            UserInputError: for a non-mapping, unknown keys, or a key given in two spellings.
        """
        if not isinstance(data, Mapping):
            raise UserInputError(f"budget must be a mapping, got {type(data).__name__}",
                                 hint='e.g. {"trials": 40, "wall_clock": "2h"}')
        known = {"trials", "wall_clock_s", "cpu_hours", "gpu_hours", *_ALIASES}
        unknown = [k for k in data if k not in known]
        if unknown:
            raise UserInputError(f"unknown budget keys: {sorted(map(str, unknown))}",
                                 hint=f"known keys: {sorted(known)}")
        out: dict[str, Any] = {}
        for k, v in data.items():
            name = _ALIASES.get(k, k)
            if name in out:
                raise UserInputError(f"budget gives {name} twice (as {name!r} and an alias)",
                                     hint=f"write it once, as {name!r}")
            out[name] = v
        return out

    @property
    def unlimited(self) -> bool:
        return self == Budget()


@dataclass(frozen=True)
class Remaining:
    """What is left of a budget; ``None`` for dimensions without a limit."""

    trials: int | None
    wall_clock_s: float | None
    cpu_hours: float | None
    gpu_hours: float | None


@dataclass
class _RunAccount:
    project: str
    agent: str
    resources: Resources
    closed: Usage = field(default_factory=Usage)
    started_at: float | None = None  # the running attempt's start, on the ledger's clock
    finished: bool = False


class BudgetLedger:
    """Spending against one :class:`Budget`, broken down per run, agent and project.

    The agent records every launch (:meth:`record_launch`) and every event
    (:meth:`record`); the ledger is not thread-safe (one agent loop owns it).

    Args:
        budget: The limits.
        clock: The time source; wall-clock budget counts from construction.
    """

    def __init__(self, budget: Budget, clock: Clock) -> None:
        if not isinstance(budget, Budget):
            raise UserInputError("budget must be a Budget", hint="e.g. Budget(trials=20)")
        self.budget = budget
        self.clock = clock
        self.started_at = clock.now()
        self._runs: dict[str, _RunAccount] = {}
        self._saved_at: float | None = None  # clock time of the state a restart loaded

    # -- recording ---------------------------------------------------------------------------
    def record_launch(self, spec: TrialSpec, *, agent: str = "") -> None:
        """Count a launched trial (call before or right after ``Backend.launch``)."""
        if spec.trial_id not in self._runs:
            self._runs[spec.trial_id] = _RunAccount(spec.project, agent, spec.resources)

    def record(self, event: TrialEvent, *, project: str = "", agent: str = "",
               resources: Resources | None = None) -> None:
        """Account a trial event: ``started`` opens an attempt, the others close it.

        ``project``, ``agent`` and ``resources`` are only used for trials that were not
        recorded with :meth:`record_launch` (launched by someone else).
        """
        acct = self._runs.get(event.trial_id)
        if acct is None:
            acct = self._runs[event.trial_id] = _RunAccount(project, agent,
                                                            resources or Resources())
        if event.kind is EventKind.STARTED:
            acct.started_at = event.time
            return
        acct.closed = acct.closed + event.usage
        acct.started_at = None
        acct.finished = event.kind.finished

    def record_lost(self, trial_id: str, *, finished: bool = False) -> None:
        """Close a trial's running attempt that ended without an event: the agent that ran
        it restarted, and Ray ended the attempt with it. When it ended is unknown: it is
        charged up to the last time this ledger's state was saved (the agent saves it at
        least once a minute), never beyond, and then stops counting. The trial stays
        counted once in the trial budget (a relaunch of it is not a new trial).
        ``finished``: it will not run again.

        Unknown ids are ignored (there is nothing to close).
        """
        acct = self._runs.get(trial_id)
        if acct is None:
            return
        if acct.started_at is not None and self._saved_at is not None:
            acct.closed = acct.closed + Usage.of(
                acct.resources, max(0.0, self._saved_at - acct.started_at))
        acct.started_at = None
        acct.finished = acct.finished or finished

    # -- reading -----------------------------------------------------------------------------
    def _usage(self, acct: _RunAccount) -> Usage:
        if acct.started_at is None:
            return acct.closed
        return acct.closed + Usage.of(acct.resources, self.clock.now() - acct.started_at)

    def usage(self, *, run: str | None = None, agent: str | None = None,
              project: str | None = None) -> Usage:
        """Usage so far (running attempts included) of the runs matching every filter."""
        total = Usage()
        for rid, acct in self._runs.items():
            if (run is None or rid == run) and (agent is None or acct.agent == agent) \
                    and (project is None or acct.project == project):
                total = total + self._usage(acct)
        return total

    def by_project(self) -> dict[str, Usage]:
        """Usage per project."""
        return self._group(lambda a: a.project)

    def by_agent(self) -> dict[str, Usage]:
        """Usage per agent."""
        return self._group(lambda a: a.agent)

    def _group(self, key: Any) -> dict[str, Usage]:
        out: dict[str, Usage] = {}
        for acct in self._runs.values():
            k = key(acct)
            out[k] = out.get(k, Usage()) + self._usage(acct)
        return out

    @property
    def trials_launched(self) -> int:
        return len(self._runs)

    @property
    def elapsed_s(self) -> float:
        return max(0.0, self.clock.now() - self.started_at)

    def remaining(self) -> Remaining:
        """What is left of each limited dimension (never negative)."""
        b = self.budget
        used = self.usage()
        return Remaining(
            trials=None if b.trials is None else max(0, b.trials - self.trials_launched),
            wall_clock_s=None if b.wall_clock_s is None
            else max(0.0, b.wall_clock_s - self.elapsed_s),
            cpu_hours=None if b.cpu_hours is None else max(0.0, b.cpu_hours - used.cpu_hours),
            gpu_hours=None if b.gpu_hours is None else max(0.0, b.gpu_hours - used.gpu_hours),
        )

    def exhausted(self) -> str | None:
        """Why the budget is spent (one sentence), or None while something remains."""
        return self._blocker(None)

    def can_launch(self, resources: Resources | None = None) -> bool:
        """Whether a trial of ``resources`` may be launched now.

        A CPU-only trial may still launch when only the GPU-hours are spent. Budgets are
        checked against usage so far, so a trial launched just before the limit may overrun
        it by its own length.
        """
        return self.launch_blocker(resources) is None

    def launch_blocker(self, resources: Resources | None = None, *,
                       count_trials: bool = True) -> str | None:
        """Why a trial of ``resources`` may not launch now, or None if it may.

        ``count_trials=False`` asks only about time and resources: for a trial counted
        before, launched again (a relaunch after its agent restarted)."""
        return self._blocker(resources or Resources(), count_trials=count_trials)

    def _blocker(self, res: Resources | None, *, count_trials: bool = True) -> str | None:
        b = self.budget
        if count_trials and b.trials is not None and self.trials_launched >= b.trials:
            return f"trial budget reached: {self.trials_launched} of {b.trials} trials launched"
        if b.wall_clock_s is not None and self.elapsed_s >= b.wall_clock_s:
            return (f"wall-clock budget reached: {format_duration(self.elapsed_s)} of "
                    f"{format_duration(b.wall_clock_s)} elapsed")
        if b.cpu_hours is None and b.gpu_hours is None:
            return None  # no resource budget: skip summing every run's usage (the hot path)
        used = self.usage()
        if b.cpu_hours is not None and used.cpu_hours >= b.cpu_hours \
                and (res.cpus > 0 if res is not None else b.cpu_hours > 0):
            return f"cpu-hours budget reached: {used.cpu_hours:.3g} of {b.cpu_hours:g} used"
        if b.gpu_hours is not None and used.gpu_hours >= b.gpu_hours \
                and (res.gpus > 0 if res is not None else b.gpu_hours > 0):
            return f"gpu-hours budget reached: {used.gpu_hours:.3g} of {b.gpu_hours:g} used"
        return None

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-friendly state, so that a restarted agent keeps its spending."""
        return {
            "started_at": self.started_at,
            "saved_at": self.clock.now(),
            "runs": {rid: {"project": a.project, "agent": a.agent, "cpus": a.resources.cpus,
                           "gpus": a.resources.gpus, "custom": dict(a.resources.custom),
                           "wall_s": a.closed.wall_s,
                           "cpu_s": a.closed.cpu_s, "gpu_s": a.closed.gpu_s,
                           "started_at": a.started_at, "finished": a.finished}
                     for rid, a in self._runs.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            UserInputError: for state that is not a ledger's.
        """
        try:
            runs = {
                rid: _RunAccount(str(r["project"]), str(r["agent"]),
                                 Resources(float(r["cpus"]), float(r["gpus"]),
                                           dict(r.get("custom") or {})),
                                 Usage(float(r["wall_s"]), float(r["cpu_s"]), float(r["gpu_s"])),
                                 None if r["started_at"] is None else float(r["started_at"]),
                                 bool(r["finished"]))
                for rid, r in state["runs"].items()
            }
            started = float(state["started_at"])
            saved = state.get("saved_at")
            saved_at = None if saved is None else float(saved)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserInputError(f"not a budget ledger state: {e}",
                                 hint="pass what BudgetLedger.state_dict() returned") from None
        self.started_at = started
        self._saved_at = saved_at
        self._runs = runs
