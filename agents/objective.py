"""Research objectives: what a person asks the agents to find, as YAML or Python.

```yaml
name: digits-mlp
project: digits
train: examples.digits:train          # a function train(config, run), or a shell command
metric: val/acc
mode: max
space: {lr: {loguniform: [1.0e-4, 1.0]}, hidden: {integer: [16, 256]}, epochs: 30}
budget: {trials: 40, gpu_hours: 0, wall_clock: 20m}
concurrency: 2
resources: {cpus: 1, gpus: 0}        # custom Ray resources too: custom: {A100: 1}
searcher: botorch
stoppers: [learned, asha]
```

Every key is checked when the objective is built: unknown keys (with the closest known
one), impossible budgets, a train function that cannot be imported, a space that does not
parse: each gets a :class:`~assay.errors.UserInputError` saying what to fix.
"""

from __future__ import annotations

import difflib
import importlib
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserInputError
from ..store.records import validate_name

if TYPE_CHECKING:
    from ..policies.space import SearchSpace

__all__ = ["OVERRIDE_PARAMS", "SEARCHERS", "STOPPERS", "Objective", "check_override",
           "resolve_train"]

SEARCHERS = ("botorch", "tpe", "cmaes", "random", "sobol", "grid")
STOPPERS = ("learned", "asha", "hyperband", "median", "nan", "divergence", "threshold")


def _import_target(spec: str) -> Any:
    mod_name, _, attr = spec.partition(":")
    last: Exception | None = None
    for candidate in (mod_name, f"assay.{mod_name}"):
        try:
            mod = importlib.import_module(candidate)
        except ModuleNotFoundError as e:
            if e.name and not candidate.startswith(e.name) and not e.name.startswith(candidate.split(".")[0]):
                raise  # the module exists but one of its own imports is missing
            last = e
            continue
        fn = getattr(mod, attr, None)
        if fn is None:
            raise UserInputError(f"train target {spec!r}: module {candidate} has no {attr!r}",
                                 hint="name a function defined there: module.path:function")
        if not callable(fn):
            raise UserInputError(f"train target {spec!r} is not callable",
                                 hint="train must be a function train(config, run)")
        return fn
    raise UserInputError(f"cannot import train target {spec!r}: {last}",
                         hint="use 'package.module:function' importable on the workers "
                         "(e.g. examples.digits:train), or a shell command")


def resolve_train(train: Any) -> Any:
    """An import string ``module:function``, a callable, or a command (list or string with
    spaces). Returns the callable, or the command as a list of arguments."""
    if callable(train):
        return train
    if isinstance(train, (list, tuple)) and train and all(isinstance(a, str) for a in train):
        return list(train)
    if isinstance(train, str) and train.strip():
        text = train.strip()
        if any(ch.isspace() for ch in text) or ":" not in text:
            return shlex.split(text)
        return _import_target(text)
    raise UserInputError(f"train must be 'module:function', a callable or a command, got {train!r}",
                         hint="e.g. train: examples.digits:train, or train: python train.py")


def _check_importable(fn: Any) -> None:
    """A train function given as a callable must be importable as ``module:function``.

    Every way an objective runs (``Objective.run``, ``assay run``, the API) starts its agent
    in a Ray actor, another process, which gets the objective as :meth:`Objective.to_dict`
    and imports the train target again by that name (so does a restarted actor). A function
    defined in ``__main__`` (the script being run), a lambda, a nested function or a
    ``functools.partial`` cannot be found that way: refused here, not when the agent starts.
    """
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    hint = ("define it in a module file on the path (e.g. mytrain.py) and pass "
            "train='mytrain:train', or the function imported from that module")
    if not isinstance(qual, str) or not isinstance(mod, str):
        raise UserInputError(f"train {fn!r} has no importable name: the agent runs in a Ray "
                             "actor and imports its train function as module:function",
                             hint=hint)
    if mod == "__main__":
        raise UserInputError(f"train function {qual!r} is defined in __main__ (the script "
                             "being run): the agent runs in a Ray actor, another process, and "
                             "imports its train function as module:function, so it cannot "
                             "find it there", hint=hint)
    found: Any = None
    if "." not in qual and "<" not in qual:
        try:
            found = _import_target(f"{mod}:{qual}")
        except (UserInputError, ImportError):
            found = None
    if found is not fn:
        raise UserInputError(f"train function {mod}:{qual} cannot be imported by that name "
                             "(a lambda, a nested function or a method): the agent runs in a "
                             "Ray actor and imports its train function as module:function",
                             hint=hint)


def _names(value: Any, allowed: tuple[str, ...], what: str) -> list[dict[str, Any]]:
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for it in items:
        if isinstance(it, str):
            name, opts = it, dict[str, Any]()
        elif isinstance(it, Mapping) and len(it) == 1:
            name, opts = next(iter(it.items()))
            if opts is not None and not isinstance(opts, Mapping):
                raise UserInputError(f"{what} {name!r}: options must be a mapping, got {opts!r}",
                                     hint=f"e.g. {{{name}: {{option: value}}}}, or just {name}")
            opts = dict(opts or {})
        else:
            raise UserInputError(f"{what} entry {it!r} is not a name or {{name: options}}",
                                 hint=f"choose from: {', '.join(allowed)}")
        if name not in allowed:
            close = difflib.get_close_matches(str(name), allowed, n=1)
            raise UserInputError(f"unknown {what} {name!r}",
                                 hint=(f"did you mean {close[0]!r}? " if close else "")
                                 + f"choose from: {', '.join(allowed)}")
        out.append({"name": name, **opts})
    return out


_SPACE_HINT = "e.g. space: {lr: {loguniform: [1.0e-4, 1.0]}, hidden: {integer: [16, 256]}}"
_BUDGET_HINT = "e.g. budget: {trials: 40, wall_clock: 20m}"


def _mapping(value: Any, what: str, hint: str) -> dict[str, Any]:
    """``value`` as a dict, or a :class:`UserInputError` saying it is not a mapping (what a
    person sends is checked before ``dict()`` could fail with a bare TypeError)."""
    if not isinstance(value, Mapping):
        raise UserInputError(f"{what} must be a mapping, got {type(value).__name__}", hint=hint)
    return dict(value)


def check_budget(data: Mapping[str, Any], where: str) -> None:
    """Check a budget mapping as a person wrote it: each limit on its own first, so an
    error names the key they wrote (``budget.wall_clock``, not the field it maps to) and,
    for a duration, the forms accepted; then the whole (aliases, unknown keys).

    Raises:
        UserInputError: naming ``<where>.<key>`` and what to write.
    """
    from ..scheduler.budget import Budget

    Budget.normalize(data)  # unknown keys, or one key in two spellings
    for key, value in data.items():
        field_name = Budget.normalize({key: value}).popitem()[0]
        try:
            Budget(**{field_name: value})
        except UserInputError as e:
            own = f"{where}.{key}"
            named = re.compile(rf"(?<![\w.]){field_name}(?: budget)?(?!\w)")
            msg, hint = named.sub(own, e.message), named.sub(own, e.hint)
            if field_name == "wall_clock_s":
                hint = (f"{own} takes a duration such as 45s, 10m, 2h or 1h30m (units s, m, "
                        "h, d), or seconds as a number")
            elif field_name != "trials":
                hint = (f"{own} takes hours as a number (e.g. 1.5), or a duration such as "
                        "45m or 2h")
            raise UserInputError(msg, hint=hint) from None
    Budget.from_mapping(data)


@dataclass(frozen=True)
class Objective:
    """A validated research objective (see the module docstring for the YAML form)."""

    name: str
    project: str
    train: Any
    metric: str
    mode: str = "max"
    space: Mapping[str, Any] = field(default_factory=dict)
    budget: Mapping[str, Any] = field(default_factory=lambda: {"trials": 20})
    concurrency: int = 1
    resources: Mapping[str, Any] = field(default_factory=lambda: {"cpus": 1, "gpus": 0})
    searcher: Any = "botorch"
    stoppers: Any = field(default_factory=list)
    seed: int = 0
    max_retries: int = 1  # per trial: dead workers retried, and restarted-agent relaunches
    trial_timeout: str | float | None = None
    stop_grace: float = 10.0
    warm_start: bool = True
    reevaluate_on: tuple[str, ...] = ()
    reevaluate_top: int = 3
    project_budget: Mapping[str, Any] | None = None
    owner: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        validate_name("objective", self.name)
        validate_name("project", self.project)
        if not isinstance(self.metric, str) or not self.metric:
            raise UserInputError("metric must name the metric to optimise, e.g. 'val/acc'",
                                 hint="the key your train function logs with run.log")
        if self.mode not in ("min", "max"):
            raise UserInputError(f"mode must be 'min' or 'max', got {self.mode!r}",
                                 hint="'max' for accuracy, 'min' for loss")
        if isinstance(self.train, str) and self.train.strip().startswith("__main__:"):
            raise UserInputError(f"train target {self.train!r} names __main__, which the "
                                 "agent's Ray actor (another process) cannot import",
                                 hint="name a function in a module file on the path: "
                                 "module:function")
        resolve_train(self.train)
        if callable(self.train):
            _check_importable(self.train)
        from ..policies.space import as_space

        as_space(_mapping(self.space, "space", _SPACE_HINT))  # names the bad parameter

        check_budget(_mapping(self.budget, "budget", _BUDGET_HINT), "budget")
        for k, lo in (("concurrency", 1), ("reevaluate_top", 1)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= MAX_CONCURRENCY:
                raise UserInputError(f"{k} must be an integer from {lo} to "
                                     f"{MAX_CONCURRENCY:,}, got {v!r}", hint=f"e.g. {k}: 2")
        trials = self.budget.get("trials")
        if isinstance(trials, int) and trials < self.concurrency:
            raise UserInputError(
                f"budget of {trials} trials is smaller than concurrency {self.concurrency}",
                hint="raise the trial budget or lower concurrency")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) \
                or self.max_retries < 0:
            raise UserInputError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        from ..scheduler.base import Resources

        res = _mapping(self.resources, "resources", "e.g. resources: {cpus: 1, gpus: 0}")
        if set(res) - {"cpus", "gpus", "custom"}:
            raise UserInputError(
                f"unknown resources keys: {sorted(set(res) - {'cpus', 'gpus', 'custom'})}",
                hint="resources: {cpus: N, gpus: N, custom: {NAME: N}} (custom: Ray resources "
                     "the nodes declare, e.g. {A100: 1})")
        Resources(**res)
        searchers = _names(self.searcher, SEARCHERS, "searcher")
        if len(searchers) != 1:
            raise UserInputError(
                f"an objective has one searcher, got {len(searchers)}: "
                + ", ".join(s["name"] for s in searchers),
                hint="e.g. searcher: botorch, or searcher: {botorch: {n_initial: 8}}")
        _names(self.stoppers or [], STOPPERS, "stopper")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise UserInputError(f"seed must be an integer, got {self.seed!r}", hint="e.g. seed: 0")
        if not isinstance(self.warm_start, bool):
            raise UserInputError(f"warm_start must be true or false, got {self.warm_start!r}",
                                 hint="true: finished runs of the project warm-start the searcher")
        if self.trial_timeout is not None:
            from ..scheduler.budget import parse_duration

            if parse_duration(self.trial_timeout, what="trial_timeout") <= 0:
                raise UserInputError("trial_timeout must be > 0",
                                     hint="e.g. trial_timeout: 30m; leave it out for no limit")
        # The stoppers are built once here, so bad options fail the declaration (a 400 from
        # the API) instead of the agent it starts. (A learned stopper's first build in a
        # process fits its predictor: about 2 s, then cached.)
        # So is the searcher (cheap: nothing is fitted before its first suggestion): an
        # unknown or bad option is refused here, naming it.
        from .factory import make_searcher, make_stopper, refit_every

        make_searcher(self, as_space(dict(self.space)))
        make_stopper(self)
        refit_every(self)
        for a in self.reevaluate_on:
            validate_name("artifact", a)
        if self.project_budget is not None:
            pt = self.project_budget.get("trials") if isinstance(self.project_budget, Mapping) \
                else None
            if isinstance(pt, bool) or not isinstance(pt, int) or pt < 1 \
                    or set(self.project_budget) != {"trials"}:
                raise UserInputError(
                    f"project_budget must be {{trials: N}} with N >= 1, got {self.project_budget!r}",
                    hint="it caps the trials of every agent of the project together")

    @property
    def searcher_spec(self) -> dict[str, Any]:
        return _names(self.searcher, SEARCHERS, "searcher")[0]

    @property
    def stopper_specs(self) -> list[dict[str, Any]]:
        return _names(self.stoppers or [], STOPPERS, "stopper")

    # -- (de)serialization ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Objective:
        if not isinstance(data, Mapping):
            raise UserInputError("an objective is a mapping of keys to values",
                                 hint="see `assay run --help` for an example")
        known = {f.name for f in fields(cls)}
        for k in data:
            if k not in known:
                close = difflib.get_close_matches(str(k), sorted(known), n=1)
                raise UserInputError(
                    f"unknown objective key {k!r}",
                    hint=(f"did you mean {close[0]!r}? " if close else "")
                    + "known keys: " + ", ".join(sorted(known)))
        for req in ("name", "project", "train", "metric"):
            if req not in data:
                raise UserInputError(f"objective lacks {req!r}", hint=f"add a {req}: line")
        d = dict(data)
        if "reevaluate_on" in d:
            ro = d["reevaluate_on"]
            if ro is None:
                ro = ()
            elif isinstance(ro, str):
                ro = (ro,)
            elif not isinstance(ro, list | tuple):
                raise UserInputError(
                    f"reevaluate_on must be an artifact name or a list of them, got {ro!r}",
                    hint='e.g. reevaluate_on: [digits-data]; leave it out for none')
            d["reevaluate_on"] = tuple(ro)
        return cls(**d)

    @classmethod
    def from_yaml(cls, source: str | Path) -> Objective:
        """Load from a YAML file path, or from YAML text."""
        import yaml

        text = str(source)
        path = Path(text)
        if "\n" not in text and path.suffix in (".yaml", ".yml", ".json"):
            if not path.exists():
                raise UserInputError(f"no objective file at {path}", hint="check the path")
            text = path.read_text()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserInputError(f"objective YAML does not parse: {e}",
                                 hint="check indentation and quoting") from None
        return cls.from_dict(data or {})

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (a callable train target becomes its import string)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        t = self.train
        if callable(t):
            d["train"] = f"{t.__module__}:{t.__qualname__}"
        d["space"] = dict(self.space)
        d["budget"] = dict(self.budget)
        d["resources"] = {k: dict(v) if isinstance(v, Mapping) else v
                          for k, v in self.resources.items()}
        d["reevaluate_on"] = list(self.reevaluate_on)
        d["project_budget"] = dict(self.project_budget) if self.project_budget else None
        return d

    def run(self, **kwargs: Any) -> Any:
        """Run the objective on the embedded default (local Ray) until its budget is spent;
        returns the sweep result (best config, report path). See :func:`assay.agents.run`."""
        from .runner import run_objective

        return run_objective(self, **kwargs)


# -- human overrides ---------------------------------------------------------------------------
MAX_CONCURRENCY = 100_000
"""Most trials one agent runs at once (a typo of 1e23 is refused, not applied)."""

OVERRIDE_PARAMS: dict[str, tuple[str, str]] = {
    # action: (its one parameter, an example of params), "" for actions without one
    "pause": ("", "{}"), "resume": ("", "{}"), "stop": ("", "{}"),
    "stop_run": ("trial_id", '{"trial_id": "<run id>"}'),
    "budget": ("budget", '{"budget": {"trials": 40, "wall_clock": "2h"}}'),
    "concurrency": ("concurrency", '{"concurrency": 2}'),
    "space": ("space", '{"space": {"lr": {"loguniform": [1.0e-4, 0.1]}, "epochs": 10}}'),
    "pin": ("config", '{"config": {"lr": 0.001, "depth": 3}}'),
}


def check_override(action: str, params: Any, *, budget: Mapping[str, Any],
                   space: SearchSpace | None) -> dict[str, Any]:
    """Check what a person sent with an override, against the agent's current budget and
    space; the agent calls it before applying one, the API before storing one (a 400 at
    once instead of a rejection later).

    Returns:
        The parameter, parsed: ``budget`` the merged budget mapping (aliases normalised,
        the override's limits over the current ones), ``space`` a :class:`SearchSpace`,
        ``config`` the pinned config (its active values), ``concurrency`` an int,
        ``trial_id`` a str; ``{}`` for pause, resume and stop. Without a ``space`` (one
        that could not be read), a pinned config is only checked to be a mapping.

    Raises:
        UserInputError: naming what is wrong, with the expected form as the hint.
    """
    if action not in OVERRIDE_PARAMS:
        raise UserInputError(f"unknown override action {action!r}",
                             hint="one of: " + ", ".join(OVERRIDE_PARAMS))
    key, example = OVERRIDE_PARAMS[action]
    hint = f"{action} takes params {example}"
    if not isinstance(params, Mapping):
        raise UserInputError(f"params must be a mapping, got {type(params).__name__}", hint=hint)
    extra = sorted(str(k) for k in params if k != key)
    if extra:
        raise UserInputError(f"{action} does not take params {extra}", hint=hint)
    if not key:
        return {}
    if key not in params:
        raise UserInputError(f"{action} needs params.{key}", hint=hint)
    try:
        return {key: _check_param(key, params[key], hint, budget, space)}
    except UserInputError as e:
        if e.hint:
            raise
        raise UserInputError(e.message, hint=hint) from None


def _check_param(key: str, v: Any, hint: str, budget: Mapping[str, Any],
                 space: SearchSpace | None) -> Any:
    from ..policies.space import as_space
    from ..scheduler.budget import Budget

    if key == "trial_id":
        if not isinstance(v, str) or not v:
            raise UserInputError(f"params.trial_id must be a run id, got {v!r}", hint=hint)
        return v
    if key == "concurrency":
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_CONCURRENCY:
            raise UserInputError(f"concurrency must be an int from 1 to {MAX_CONCURRENCY:,}, "
                                 f"got {v!r}", hint=hint)
        return v
    if key == "budget":
        check_budget(_mapping(v, "params.budget", hint), "params.budget")
        change = Budget.normalize(v)
        if not change:
            raise UserInputError("the budget override changes no limit", hint=hint)
        merged = {**Budget.normalize(budget), **change}
        Budget.from_mapping(merged)  # every limit checked, the kept ones included
        return merged
    if key == "space":
        return as_space(_mapping(v, "params.space", hint))
    cfg = _mapping(v, "params.config", hint)
    if space is None:
        return cfg
    unknown = sorted(str(k) for k in cfg if k not in space)
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(space), n=1)
        raise UserInputError(f"the pinned config sets {unknown}, which the search space does "
                             "not have", hint=(f"did you mean {close[0]!r}? " if close else "")
                             + "parameters: " + ", ".join(space))
    given = cfg
    # The space's fixed values go with every config: a pin need not repeat them.
    cfg = {**{n: getattr(space[n], "value", None) for n in space if space[n].is_fixed}, **cfg}
    try:
        out = space.validate(cfg)
    except UserInputError as e:
        if not e.message.startswith("config lacks"):
            raise
        missing = [n for n in space.tunable if n not in cfg and space.is_active(n, cfg)]
        raise UserInputError(f"the pinned config lacks {missing}: a pin sets every tunable "
                             "parameter (fixed ones are filled in)",
                             hint="tunable parameters: " + ", ".join(space.tunable)) from None
    inactive = sorted(str(k) for k in given if k not in out)
    if inactive:
        raise UserInputError(f"the pinned config sets {inactive}, which its other values "
                             "switch off (their conditions do not hold)",
                             hint="leave them out, or change the values they depend on")
    return out
