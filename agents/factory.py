"""Build an objective's searcher and stoppers from their names (``botorch``, ``asha``, ...)."""

from __future__ import annotations

from typing import Any

from ..errors import UserInputError
from ..policies import EarlyStopper, Searcher, SearchSpace
from .objective import Objective

__all__ = ["make_searcher", "make_stopper", "max_step", "refit_every"]


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


def make_searcher(objective: Objective, space: SearchSpace) -> Searcher:
    from .. import policies as p

    spec = dict(objective.searcher_spec)
    name = spec.pop("name")
    cls: Any = {"botorch": p.BoTorchSearcher, "tpe": p.TPESearcher, "cmaes": p.CMAESSearcher,
                "random": p.RandomSearcher, "sobol": p.SobolSearcher,
                "grid": p.GridSearcher}[name]
    try:
        return cls(space, mode=objective.mode, seed=objective.seed, **spec)  # type: ignore[no-any-return]
    except TypeError as e:
        raise UserInputError(f"searcher {name}: {e}",
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
