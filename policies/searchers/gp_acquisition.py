"""The model-based step of :class:`~assay.policies.searchers.gp.BoTorchSearcher`: fit,
build the acquisition function, optimise a batch, round it, and explain each candidate."""

from __future__ import annotations

import functools
import math
import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .._history import Collected
from ..base import Mode
from ..records import Suggestion, TrialResult

if TYPE_CHECKING:
    from ._gp import Unwarp
    from .gp import BoTorchSearcher

class _NumericalTrouble(ArithmeticError):
    """The model gave non-finite candidates or predictions without raising."""


# Errors that mean "the model could not be built or optimised this time", not a bug: the
# searcher then falls back to space-filling points and says so in the explanation. Beyond
# the fitting errors, numerical trouble in the acquisition optimisation (NaN gradients)
# and in linear algebra (a failed Cholesky or eigendecomposition) counts too.
_MODEL_ERRORS: tuple[type[BaseException], ...] = ()


def _model_errors() -> tuple[type[BaseException], ...]:
    global _MODEL_ERRORS
    if not _MODEL_ERRORS:
        import torch
        from botorch.exceptions.errors import (
            InputDataError,
            ModelFittingError,
            OptimizationGradientError,
        )
        from linear_operator.utils.errors import NanError, NotPSDError

        _MODEL_ERRORS = (ModelFittingError, NotPSDError, NanError, OptimizationGradientError,
                         InputDataError, torch.linalg.LinAlgError, np.linalg.LinAlgError,
                         FloatingPointError, OverflowError, _NumericalTrouble)
    return _MODEL_ERRORS


def propose(
    s: BoTorchSearcher,
    history: list[TrialResult],
    data: Collected,
    n: int,
    seen: set[str],
) -> list[Suggestion]:
    """Fit the GP and return ``n`` explained suggestions (see the searcher's docs)."""
    import torch

    X, Y, facts = s._training_set(data)
    seed = int(np.random.SeedSequence([s.seed, len(history)]).generate_state(1)[0] % 2**31)
    from linear_operator.utils.warnings import NumericalWarning

    with torch.random.fork_rng(), warnings.catch_warnings():
        # Jitter added to a nearly singular covariance (close or repeated points) is
        # routine, not news for whoever reads the agent's log.
        warnings.simplefilter("ignore", NumericalWarning)
        torch.manual_seed(seed)
        tried = set(seen)
        try:
            cand, model, acq, unwarp, timings = _optimise(s, X, Y, data, n, seed)
            if not np.all(np.isfinite(cand)):
                raise _NumericalTrouble("the acquisition optimum is not finite")
            rounded = s.encoder.round(cand)
            return _explain(s, history, data, rounded, model, acq, unwarp, seen,
                            {**facts, **timings})
        except _model_errors() as err:
            seen.clear()
            seen.update(tried)  # forget what the failed attempt marked as suggested
            return s._design(history, n, seen, f"{s.initial_design} fallback (model failed)",
                            error=f"{type(err).__name__}: {err}"[:300], **facts)


def _optimise(
    s: BoTorchSearcher, X: np.ndarray, Y: np.ndarray, data: Collected, n: int, seed: int
) -> tuple[np.ndarray, Any, Any, Unwarp, dict[str, Any]]:
    import torch
    from botorch.acquisition.analytic import LogExpectedImprovement
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.acquisition.multi_objective.logei import (
        qLogNoisyExpectedHypervolumeImprovement,
    )
    from botorch.acquisition.multi_objective.objective import IdentityMCMultiOutputObjective
    from botorch.acquisition.objective import GenericMCObjective
    from botorch.optim import optimize_acqf
    from botorch.sampling import SobolQMCNormalSampler

    from ._gp import fit_model, warp_outcomes

    k = len(s.objectives)
    tX = torch.as_tensor(X, dtype=torch.float64)
    Yw, unwarp = warp_outcomes(Y, k)
    tY = torch.as_tensor(Yw, dtype=torch.float64)
    t0 = time.perf_counter()
    model, fit_facts = fit_model(tX, tY, s._hyper, s.fit_maxiter, max(10, s.fit_maxiter // 3),
                                 timeout_s=5.0, kernel=s.kernel, noise_floor=s.noise_floor)
    s._remember_fit(model)
    pending = s.encoder.encode_many(data.pending)
    tP = torch.as_tensor(pending, dtype=torch.float64) if len(pending) else None
    sampler = SobolQMCNormalSampler(torch.Size([s.mc_samples]), seed=seed)
    cons: list[Any] | None = [
        functools.partial(_slack, column=k + i, constraint=c) for i, c in enumerate(s.constraints)
    ] or None
    acq: Any
    single = k == 1 and n == 1 and tP is None and not cons
    if single:
        # One candidate, nothing pending, no constraints: analytic LogEI against the best
        # observation (deterministic, no Monte-Carlo error near convergence).
        acq = LogExpectedImprovement(model, best_f=tY[:, 0].max())
    elif k == 1:
        objective = GenericMCObjective(_first_output) if cons else None
        acq = qLogNoisyExpectedImprovement(
            model, X_baseline=tX, sampler=sampler, objective=objective, X_pending=tP,
            constraints=cons, prune_baseline=True, cache_root=True,
        )
    else:
        ref = torch.as_tensor(s._ref_point_max(data), dtype=torch.float64)
        mo_objective = IdentityMCMultiOutputObjective(outcomes=list(range(k))) if cons else None
        acq = qLogNoisyExpectedHypervolumeImprovement(
            model, ref_point=ref, X_baseline=tX, sampler=sampler, objective=mo_objective,
            constraints=cons, X_pending=tP, prune_baseline=True, cache_pending=True,
        )
    d = s.encoder.dim
    bounds = torch.stack([torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)])
    t1 = time.perf_counter()
    if single:
        # Optuna-style: local L-BFGS-B searches from the best of many Sobol points, from
        # points drawn with probability ~ exp(log acquisition), and from the incumbent.
        starts = _single_starts(acq, tX, tY, d, seed, max(s.raw_samples, _Q1_RAW_SAMPLES),
                                max(s.num_restarts, _Q1_RESTARTS))
        cand, _ = optimize_acqf(
            acq, bounds=bounds, q=1, num_restarts=len(starts), batch_initial_conditions=starts,
            options={"maxiter": max(s.optimize_maxiter, _Q1_MAXITER)},
            retry_on_optimization_warning=False,
        )
    else:
        cand, _ = optimize_acqf(
            acq, bounds=bounds, q=n, num_restarts=s.num_restarts, raw_samples=s.raw_samples,
            options={"maxiter": s.optimize_maxiter, "sample_around_best": True, "seed": seed},
            sequential=k > 1, retry_on_optimization_warning=False,
        )
    timings = {**fit_facts, "acquisition_seconds": round(time.perf_counter() - t1, 4),
               "model_seconds": round(t1 - t0, 4)}
    return cand.detach().numpy(), model, acq, unwarp, timings


# Acquisition optimisation for a single candidate (sequential search): the analytic
# acquisition is cheap, so it is scored on many Sobol points and optimised from more starts
# for longer than the Monte-Carlo batch acquisition. User settings above these win.
_Q1_RAW_SAMPLES = 2048
_Q1_RESTARTS = 10
_Q1_MAXITER = 200


def _single_starts(
    acq: Any, tX: Any, tY: Any, d: int, seed: int, raw_samples: int, restarts: int
) -> Any:
    """Starting points (``restarts x 1 x d``) for optimising a q=1 acquisition: the best
    of ``raw_samples`` scrambled Sobol points, others drawn from them with probability
    proportional to the acquisition (BoTorch's Boltzmann sampling at a temperature that
    makes the weights ``exp(log acquisition)``), and the best observation."""
    import torch
    from botorch.optim.initializers import initialize_q_batch
    from torch.quasirandom import SobolEngine

    raw = SobolEngine(d, scramble=True, seed=seed).draw(raw_samples).to(torch.float64)
    with torch.no_grad():
        f = acq(raw.unsqueeze(1))
    finite = torch.isfinite(f)
    f = torch.where(finite, f, f[finite].min() - 50.0 if finite.any() else torch.zeros_like(f))
    eta = float(f.std()) if float(f.std()) > 0 else 1.0  # eta * standardised f = f - mean(f)
    picked, _ = initialize_q_batch(raw.unsqueeze(1), f, n=max(1, restarts - 1), eta=eta)
    best = tX[int(torch.argmax(tY[:, 0]))].reshape(1, 1, d)
    return torch.cat([picked, best], 0)


def _first_output(Z: Any, X: Any = None) -> Any:
    return Z[..., 0]


def _slack(Z: Any, column: int, constraint: Any) -> Any:
    """BoTorch's constraint convention: negative when ``constraint`` holds."""
    return constraint.slack(Z[..., column])


def _explain(
    s: BoTorchSearcher,
    history: list[TrialResult],
    data: Collected,
    rounded: np.ndarray,
    model: Any,
    acq: Any,
    unwarp: Unwarp,
    seen: set[str],
    facts: dict[str, Any],
) -> list[Suggestion]:
    import torch
    from botorch.acquisition.analytic import LogExpectedImprovement

    k = len(s.objectives)
    multi = k > 1
    wanted = len(rounded)
    base_method = ("botorch qLogNEHVI" if multi else "botorch LogEI"
                   if isinstance(acq, LogExpectedImprovement) else "botorch qLogNEI")
    configs: list[dict[str, Any]] = []
    methods: list[str] = []
    kept_rows: list[np.ndarray] = []
    for row in rounded:
        c = s.encoder.decode(row)
        key = s.space.key(c)
        if key not in seen:
            seen.add(key)
            configs.append(c)
            methods.append(base_method)
            kept_rows.append(row)
    missing = len(rounded) - len(configs)
    if missing:  # rounding (or convergence) put candidates on tried configs
        for row in _next_best(s, acq, rounded, seen, missing, len(history)):
            configs.append(s.encoder.decode(row))
            methods.append(f"{base_method} (next best: the optimum repeats a tried config)")
            kept_rows.append(row)
    keep = list(range(len(configs)))
    tR = torch.as_tensor(np.asarray(kept_rows).reshape(len(configs), -1), dtype=torch.float64)
    with torch.no_grad():
        post = model.posterior(tR) if keep else None
        mean = post.mean.numpy() if post is not None else np.zeros((0, 1))
        std = post.variance.clamp_min(0).sqrt().numpy() if post is not None else mean
        point_acq = acq(tR.unsqueeze(1)).numpy() if keep else []
        batch_acq = (
            float(acq(tR.unsqueeze(0)).item()) if keep and (not multi or len(keep) <= 8) else None
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
        raise _NumericalTrouble("the model's predictions are not finite")
    # Objectives in user units: the posterior median and the central 68% interval (the
    # model's mean -/+ one sd, through the inverse warp: monotone, so quantiles map to
    # quantiles), clipped to the observed values where the warp has no data to invert.
    med = mean[:, :k].copy()
    low, high = mean[:, :k] - std[:, :k], mean[:, :k] + std[:, :k]
    clipped = np.zeros((len(mean), 3), dtype=bool)
    if len(mean):
        clipped = np.column_stack([unwarp.beyond(v[:, 0]) for v in (low, med, high)])
        for v in (low, med, high):
            v[:, 0] = unwarp(v[:, 0])
    incumbent = _incumbent(s, data)
    names = [name or "objective" for name, _ in s.objectives]
    signs = [1.0 if m is Mode.MAX else -1.0 for _, m in s.objectives]
    out: list[Suggestion] = []
    for row, i in enumerate(keep):
        pred_mean = {nm: float(med[row, j] * signs[j]) for j, nm in enumerate(names)}
        pred_std = {nm: float((high[row, j] - low[row, j]) / 2) for j, nm in enumerate(names)}
        interval = {nm: sorted([float(low[row, j] * signs[j]), float(high[row, j] * signs[j])])
                    for j, nm in enumerate(names)}
        # Which of the user-unit (lower, median, upper) sit at an observed extreme because
        # the model puts them past every observation (only a warped objective clips).
        c_low, c_med, c_high = clipped[row] if signs[0] > 0 else clipped[row, ::-1]
        at_bound = [q for q, c in (("lower", c_low), ("median", c_med), ("upper", c_high)) if c]
        expl: dict[str, Any] = {
            "method": methods[i],
            "acquisition_value": float(point_acq[row]),
            "batch_acquisition_value": batch_acq,
            "predicted_mean": pred_mean if multi else pred_mean[names[0]],
            "predicted_std": pred_std if multi else pred_std[names[0]],
            "predicted_interval": interval if multi else interval[names[0]],
            "predicted_at_observed_bound": at_bound,
            "incumbent": incumbent,
            "batch_position": row,
            "n_pending": len(data.pending),
            **facts,
        }
        if s.constraints:
            p_feas = 1.0
            cons: dict[str, Any] = {}
            for j, oc in enumerate(s.constraints):
                mu, sd = float(mean[row, k + j]), max(float(std[row, j + k]), 1e-12)
                p = 0.5 * (1 + math.erf((oc.bound - mu) / sd / math.sqrt(2)))
                p = p if oc.op == "<=" else 1 - p
                p_feas *= p
                cons[str(oc)] = {"predicted_mean": mu, "predicted_std": sd, "probability": p}
            expl["constraints"] = cons
            expl["probability_feasible"] = p_feas
        out.append(Suggestion(configs[i], expl))
    if len(out) < wanted:  # a small discrete space with (nearly) everything tried
        out.extend(s._design(history, wanted - len(out), seen,
                             f"{s.initial_design} fill (no untried config scores)"))
    return out


def _next_best(
    s: BoTorchSearcher, acq: Any, rounded: np.ndarray, seen: set[str], m: int, salt: int
) -> list[np.ndarray]:
    """The ``m`` untried configs with the highest acquisition value among perturbations of
    the optimised batch and uniform draws (marks them seen); random draws if none score."""
    import torch

    d = s.encoder.dim
    rng = np.random.default_rng([s.seed, salt, 11])
    local = rounded[rng.integers(len(rounded), size=256)] + rng.normal(0.0, 0.05, (256, d))
    cand = s.encoder.round(np.clip(np.vstack([local, rng.random((256, d))]), 0.0, 1.0))
    with torch.no_grad():
        values = acq(torch.as_tensor(cand, dtype=torch.float64).unsqueeze(1)).numpy()
    out: list[np.ndarray] = []
    for i in np.argsort(-values, kind="stable"):
        key = s.space.key(s.encoder.decode(cand[i]))
        if key in seen:
            continue
        seen.add(key)
        out.append(cand[i])
        if len(out) == m:
            break
    return out


def _incumbent(s: BoTorchSearcher, data: Collected) -> dict[str, Any] | None:
    if not data.observed:
        return None
    k = len(s.objectives)
    values = np.asarray([o.values for o in data.observed], dtype=float)
    feasible = s._feasible(values)
    if k > 1:
        front = s.pareto_front([o.trial for o in data.observed])
        ref = s._ref_point_max(data)
        signs = np.array([1.0 if m is Mode.MAX else -1.0 for _, m in s.objectives])
        Y = np.asarray([[t.metric(nm) for nm, _ in s.objectives] for t in front]) * signs
        from .gp import hypervolume

        return {"pareto_size": len(front), "hypervolume": hypervolume(Y, ref) if len(Y) else 0.0,
                "ref_point": (ref * signs).tolist(), "feasible_observations": int(feasible.sum())}
    if not feasible.any():
        return {"feasible_observations": 0}
    sign = 1.0 if s.objectives[0][1] is Mode.MAX else -1.0
    scores = np.where(feasible, values[:, 0] * sign, -np.inf)
    best = data.observed[int(np.argmax(scores))]
    return {"trial_id": best.trial.trial_id, "value": best.values[0], "config": best.config}
