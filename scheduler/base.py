"""The scheduler's interfaces: what a trial is, what happens to it, and who runs it.

The controller agent (``assay.agents``) talks to trials only through these types:

* it describes a trial as a :class:`TrialSpec` and hands it to a :class:`Backend`;
* each ``step()`` it calls :meth:`Backend.poll` for :class:`TrialEvent` records (started,
  retried, completed, failed, stopped) and :meth:`MetricSource.new_points` for the curves;
* it stops trials with :meth:`Backend.stop` and launches new ones while
  :meth:`Backend.capacity` and the budget (:mod:`assay.scheduler.budget`) allow.

Time comes from an injected :class:`Clock`: :class:`RealClock` for real backends and
:class:`SimClock` for simulations, which the loop advances itself, so a simulated sweep runs
far faster than real time and tests never sleep (Syne Tune's ``TimeKeeper`` idea). The
clocks live in :mod:`assay.scheduler.clock` and are re-exported here.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

from ..errors import UserInputError
from ..frozen import FrozenDict
from ..sdk.jsonable import to_jsonable
from ..store.records import validate_name
from .clock import Clock, RealClock, SimClock, _non_negative

__all__ = [
    "Backend",
    "Clock",
    "EventKind",
    "MetricSource",
    "Points",
    "RealClock",
    "Resources",
    "Shortfall",
    "SimClock",
    "TargetKind",
    "TrialEvent",
    "TrialSpec",
    "Usage",
]

Points = dict[str, dict[str, list[tuple[int, float]]]]
"""``{trial_id: {metric name: [(step, value), ...]}}``, as :meth:`MetricSource.new_points`
returns it."""

_IMPORT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_import_target(target: object) -> bool:
    """Whether a trial target names a function (``"package.module:function"``) rather than
    a command line."""
    return isinstance(target, str) and bool(_IMPORT_RE.match(target))


# -- what a trial is -------------------------------------------------------------------------
#: Resource names Ray reserves: a trial asks for them through cpus/gpus (or not at all).
_RAY_BUILTIN = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


@dataclass(frozen=True)
class Resources:
    """What one trial occupies while it runs (Ray's ``num_cpus``, ``num_gpus`` and custom
    ``resources``).

    Attributes:
        cpus: CPUs per trial.
        gpus: GPUs per trial (fractions share a GPU).
        custom: Ray custom resources per trial, by the name the cluster's nodes declare
            (``ray start --resources='{"A100": 4}'``, or the ``accelerator_type:A100`` Ray
            sets itself): a trial runs only on a node that has them free.

    Raises:
        UserInputError: for negative or non-finite amounts, a custom name Ray reserves, or a
            trial that asks for nothing at all.
    """

    cpus: float = 1.0
    gpus: float = 0.0
    custom: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        hint = "e.g. Resources(cpus=1), Resources(cpus=4, gpus=1) or Resources(custom={'A100': 1})"
        object.__setattr__(self, "cpus", _non_negative(self.cpus, "cpus", hint))
        object.__setattr__(self, "gpus", _non_negative(self.gpus, "gpus", hint))
        if not isinstance(self.custom, Mapping):
            raise UserInputError(f"custom resources must be a mapping of names to amounts, "
                                 f"got {type(self.custom).__name__}", hint=hint)
        custom: dict[str, float] = {}
        for name, amount in self.custom.items():
            if not isinstance(name, str) or not name.strip():
                raise UserInputError(f"a custom resource needs a name, got {name!r}", hint=hint)
            if name in _RAY_BUILTIN or name.startswith("node:"):
                raise UserInputError(
                    f"{name!r} is one of Ray's own resources, not a custom one",
                    hint="ask for CPUs and GPUs with cpus/gpus; custom names are those the "
                         "nodes declare, e.g. ray start --resources='{\"A100\": 4}'")
            custom[name] = _non_negative(amount, f"custom resource {name!r}", hint)
        object.__setattr__(self, "custom", FrozenDict(custom))
        if self.cpus == 0 and self.gpus == 0 and not any(custom.values()):
            raise UserInputError("a trial must ask for some cpus, gpus or custom resources",
                                 hint=hint)

    def request(self) -> dict[str, float]:
        """What one trial asks the cluster for, by Ray's resource names (``CPU``, ``GPU``,
        then the custom ones); resources it asks none of are left out."""
        asked = {"CPU": self.cpus, "GPU": self.gpus, **self.custom}
        return {k: v for k, v in asked.items() if v > 0}

    def fits(self, free: Mapping[str, float]) -> int:
        """How many trials of these resources fit in ``free`` (by Ray's names)."""
        n = min((free.get(k, 0.0) // v for k, v in self.request().items()), default=1 << 30)
        return max(0, int(min(n, 1 << 30)))

    def to_dict(self) -> dict[str, Any]:
        """``{"cpus", "gpus"}``, plus ``"custom"`` when it asks for any: the objective's form."""
        out: dict[str, Any] = {"cpus": self.cpus, "gpus": self.gpus}
        if self.custom:
            out["custom"] = dict(self.custom)
        return out


_OBJECTIVE_KEY = {"CPU": "cpus", "GPU": "gpus"}


@dataclass(frozen=True)
class Shortfall:
    """A trial asks for more of some resource than the whole cluster has, all its nodes
    together: not a busy cluster (that is :meth:`Backend.capacity` 0), one where the trial
    could never start however long it waited, unless the cluster grows.

    Attributes:
        requested: What one trial asks for, by resource name (``{"CPU": 1, "GPU": 1}``).
        total: What the whole cluster has of each of those resources.
        may_grow: Whether the cluster may add nodes (an autoscaler): the trial may fit later.
    """

    requested: Mapping[str, float]
    total: Mapping[str, float]
    may_grow: bool = False

    @classmethod
    def of(cls, requested: Mapping[str, float], total: Mapping[str, float], *,
           may_grow: bool = False) -> Shortfall | None:
        """The shortfall of ``requested`` against the cluster's ``total``, or None if every
        resource asked for is there (resource names as Ray spells them, custom ones too)."""
        if all(v <= float(total.get(k, 0.0)) + 1e-9 for k, v in requested.items()):
            return None
        return cls(dict(requested), {k: float(total.get(k, 0.0)) for k in requested},
                   may_grow)

    @property
    def missing(self) -> list[str]:
        """The resources the cluster has too little of."""
        return [k for k, v in self.requested.items() if v > self.total.get(k, 0.0) + 1e-9]

    @property
    def message(self) -> str:
        asked = ", ".join(f"{v:g} {k}" for k, v in self.requested.items())
        has = ", ".join(f"{self.total.get(k, 0.0):g} {k}" for k in self.requested)
        return (f"each trial asks for {asked}, but the whole cluster has {has}: "
                f"not enough {' or '.join(self.missing)} for even one trial")

    @property
    def hint(self) -> str:
        builtin = [f"{_OBJECTIVE_KEY[k]}: {self.total.get(k, 0.0):g}"
                   for k in self.missing if k in _OBJECTIVE_KEY]
        custom = [f"{k}: {self.total.get(k, 0.0):g}" for k in self.missing
                  if k not in _OBJECTIVE_KEY]
        lower = ", ".join(builtin + ([f"custom: {{{', '.join(custom)}}}"] if custom else []))
        return (f"lower the objective's resources (e.g. resources: {{{lower}}}), or add nodes "
                f"with {' and '.join(self.missing)} to the cluster")


class TargetKind(StrEnum):
    """How a backend runs a trial's :attr:`TrialSpec.target`."""

    FUNCTION = "function"
    """A Python callable ``f(config, run)``."""
    IMPORT = "import"
    """An import string ``"module.sub:func"`` naming such a callable."""
    COMMAND = "command"
    """A command line; it gets its config as ``--key=value`` arguments and ``ASSAY_CONFIG``."""


@dataclass(frozen=True)
class TrialSpec:
    """Everything a backend needs to run one trial.

    Args:
        trial_id: The assay run id the trial records into (4-64 letters and digits); the
            agent pre-assigns it so that decisions can name the run before it starts.
        project: The run's project.
        config: The trial's hyperparameters (JSON-serializable).
        target: What to run: a callable ``f(config, run)`` (its return value, a mapping of
            numbers, becomes the result), an import string ``"module.sub:func"`` naming one,
            or a command (``list[str]``, or a string split like a shell would) that gets its
            config as ``--key=value`` arguments and as JSON in ``ASSAY_CONFIG``, plus
            ``ASSAY_RUN_ID``, ``ASSAY_PROJECT`` and ``ASSAY_DIR``, and logs through the SDK.
            Simulated backends ignore it.
        resources: CPUs and GPUs the trial occupies.
        max_retries: How often to restart the trial (resuming its run) when its worker
            dies; exceptions raised by the trial itself are never retried.
        stop_grace_s: After a stop request, seconds the trial may take to stop on its own
            (``run.should_stop()``) before it is killed.
        report_timeout_s: A started trial that logs no metric for this long is stopped and
            failed (``None``: no limit).
        env: Extra environment variables for command trials.
        resume: Continue the trial's existing run (its id) instead of starting a new one,
            e.g. when the agent that launched it restarted and relaunches it. A run that
            never became durable is created as usual; command trials get ``ASSAY_RESUME_ID``
            instead of ``ASSAY_RUN_ID``. The target itself runs again (its ``run.attach``
            is above 0), and its run rewinds to the step it logs first
            (``assay.init(resume_from_step="auto")``): 0 when it starts from the top, ``k``
            when it restores its own checkpoint at ``k`` (the points below ``k`` stay). The
            points of the attempt that died from there on are superseded, so the run's
            history, summary and the agent's stoppers see the new attempt's curve alone.
            Backend retries of a dead worker resume the same way.

    Raises:
        UserInputError: for an invalid id, project, config, target, limit or flag.
    """

    trial_id: str
    project: str
    config: Mapping[str, Any] = field(default_factory=dict)
    target: Callable[..., Any] | str | Sequence[str] | None = None
    resources: Resources = field(default_factory=Resources)
    max_retries: int = 0
    stop_grace_s: float = 30.0
    report_timeout_s: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    resume: bool = False

    def __post_init__(self) -> None:
        tid = self.trial_id
        if not isinstance(tid, str) or not tid.isalnum() or not 4 <= len(tid) <= 64:
            raise UserInputError(f"invalid trial id {tid!r}",
                                 hint="trial ids are assay run ids: 4-64 letters and digits")
        validate_name("project", self.project)
        if not isinstance(self.config, Mapping):
            raise UserInputError(f"trial {tid}: config must be a mapping, "
                                 f"got {type(self.config).__name__}", hint="pass a dict")
        cfg = to_jsonable(dict(self.config), what="config")
        object.__setattr__(self, "config", FrozenDict(cfg))
        self._check_target()
        if not isinstance(self.resources, Resources):
            raise UserInputError(f"trial {tid}: resources must be a Resources",
                                 hint="e.g. Resources(cpus=1, gpus=0)")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) \
                or self.max_retries < 0:
            raise UserInputError(f"trial {tid}: max_retries must be an int >= 0, "
                                 f"got {self.max_retries!r}", hint="0 disables retries")
        object.__setattr__(self, "stop_grace_s", _non_negative(
            self.stop_grace_s, "stop_grace_s", "seconds a trial may take to stop by itself"))
        if self.report_timeout_s is not None:
            t = _non_negative(self.report_timeout_s, "report_timeout_s",
                              "seconds without a logged metric, or None for no limit")
            if t == 0:
                raise UserInputError("report_timeout_s must be > 0",
                                     hint="use None for no limit")
            object.__setattr__(self, "report_timeout_s", t)
        if not isinstance(self.env, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()):
            raise UserInputError(f"trial {tid}: env must map strings to strings",
                                 hint='e.g. env={"OMP_NUM_THREADS": "1"}')
        object.__setattr__(self, "env", FrozenDict(self.env))
        if not isinstance(self.resume, bool):
            raise UserInputError(f"trial {tid}: resume must be True or False, "
                                 f"got {self.resume!r}",
                                 hint="resume=True continues the trial's existing run")

    def _check_target(self) -> None:
        t = self.target
        if t is None or callable(t):
            return
        if isinstance(t, str):
            if not t.strip():
                raise UserInputError(f"trial {self.trial_id}: target is an empty string",
                                     hint='use "module.sub:func" or a command line')
            return
        if isinstance(t, Sequence) and t and all(isinstance(a, str) for a in t):
            object.__setattr__(self, "target", tuple(t))
            return
        raise UserInputError(
            f"trial {self.trial_id}: target must be a callable, an import string or a "
            f"command, got {t!r}",
            hint='e.g. target=train, target="assay.examples.digits:train" or '
                 'target=["python", "train.py"]')

    @property
    def target_kind(self) -> TargetKind | None:
        """How the target runs; ``None`` when there is no target (simulated trials)."""
        t = self.target
        if t is None:
            return None
        if callable(t):
            return TargetKind.FUNCTION
        if is_import_target(t):
            return TargetKind.IMPORT
        return TargetKind.COMMAND


# -- what happens to it ----------------------------------------------------------------------
class EventKind(StrEnum):
    """What happened to a trial."""

    STARTED = "started"
    """An attempt began running (once per attempt)."""
    RETRIED = "retried"
    """The attempt's worker died; the trial starts again as attempt :attr:`TrialEvent.attempt`."""
    COMPLETED = "completed"
    """The target returned normally."""
    FAILED = "failed"
    """The target raised, timed out, or its worker died more often than ``max_retries``."""
    STOPPED = "stopped"
    """Stopped on request (cooperatively, or killed after the grace period)."""

    @property
    def finished(self) -> bool:
        """True for the last event a trial ever gets."""
        return self in (EventKind.COMPLETED, EventKind.FAILED, EventKind.STOPPED)


@dataclass(frozen=True)
class Usage:
    """Resources an attempt (or a sum of attempts) used: reserved resources x wall time.

    Attributes:
        wall_s: Wall seconds.
        cpu_s: CPU-seconds (cpus reserved x wall seconds).
        gpu_s: GPU-seconds (gpus reserved x wall seconds).
    """

    wall_s: float = 0.0
    cpu_s: float = 0.0
    gpu_s: float = 0.0

    @classmethod
    def of(cls, resources: Resources, wall_s: float) -> Usage:
        """The usage of holding ``resources`` for ``wall_s`` seconds."""
        w = max(0.0, float(wall_s))
        return cls(w, resources.cpus * w, resources.gpus * w)

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.wall_s + other.wall_s, self.cpu_s + other.cpu_s,
                     self.gpu_s + other.gpu_s)

    @property
    def cpu_hours(self) -> float:
        return self.cpu_s / 3600.0

    @property
    def gpu_hours(self) -> float:
        return self.gpu_s / 3600.0


@dataclass(frozen=True)
class TrialEvent:
    """One thing that happened to a trial, reported once by :meth:`Backend.poll`.

    Attributes:
        trial_id: The trial (its run id).
        kind: What happened.
        time: When, on the backend's clock.
        attempt: The attempt it concerns (1 for the first; for ``retried``, the new one).
        result: Final metrics (``completed``; may be partial for ``stopped``).
        reason: Why it stopped, failed or was retried, in one sentence.
        error: The traceback or error output of a failure.
        usage: Resources used by the attempt that just ended (zero for ``started``).
    """

    trial_id: str
    kind: EventKind
    time: float
    attempt: int = 1
    result: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""
    error: str = ""
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EventKind(self.kind))
        object.__setattr__(self, "result", FrozenDict(self.result))


# -- who runs it -----------------------------------------------------------------------------
class Backend(ABC):
    """Runs trials: the only part of assay that knows how (Ray tasks, a simulator, ...).

    The controller agent owns a backend and calls it from one thread, in its ``step()``
    loop. Implementations must not mutate the specs they are given, and report every event
    exactly once.

    Attributes:
        clock: The time source of the backend's events and grace periods.
    """

    clock: Clock

    @abstractmethod
    def launch(self, spec: TrialSpec) -> None:
        """Start running a trial (or queue it until resources free up).

        Called by the agent after it has recorded why it chose the config; returns without
        waiting for the trial to start. Its ``started`` event comes from a later poll.

        Raises:
            ConflictError: if a trial with this id was launched before on this backend.
            UserInputError: if the trial can never run here (resources beyond the cluster).
        """

    @abstractmethod
    def poll(self) -> list[TrialEvent]:
        """Events since the last poll, each exactly once; a trial's events in the order
        they happened (started, retried, ..., then one final event).

        Called by the agent at the start of every step. Also where the backend does its
        housekeeping: killing trials whose grace period ran out, failing trials that stopped
        reporting, restarting trials whose worker died.
        """

    @abstractmethod
    def stop(self, trial_id: str, reason: str = "stop requested") -> None:
        """Ask a trial to stop; kill it if it has not stopped ``stop_grace_s`` later.

        Called by the agent for the stoppers' decisions and human overrides. Idempotent:
        stopping a trial that is stopping or finished does nothing. The ``stopped`` event
        (with ``reason``) comes from a later poll.

        Raises:
            NotFoundError: for a trial id this backend never launched.
        """

    def end_unlaunched(self, project: str, trial_id: str, status: str, reason: str) -> None:
        """Finish the run of a trial that ends without an attempt here: a restarted agent's
        lost trial that it will not relaunch (asked to stop, or out of retries). Its run
        would otherwise stay ``crashed`` or ``running``. Nothing to do where runs are not
        stored (simulations); unfinished runs only.
        """

    @abstractmethod
    def running(self) -> set[str]:
        """Ids of the trials launched and not yet finished (queued ones included)."""

    @abstractmethod
    def capacity(self, resources: Resources | None = None) -> int:
        """How many more trials of ``resources`` (default: 1 CPU) could start right now.

        Called by the agent before asking the searcher for configs; 0 means "wait", or,
        with a :meth:`shortfall`, that no trial of ``resources`` can ever start here.
        """

    def shortfall(self, resources: Resources) -> Shortfall | None:
        """What a trial of ``resources`` asks for beyond the whole cluster's total: a trial
        that could never start here (:meth:`capacity` would stay 0 for it forever, unless
        :attr:`Shortfall.may_grow`), or None when it fits once running trials finish.

        Called by the agent when :meth:`capacity` is 0, to tell waiting from impossible.
        Default: None (a backend without a fixed size).
        """
        return None

    @abstractmethod
    def shutdown(self) -> None:
        """Stop every trial (killing without grace) and release the backend's resources.

        Events of the trials it ended remain for one last :meth:`poll`. Idempotent.
        """

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class MetricSource(ABC):
    """Where an agent reads the curves of its trials."""

    @abstractmethod
    def new_points(self, trial_ids: Iterable[str]) -> Points:
        """Metric points of ``trial_ids`` that this source has not returned before.

        Called by the agent once per step for its running (and just finished) trials.
        Trials without new points may be left out of the answer.

        Returns:
            ``{trial_id: {metric name: [(step, value), ...]}}``, each list sorted by step.
            For a trial named by :meth:`replaced` afterwards, its whole current curve.
        """

    def replaced(self) -> set[str]:
        """Trials whose points in the last :meth:`new_points` answer replace every point
        returned for them before (their stored curve changed other than by new steps: a
        retried or relaunched attempt rewound the run, or a step was logged again). The
        agent drops what it held for them first. Default: none (a source that only ever
        adds points)."""
        return set()
