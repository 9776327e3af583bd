"""Gaussian-process plumbing for :class:`~assay.policies.searchers.gp.BoTorchSearcher`:
outcome constraints, training-set selection, fitting with warm-started hyperparameters."""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import UserInputError

_CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z_][\w./-]*)\s*(<=|>=)\s*([-+0-9.eE]+|inf|-inf)\s*$")


@dataclass(frozen=True)
class OutcomeConstraint:
    """``metric <= bound`` or ``metric >= bound`` on a trial's final metrics."""

    metric: str
    op: str
    bound: float

    def slack(self, value: float) -> float:
        """Negative when satisfied (BoTorch's convention)."""
        return value - self.bound if self.op == "<=" else self.bound - value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraints(
    constraints: Sequence[str] | Mapping[str, Any] | None,
) -> list[OutcomeConstraint]:
    """Parse ``["memory_gb <= 8"]`` or ``{"memory_gb": ("<=", 8)}`` / ``{"<=": 8}``.

    Raises:
        UserInputError: for anything else.
    """
    if not constraints:
        return []
    out: list[OutcomeConstraint] = []
    items: list[tuple[str, str, Any]] = []
    if isinstance(constraints, Mapping):
        for name, spec in constraints.items():
            if isinstance(spec, Mapping) and len(spec) == 1:
                op, bound = next(iter(spec.items()))
            elif isinstance(spec, list | tuple) and len(spec) == 2:
                op, bound = spec
            else:
                raise UserInputError(
                    f"constraint on {name!r} must be ('<=', bound) or {{'<=': bound}}, got {spec!r}"
                )
            items.append((str(name), str(op), bound))
    elif isinstance(constraints, str):
        raise UserInputError("constraints must be a list of strings like 'memory_gb <= 8'")
    else:
        for text in constraints:
            m = _CONSTRAINT_RE.match(str(text))
            if not m:
                raise UserInputError(
                    f"cannot parse constraint {text!r}", hint="write 'metric <= bound' or '>='"
                )
            items.append((m.group(1), m.group(2), m.group(3)))
    for name, op, bound in items:
        if op not in ("<=", ">="):
            raise UserInputError(f"constraint on {name!r}: operator must be '<=' or '>=', got {op!r}")
        try:
            b = float(bound)
        except (TypeError, ValueError):
            raise UserInputError(f"constraint on {name!r}: bound {bound!r} is not a number") from None
        if math.isnan(b):
            raise UserInputError(f"constraint on {name!r}: bound is NaN")
        out.append(OutcomeConstraint(name, op, b))
    return out


@dataclass(frozen=True)
class Unwarp:
    """Maps warped objective values back to raw units (see :func:`warp_outcomes`).

    The warp is fitted on the observed values only, so its inverse is known on their range
    alone: past it (where a steep power may even have no inverse, beyond an asymptote) the
    raw value is only known to lie beyond the best or worst observation. Values there map
    to that observation; :meth:`beyond` says which ones did.
    """

    inverse: Callable[[np.ndarray], np.ndarray] | None = None
    """Warped -> raw on ``[t_lo, t_hi]``; None: no warp (the identity)."""
    t_lo: float = -math.inf
    t_hi: float = math.inf
    lo: float = -math.inf
    hi: float = math.inf

    def __call__(self, v: Any) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        if self.inverse is None:
            return v
        inside = np.clip(self.inverse(np.clip(v, self.t_lo, self.t_hi)), self.lo, self.hi)
        return np.where(v >= self.t_hi, self.hi, np.where(v <= self.t_lo, self.lo, inside))

    def beyond(self, v: Any) -> np.ndarray:
        """Where ``v`` lies past the observed (warped) values, so :meth:`__call__` clipped it."""
        v = np.asarray(v, dtype=float)
        return (v < self.t_lo) | (v > self.t_hi)


def warp_outcomes(Y: np.ndarray, k: int) -> tuple[np.ndarray, Unwarp]:
    """Yeo-Johnson-transform the objective of a single-objective search (to maximise).

    The column is z-scored, then power-transformed with the maximum-likelihood exponent
    (scikit-learn's ``PowerTransformer``, as HEBO does). This straightens the long tail of
    poor values that functions like Hartmann6 and Branin have, so the GP spends less of its
    flexibility on them and models the region near the optimum more finely. The transform
    is monotone, so the best observation stays best. Constraint columns (raw units,
    compared with bounds) and several objectives (the hypervolume reference point is in
    raw units) are left alone, as is a column with fewer than three distinct values.

    Values so far apart that z-scoring cannot represent them (a diverged loss of 1e300
    next to losses near 1: the squares overflow, or the ordinary values all round to the
    same z-score) are first compressed with ``asinh((y - median) / scale)`` (``scale``:
    the median distance from the median), which is linear near the median and
    logarithmic far from it, so the ordinary values stay distinct and the outlier ends up
    a few dozen units away instead of 300 orders of magnitude.

    Returns:
        The transformed outcomes and an :class:`Unwarp` mapping transformed objective
        values back to raw units.
    """
    from sklearn.preprocessing import PowerTransformer

    out = np.array(Y, dtype=float, copy=True)
    col = out[:, 0] if out.ndim == 2 and out.shape[1] else np.zeros(0)
    n_distinct = len(np.unique(col))
    if k != 1 or n_distinct < 3 or not np.all(np.isfinite(col)):
        return out, Unwarp()
    pre_inverse: Callable[[np.ndarray], np.ndarray] = _identity
    base = col
    with np.errstate(all="ignore"):
        mu, sd = float(col.mean()), float(col.std())
        z = (col - mu) / sd
    if not (math.isfinite(sd) and sd > 0 and np.all(np.isfinite(z))
            and len(np.unique(z)) == n_distinct):
        base, pre_inverse = _compress(col)
        mu, sd = float(base.mean()), float(base.std())
        z = (base - mu) / sd
    pt = PowerTransformer(method="yeo-johnson", standardize=False)
    try:
        with np.errstate(all="ignore"):
            t = pt.fit_transform(z.reshape(-1, 1))[:, 0]
        fitted = bool(np.all(np.isfinite(t)) and np.ptp(t) > 0
                      and np.isfinite(pt.lambdas_).all())
    except (ValueError, FloatingPointError, OverflowError):
        fitted = False
    if not fitted:
        if base is col:
            return out, Unwarp()
        t = z  # compressed and z-scored, without the power

    def inverse(v: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "inverse-transformed data are NaN"
            w = pt.inverse_transform(v.reshape(-1, 1))[:, 0] if fitted else v
            return pre_inverse(mu + sd * w)

    lo, hi = float(col.min()), float(col.max())
    out[:, 0] = t  # col is a view of this column: read it first
    return out, Unwarp(inverse, float(t.min()), float(t.max()), lo, hi)


def _compress(y: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """``asinh((y - m) / s)`` (``m`` a median observation, ``s`` the median of the positive
    distances from it) without overflow, and its inverse."""
    med = float(np.quantile(y, 0.5, method="lower"))  # an observation: no rounding
    d = y / 2 - med / 2  # halves: the difference of two huge values must not overflow
    s = float(np.quantile(np.abs(d[d != 0]), 0.5, method="lower"))
    far = np.abs(d) > 1e8 * s  # asinh(x) = sign(x) log(2|x|) to 1e-17 relative, no overflow
    with np.errstate(all="ignore"):
        near = np.arcsinh(np.where(far, 0.0, d) / s)
        logs = np.sign(d) * (np.log(np.abs(d)) - math.log(s) + math.log(2.0))
    u = np.where(far, logs, near)

    def inverse(v: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return 2.0 * (med / 2 + s * np.sinh(v))  # inf past the float range: clipped later

    return u, inverse


def _identity(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=float)


def select_training_set(
    X: np.ndarray, score: np.ndarray, limit: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices of at most ``limit`` rows: the best quarter by ``score`` (higher is better),
    then a greedy max-min (space-filling) subset of the rest.

    Keeping the best points keeps the model accurate where the acquisition looks; the
    space-filling rest keeps the uncertainty honest elsewhere, at a bounded O(limit^3) fit.
    """
    n = X.shape[0]
    if n <= limit:
        return np.arange(n)
    n_top = max(1, limit // 4)
    order = np.argsort(-score, kind="stable")
    chosen = list(order[:n_top])
    rest = np.setdiff1d(np.arange(n), chosen)
    dist = np.min(
        ((X[rest, None, :] - X[None, chosen, :]) ** 2).sum(-1), axis=1
    )
    # Break ties randomly but reproducibly.
    dist = dist + rng.random(dist.shape) * 1e-12
    for _ in range(limit - n_top):
        j = int(np.argmax(dist))
        pick = rest[j]
        chosen.append(pick)
        dist = np.minimum(dist, ((X[rest] - X[pick]) ** 2).sum(-1))
        dist[j] = -1.0
    return np.asarray(sorted(chosen))


_SKIP_PREFIXES = ("outcome_transform", "input_transform")


def hyper_state(model: Any) -> dict[str, Any]:
    """The model's hyperparameters as JSON-friendly lists (transforms excluded)."""
    return {
        k: v.detach().cpu().tolist()
        for k, v in model.named_parameters()
        if not k.startswith(_SKIP_PREFIXES)
    }


def load_hyper_state(model: Any, state: Mapping[str, Any] | None) -> bool:
    """Load hyperparameters saved by :func:`hyper_state` when every shape matches."""
    import torch

    if not state:
        return False
    current = model.state_dict()
    update = {}
    for k, v in state.items():
        if k not in current:
            return False
        t = torch.as_tensor(v, dtype=current[k].dtype)
        if t.shape != current[k].shape:
            return False
        update[k] = t
    params = dict(model.named_parameters())
    missing = [k for k in params if not k.startswith(_SKIP_PREFIXES) and k not in update]
    if missing:
        return False
    model.load_state_dict(update, strict=False)
    return True


def _make_model(X: Any, Y: Any, kernel: str, noise_floor: float) -> Any:
    """A ``SingleTaskGP`` with independent outputs.

    ``kernel="matern"``: Matern-5/2 with ARD lengthscales under a LogNormal(0, 1) prior
    (median lengthscale 1 on the unit cube), a Gamma(2, 1) output scale and a noise prior
    that favours near-deterministic objectives, in the spirit of Optuna's GP sampler; it
    found the global basin more often than BoTorch's defaults in our Hartmann6 runs.
    ``kernel="botorch"``: BoTorch's default (RBF with a dimension-scaled prior).
    """
    import torch
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.constraints import GreaterThan
    from gpytorch.likelihoods import GaussianLikelihood
    from gpytorch.priors import GammaPrior, LogNormalPrior

    m = Y.shape[-1]
    batch = torch.Size([m]) if m > 1 else torch.Size([])
    if kernel == "botorch":
        return SingleTaskGP(X, Y, outcome_transform=Standardize(m=m))
    from gpytorch.kernels import MaternKernel, ScaleKernel

    covar = ScaleKernel(
        MaternKernel(nu=2.5, ard_num_dims=X.shape[-1], batch_shape=batch,
                     lengthscale_prior=LogNormalPrior(0.0, 1.0)),
        batch_shape=batch, outputscale_prior=GammaPrior(2.0, 1.0),
    )
    likelihood = GaussianLikelihood(
        noise_prior=GammaPrior(1.1, 30.0),
        noise_constraint=GreaterThan(noise_floor, transform=None,
                                     initial_value=max(2 * noise_floor, 1e-3)),
        batch_shape=batch,
    )
    return SingleTaskGP(X, Y, likelihood=likelihood, covar_module=covar,
                        outcome_transform=Standardize(m=m))


def fit_model(
    X: Any, Y: Any, warm: Mapping[str, Any] | None, maxiter: int, warm_maxiter: int,
    timeout_s: float, kernel: str = "matern", noise_floor: float = 1e-6,
) -> tuple[Any, dict[str, Any]]:
    """Fit a ``SingleTaskGP`` (independent outputs) with a capped L-BFGS-B.

    With ``warm`` hyperparameters from the previous fit, optimisation starts from them
    and runs fewer iterations; a failed warm fit falls back to a cold one.

    Returns:
        The model in eval mode and facts about the fit.
    """
    from botorch.exceptions.errors import ModelFittingError
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    t0 = time.perf_counter()
    model = _make_model(X, Y, kernel, noise_floor)
    warmed = load_hyper_state(model, warm)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    def kwargs(iters: int) -> dict[str, Any]:
        out: dict[str, Any] = {"options": {"maxiter": iters}}
        if Y.shape[-1] == 1:  # batched multi-output fitting warns (and so fails) on timeouts
            out["timeout_sec"] = timeout_s
        return out

    try:
        fit_gpytorch_mll(mll, optimizer_kwargs=kwargs(warm_maxiter if warmed else maxiter),
                         max_attempts=2)
    except ModelFittingError:
        if not warmed:
            raise
        model = _make_model(X, Y, kernel, noise_floor)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        fit_gpytorch_mll(mll, optimizer_kwargs=kwargs(maxiter))
        warmed = False
    model.eval()
    return model, {"fit_seconds": round(time.perf_counter() - t0, 4), "warm_start": warmed}
