"""Searchers that wrap Optuna samplers (TPE, CMA-ES, or any sampler) through ask/tell.

Each call replays the history into a fresh in-memory study (``study.add_trial`` with
``create_trial``): finished trials as COMPLETE or FAIL, pending and running ones as
RUNNING so that samplers with a constant liar (TPE) avoid them. Then it asks ``n``
trials, defining parameters by run so conditional spaces work. The samplers themselves
are Optuna's, unchanged.

CMA-ES keeps its evolution state in trial system attributes; the searcher remembers them
for the trials it proposed (keyed by config) and puts them back on replay, and
:meth:`OptunaSearcher.state_dict` carries them across restarts.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import UserInputError
from ..base import Mode, Searcher, check_history
from ..records import Suggestion, TrialResult, TrialStatus
from ..space import Choice, Integer, LogUniform, Param, SearchSpace, Uniform

if TYPE_CHECKING:
    import optuna

__all__ = ["CMAESSearcher", "OptunaSearcher", "TPESearcher", "build_study", "optuna_distribution"]

_ATTRS_KEPT = 256
_ASK_RETRIES = 8


def _fresh_random(space: SearchSpace, seen: set[str], rng: np.random.Generator) -> dict[str, Any]:
    """A random config not in ``seen`` (any random config once the space is exhausted)."""
    config = space.sample(rng)
    for _ in range(64):
        if space.key(config) not in seen:
            break
        config = space.sample(rng)
    return config


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Optuna's info logs and experimental warnings for the duration."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="optuna")
            warnings.filterwarnings("ignore", message=".*experimental.*")
            yield
    finally:
        logger.setLevel(level)


def optuna_distribution(param: Param) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of a tunable parameter (choices as option indices)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(param, Uniform):
        return FloatDistribution(param.low, param.high)
    if isinstance(param, LogUniform):
        return FloatDistribution(param.low, param.high, log=True)
    if isinstance(param, Integer):
        return IntDistribution(param.low, param.high, log=param.log)
    if isinstance(param, Choice):
        # Indices, not the options: Optuna only accepts primitive choices.
        return CategoricalDistribution(list(range(len(param.options))))
    raise UserInputError(f"no Optuna distribution for {type(param).__name__}")


def _to_params(space: SearchSpace, config: Mapping[str, Any]) -> tuple[dict, dict]:
    params: dict[str, Any] = {}
    dists: dict[str, Any] = {}
    for name in space.tunable:
        if name not in config:
            continue
        p = space[name]
        params[name] = p.index(config[name]) if isinstance(p, Choice) else config[name]
        dists[name] = optuna_distribution(p)
    return params, dists


def build_study(
    history: Sequence[TrialResult],
    space: SearchSpace,
    directions: Sequence[Mode],
    metrics: Sequence[str | None],
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    system_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    use_stopped: bool = True,
) -> tuple[optuna.Study, int]:
    """An in-memory Optuna study holding ``history``.

    Returns:
        The study and the number of trials skipped (configs outside the space).
    """
    import optuna
    from optuna.trial import TrialState, create_trial

    with _quiet():
        study = optuna.create_study(
            directions=["minimize" if d is Mode.MIN else "maximize" for d in directions],
            sampler=sampler,
        )
        skipped = 0
        for t in history:
            if not space.contains(t.config):
                skipped += 1
                continue
            active = space.validate(t.config)
            params, dists = _to_params(space, active)
            attrs = dict((system_attrs or {}).get(space.key(active), {}))
            raw = [t.metric(m) for m in metrics]
            values = [float(v) for v in raw if v is not None]
            finite = len(values) == len(raw) and all(np.isfinite(values))
            if t.status.is_active:
                state, vals = TrialState.RUNNING, None
            elif t.status is TrialStatus.COMPLETED or (
                t.status is TrialStatus.STOPPED and use_stopped
            ):
                state, vals = (TrialState.COMPLETE, values) if finite else (TrialState.FAIL, None)
            elif t.status is TrialStatus.STOPPED:
                state, vals = TrialState.PRUNED, None
            else:
                state, vals = TrialState.FAIL, None
            study.add_trial(
                create_trial(state=state, values=vals, params=params, distributions=dists,
                             system_attrs=attrs)
            )
    return study, skipped


def _ask_param(trial: optuna.Trial, name: str, param: Param) -> Any:
    if param.is_fixed:
        return param.from_unit(0.5)
    if isinstance(param, Choice):
        return param.options[trial.suggest_categorical(name, list(range(len(param.options))))]
    if isinstance(param, Integer):
        return trial.suggest_int(name, param.low, param.high, log=param.log)
    if isinstance(param, Uniform | LogUniform):
        return trial.suggest_float(name, param.low, param.high, log=isinstance(param, LogUniform))
    raise UserInputError(f"parameter {name!r}: unsupported type {type(param).__name__}")


class OptunaSearcher(Searcher):
    """Any Optuna sampler behind the :class:`Searcher` interface.

    Args:
        space: The search space.
        sampler_factory: ``seed -> sampler``; called once per :meth:`suggest` with a seed
            derived from ``(seed, len(history))``.
        mode: ``"min"`` or ``"max"`` (single objective).
        metric: Objective name in ``TrialResult.metrics``; None uses the trial's value.
        objectives: For multi-objective search, ``{metric name: mode}``; overrides
            ``mode``/``metric``. The sampler must support several objectives.
        seed: Base seed.
        use_stopped: Count early-stopped trials as observations at their last value.
        method: Name written into explanations.
    """

    method = "optuna"

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        sampler_factory: Callable[[int], optuna.samplers.BaseSampler] | None = None,
        *,
        mode: Mode | str = "min",
        metric: str | None = None,
        objectives: Mapping[str, Mode | str] | None = None,
        seed: int = 0,
        use_stopped: bool = True,
        method: str | None = None,
    ) -> None:
        super().__init__(space, mode=mode, metric=metric, seed=seed)
        if objectives is not None:
            if not isinstance(objectives, Mapping) or len(objectives) < 1:
                raise UserInputError("objectives must be a non-empty {metric: mode} mapping")
            self.metrics: list[str | None] = list(objectives)
            self.directions = [Mode.parse(m) for m in objectives.values()]
        else:
            self.metrics, self.directions = [metric], [self.mode]
        self._factory = sampler_factory
        self.use_stopped = use_stopped
        if method:
            self.method = method
        self._attrs: dict[str, dict[str, Any]] = {}

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        if self._factory is None:
            import optuna

            return optuna.samplers.RandomSampler(seed=seed)
        return self._factory(seed)

    def suggest(self, history: Sequence[TrialResult], n: int = 1) -> list[Suggestion]:
        n = self._check_n(n)
        history = check_history(history)
        seed = int(np.random.SeedSequence([self.seed, len(history)]).generate_state(1)[0])
        sampler = self._sampler(seed)
        study, skipped = build_study(
            history, self.space, self.directions, self.metrics, sampler=sampler,
            system_attrs=self._attrs, use_stopped=self.use_stopped,
        )
        n_complete = sum(1 for t in study.trials if t.state.name == "COMPLETE")
        seen = self._seen_keys(history)
        rng = np.random.default_rng([self.seed, len(history), 1])
        out: list[Suggestion] = []
        with _quiet():
            for _ in range(n):
                method = self.method
                for _attempt in range(_ASK_RETRIES):
                    # A repeated point stays in the study as running, so a constant-liar
                    # sampler steers away from it on the next ask.
                    config = self._ask(study)
                    if self.space.key(config) not in seen:
                        break
                else:
                    config = _fresh_random(self.space, seen, rng)
                    method = f"{self.method} (random fill: the sampler kept repeating tried configs)"
                seen.add(self.space.key(config))
                out.append(
                    Suggestion(
                        config,
                        {"method": method, "sampler": type(sampler).__name__,
                         "n_complete": n_complete, "n_skipped_out_of_space": skipped,
                         "batch_position": len(out)},
                    )
                )
        return out

    def _ask(self, study: optuna.Study) -> dict[str, Any]:
        trial = study.ask()
        config: dict[str, Any] = {}
        for name, param in self.space.items():
            if self.space.is_active(name, {**config, name: None}):
                config[name] = _ask_param(trial, name, param)
        frozen = study.get_trials(deepcopy=False)[trial.number]
        if frozen.system_attrs:
            self._remember(self.space.key(config), dict(frozen.system_attrs))
        return config

    def _remember(self, key: str, attrs: dict[str, Any]) -> None:
        self._attrs[key] = attrs
        if len(self._attrs) > _ATTRS_KEPT:
            for old in list(self._attrs)[: len(self._attrs) - _ATTRS_KEPT]:
                del self._attrs[old]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "system_attrs": {k: dict(v) for k, v in self._attrs.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._attrs = {k: dict(v) for k, v in (state.get("system_attrs") or {}).items()}


class TPESearcher(OptunaSearcher):
    """Optuna's multivariate TPE with a constant liar for pending trials.

    Args:
        space: The search space.
        n_startup_trials: Random trials before TPE takes over.
        **kwargs: ``mode``, ``metric``, ``objectives``, ``seed``, ``use_stopped``.
    """

    method = "tpe"

    def __init__(
        self, space: SearchSpace | Mapping[str, Any], *, n_startup_trials: int = 10, **kwargs: Any
    ) -> None:
        super().__init__(space, self._make, **kwargs)
        self.n_startup_trials = n_startup_trials

    def _make(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        with _quiet():
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=self.n_startup_trials, multivariate=True,
                group=self.space.has_conditions, constant_liar=True,
            )


class CMAESSearcher(OptunaSearcher):
    """Optuna's CMA-ES (needs the ``cmaes`` package). Single objective only; choice
    parameters are sampled independently (CMA-ES has no categorical support).

    Args:
        space: The search space.
        n_startup_trials: Independent trials before CMA-ES starts.
        popsize: Population size (default: CMA-ES's ``4 + 3 ln d``).
        **kwargs: ``mode``, ``metric``, ``seed``, ``use_stopped``.

    Raises:
        UserInputError: when ``cmaes`` is not installed or several objectives are given.
    """

    method = "cmaes"

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Any],
        *,
        n_startup_trials: int = 1,
        popsize: int | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise UserInputError(
                "CMAESSearcher needs the 'cmaes' package, which is not installed",
                hint="pip install cmaes",
            ) from None
        if kwargs.get("objectives") and len(kwargs["objectives"]) > 1:
            raise UserInputError("CMA-ES handles one objective", hint="use TPESearcher or BoTorchSearcher")
        super().__init__(space, self._make, **kwargs)
        self.n_startup_trials = n_startup_trials
        self.popsize = popsize

    def _make(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        with _quiet():
            return optuna.samplers.CmaEsSampler(
                seed=seed, n_startup_trials=self.n_startup_trials, popsize=self.popsize,
                warn_independent_sampling=False,
            )
