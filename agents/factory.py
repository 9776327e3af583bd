"""Build an objective's searcher and stoppers from their names (``botorch``, ``asha``, ...)."""

from __future__ import annotations

from typing import Any

from ..errors import UserInputError
from ..policies import EarlyStopper, Searcher, SearchSpace
from .objective import Objective

__all__ = ["make_searcher", "make_stopper", "max_step", "refit_every", "searcher_options"]


def max_step(objective: Objective) -> float:
    """The full length of a trial: the space's fixed ``epochs``/``steps`` value, else the
    upper bound of such a parameter, else 100 (used for ASHA rungs and the learned stopper)."""
    for name in ("epochs", "steps", "max_steps", "max_epochs"):
        v = objective.space.get(name)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v) - 1 if name.endswith("epochs") else float(v)
        if isinstance(v, dict) and "integer" in v:
            return float(v["integer"][1])
    return 100.0


# Set by the objective itself (mode, seed), or the agent's business: not searcher options.
_NOT_OPTIONS = {"self", "space", "mode", "seed", "metric", "sampler_factory", "method"}


def searcher_options(cls: type) -> list[str]:
    """The options a searcher class takes in an objective (``{botorch: {n_initial: 8}}``):
    its constructor's keywords, through ``**kwargs`` to its bases', less those the objective
    sets itself."""
    import inspect

    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.name not in _NOT_OPTIONS and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return sorted(names)


def make_searcher(objective: Objective, space: SearchSpace) -> Searcher:
    """The objective's searcher, on ``space``. Cheap (nothing is fitted before the first
    :meth:`~assay.policies.Searcher.suggest`), so the objective builds one when it is
    declared and a bad option fails the declaration.

    Raises:
        UserInputError: naming the searcher and the option (with the closest known one).
    """
    import difflib

    from .. import policies as p

    spec = dict(objective.searcher_spec)
    name = spec.pop("name")
    cls: Any = {"botorch": p.BoTorchSearcher, "tpe": p.TPESearcher, "cmaes": p.CMAESSearcher,
                "random": p.RandomSearcher, "sobol": p.SobolSearcher,
                "grid": p.GridSearcher}[name]
    known = searcher_options(cls)
    for key in spec:
        if key in ("mode", "seed"):
            raise UserInputError(f"searcher {name}: {key!r} is not a searcher option",
                                 hint=f"set {key} at the objective's top level ({key}: ...)")
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            raise UserInputError(
                f"searcher {name}: unknown option {key!r}",
                hint=(f"did you mean {close[0]!r}? " if close else "")
                + (f"{name} takes: {', '.join(known)}" if known
                   else f"{name} takes no options: searcher: {name}"))
    try:
        return cls(space, mode=objective.mode, seed=objective.seed, **spec)  # type: ignore[no-any-return]
    except UserInputError as e:
        raise UserInputError(f"searcher {name}: {e.message}",
                             hint=e.hint or "check the searcher's options in the objective") \
            from None
    except (TypeError, ValueError) as e:
        raise UserInputError(f"searcher {name}: bad options ({e})",
                             hint="check the searcher's options in the objective") from None


def make_stopper(objective: Objective) -> EarlyStopper | None:
    from .. import policies as p

    specs = objective.stopper_specs
    if not specs:
        return None
    top = max_step(objective)
    built: list[EarlyStopper] = []
    for spec in specs:
        opts = dict(spec)
        name = opts.pop("name")
        mode = objective.mode
        try:
            if name == "learned":
                predictor = p.FailurePredictor.pretrained()
                opts.pop("refit_every", None)  # the agent's business: see refit_every()
                built.append(p.LearnedStopper(predictor, mode=mode, max_step=top, **opts))
            elif name == "asha":
                built.append(p.ASHAStopper(opts.pop("max_step", top), mode=mode, **opts))
            elif name == "hyperband":
                built.append(p.HyperbandStopper(opts.pop("max_step", top), mode=mode, **opts))
            elif name == "median":
                built.append(p.MedianStopper(mode=mode, **opts))
            elif name == "nan":
                built.append(p.NonFiniteStopper(mode=mode, **opts))
            elif name == "divergence":
                built.append(p.DivergenceStopper(mode=mode, **opts))
            elif name == "threshold":
                built.append(p.ThresholdStopper(opts.pop("thresholds"), mode=mode, **opts))
        except (TypeError, KeyError) as e:
            raise UserInputError(f"stopper {name}: bad options ({e})",
                                 hint="check the stopper's options in the objective") from None
    if not any(isinstance(s, p.NonFiniteStopper) for s in built):
        built.insert(0, p.NonFiniteStopper(mode=objective.mode))  # a NaN curve is always hopeless
    return built[0] if len(built) == 1 else p.AnyOf(*built)


def refit_every(objective: Objective) -> int:
    """Finished trials between refits of the learned stopper's predictor: the ``learned``
    stopper's ``refit_every`` option, else :data:`~.refit.DEFAULT_REFIT_EVERY`; 0 = never."""
    from .refit import DEFAULT_REFIT_EVERY

    for spec in objective.stopper_specs:
        if spec["name"] == "learned":
            n = spec.get("refit_every", DEFAULT_REFIT_EVERY)
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise UserInputError(f"stopper learned: refit_every must be an int >= 0, got {n!r}",
                                     hint="e.g. {learned: {refit_every: 8}}; 0 turns it off")
            return n
    return 0
