"""The failure predictor: from a partial curve, the final value with an interval and the
probability that the trial ends worse than the current top-k.

Gradient-boosted trees (scikit-learn's histogram GBMs) on the scale-free features of
:mod:`.features`: three quantile regressors give the median and a 10-90% interval of the
final value; a classifier, isotonically calibrated on sweep-grouped folds, gives the
probability of ending worse than the k-th best finished trial.

The predictor never starts cold: :meth:`FailurePredictor.pretrained` fits on examples
from simulated sweeps that ship with assay (``_pretrained/sim_examples.npz``, written by
``python -m assay.simulations.pretrain``), and :meth:`FailurePredictor.partial_fit` adds a
project's finished sweeps to them, weighted up, as they accumulate.
"""

from __future__ import annotations

import copy
import functools
import io
import math
import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import UserInputError
from ..base import Mode
from ..records import TrialResult
from .features import FEATURES, sweep_examples

__all__ = ["PRETRAINED_FILE", "PRETRAINED_MODELS", "FailurePredictor", "Prediction"]

PRETRAINED_FILE = "sim_examples.npz"
PRETRAINED_MODELS = "sim_models.pkl.z"
_QUANTILES = (0.1, 0.5, 0.9)
_MIN_ROWS = 40


@dataclass(frozen=True)
class Prediction:
    """Predictions for rows of features (arrays, one entry per row), relative units."""

    lower: np.ndarray
    median: np.ndarray
    upper: np.ndarray
    probability_worse: np.ndarray  # NaN where there is no top-k reference yet


def _as_sweeps(results: Sequence[Any]) -> list[list[TrialResult]]:
    if isinstance(results, str | bytes) or not isinstance(results, Sequence):
        raise UserInputError("pass finished results as a list (or a list of sweeps)")
    if all(isinstance(r, TrialResult) for r in results):
        return [list(results)] if results else []
    sweeps = []
    for sweep in results:
        if isinstance(sweep, str | bytes) or not isinstance(sweep, Sequence) or not all(
            isinstance(r, TrialResult) for r in sweep
        ):
            raise UserInputError(
                "results must be TrialResults, or a list of sweeps of TrialResults",
                hint="group trials of different searches into separate lists",
            )
        sweeps.append(list(sweep))
    return sweeps


def _max_step(sweep: list[TrialResult], max_step: float | None) -> float:
    if max_step is not None:
        return float(max_step)
    steps = [t.curve[-1][0] for t in sweep if t.curve]
    return float(max(steps)) if steps else 1.0


class FailurePredictor:
    """Predicts a running trial's final value and its chance of missing the top-k.

    Args:
        seed: Seed of the boosting and of example sampling.
        max_iter: Boosting rounds per model.
        project_weight: Weight of a project's own examples relative to simulated ones
            in :meth:`partial_fit`.
    """

    def __init__(self, *, seed: int = 0, max_iter: int = 120, project_weight: float = 3.0) -> None:
        self.seed = seed
        self.max_iter = max_iter
        self.project_weight = project_weight
        self._X = np.zeros((0, len(FEATURES)))
        self._rel = np.zeros(0)
        self._fail = np.zeros(0)
        self._groups = np.zeros(0, dtype=int)
        self._weights = np.zeros(0)
        self._regressors: list[Any] = []
        self._classifier: Any = None
        self.source = "unfitted"

    # --- data -------------------------------------------------------------------------
    @property
    def n_examples(self) -> int:
        """Training examples the current models were fitted on."""
        return int(self._X.shape[0])

    @property
    def is_fitted(self) -> bool:
        return bool(self._regressors)

    def _examples(
        self, results: Sequence[Any], mode: Mode | str, max_step: float | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        mode = Mode.parse(mode)
        rng = np.random.default_rng([self.seed, self.n_examples])
        parts = []
        base = int(self._groups.max()) + 1 if self._groups.size else 0
        for g, sweep in enumerate(_as_sweeps(results)):
            X, rel, fail = sweep_examples(sweep, mode, _max_step(sweep, max_step), rng)
            parts.append((X, rel, fail, np.full(len(X), base + g)))
        if not parts:
            return np.zeros((0, len(FEATURES))), np.zeros(0), np.zeros(0), np.zeros(0, dtype=int)
        return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]

    def add_examples(
        self, X: np.ndarray, rel: np.ndarray, fail: np.ndarray, groups: np.ndarray,
        weight: float = 1.0,
    ) -> None:
        """Append raw examples (as made by :func:`.features.sweep_examples`)."""
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != len(FEATURES):
            raise UserInputError(f"examples need {len(FEATURES)} feature columns")
        self._X = np.vstack([self._X, X])
        self._rel = np.concatenate([self._rel, rel])
        self._fail = np.concatenate([self._fail, fail])
        self._groups = np.concatenate([self._groups, np.asarray(groups, dtype=int)])
        self._weights = np.concatenate([self._weights, np.full(len(X), float(weight))])

    # --- fitting ----------------------------------------------------------------------
    def fit(
        self, results: Sequence[Any], *, mode: Mode | str = "min", max_step: float | None = None
    ) -> FailurePredictor:
        """Fit from scratch on finished trials.

        Args:
            results: Finished trials of one sweep (in completion order), or a list of
                sweeps. Completed trials teach the final values; diverged ones count as
                failures; crashed ones are left out.
            mode: Direction of the curves' metric.
            max_step: The full budget of a trial; default: the longest curve per sweep.

        Returns:
            ``self``.

        Raises:
            UserInputError: with too few usable examples to fit.
        """
        self._X = np.zeros((0, len(FEATURES)))
        self._rel, self._fail, self._weights = np.zeros(0), np.zeros(0), np.zeros(0)
        self._groups = np.zeros(0, dtype=int)
        self.add_examples(*self._examples(results, mode, max_step))
        self._refit()
        self.source = f"fitted on {self.n_examples} examples"
        return self

    def partial_fit(
        self, results: Sequence[Any], *, mode: Mode | str = "min", max_step: float | None = None
    ) -> FailurePredictor:
        """Add a project's newly finished sweep(s) to the examples and refit.

        The simulated prior (or earlier examples) stays; the new examples weigh
        ``project_weight`` times as much. Refitting takes a few seconds: call it as runs
        finish, off the agent's critical path.
        """
        X, rel, fail, groups = self._examples(results, mode, max_step)
        if not len(X):
            return self
        self.add_examples(X, rel, fail, groups, weight=self.project_weight)
        self._refit()
        self.source = f"{self.source.split(' +')[0]} + project examples ({self.n_examples} total)"
        return self

    def _refit(self) -> None:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.model_selection import GroupKFold

        reg_rows = np.isfinite(self._rel)
        cls_rows = np.isfinite(self._fail)
        if reg_rows.sum() < _MIN_ROWS or cls_rows.sum() < _MIN_ROWS:
            raise UserInputError(
                f"too few examples to fit the failure predictor ({int(reg_rows.sum())} "
                f"regression, {int(cls_rows.sum())} classification; need {_MIN_ROWS})",
                hint="fit on more finished trials, or start from FailurePredictor.pretrained()",
            )
        common: dict[str, Any] = {
            "max_iter": self.max_iter, "learning_rate": 0.08, "max_leaf_nodes": 24,
            "min_samples_leaf": 40, "l2_regularization": 1.0, "random_state": self.seed,
        }
        X, w = self._X, self._weights
        regressors = []
        for q in _QUANTILES:
            model = HistGradientBoostingRegressor(loss="quantile", quantile=q, **common)
            model.fit(X[reg_rows], self._rel[reg_rows], sample_weight=w[reg_rows])
            regressors.append(model)
        y = self._fail[cls_rows].astype(int)
        if len(np.unique(y)) < 2:
            raise UserInputError("the failure predictor needs both outcomes among its examples")
        groups = self._groups[cls_rows]
        n_splits = min(3, len(np.unique(groups)))
        if n_splits >= 2:
            cv: Any = list(GroupKFold(n_splits=n_splits).split(X[cls_rows], y, groups))
        else:
            cv = 3
        # ensemble=False: one booster on all rows, calibrated on out-of-fold predictions,
        # so a prediction costs one model, not one per fold.
        classifier = CalibratedClassifierCV(
            HistGradientBoostingClassifier(**common), method="isotonic", cv=cv, ensemble=False
        )
        classifier.fit(X[cls_rows], y, sample_weight=w[cls_rows])
        self._regressors, self._classifier = regressors, classifier

    # --- prediction -------------------------------------------------------------------
    def predict(self, features: np.ndarray) -> Prediction:
        """Predictions for rows of features (see :data:`.features.FEATURES`).

        Raises:
            UserInputError: when the predictor is not fitted.
        """
        self._require_fitted()
        X = np.atleast_2d(np.asarray(features, dtype=float))
        qs = self.predict_quantiles(X)
        return Prediction(qs[0], qs[1], qs[2], self.predict_probability(X))

    def predict_probability(self, features: np.ndarray) -> np.ndarray:
        """Only the probability of ending worse than the top-k reference (cheaper)."""
        self._require_fitted()
        X = np.atleast_2d(np.asarray(features, dtype=float))
        p = self._classifier.predict_proba(X)[:, 1]
        return np.where(np.isfinite(X[:, FEATURES.index("z_gap_ref")]), p, np.nan)

    def predict_quantiles(self, features: np.ndarray) -> np.ndarray:
        """The 10%, 50% and 90% quantiles of the relative final value (rows: quantiles)."""
        self._require_fitted()
        X = np.atleast_2d(np.asarray(features, dtype=float))
        return np.sort(np.stack([m.predict(X) for m in self._regressors]), axis=0)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise UserInputError(
                "the failure predictor is not fitted",
                hint="use FailurePredictor.pretrained() or call fit(...) first",
            )

    # --- persistence ------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The fitted predictor (models and examples) as bytes (pickle; trusted use only)."""
        buf = io.BytesIO()
        pickle.dump(self, buf, protocol=pickle.HIGHEST_PROTOCOL)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FailurePredictor:
        """Load :meth:`to_bytes` output. Only load bytes you wrote: this unpickles."""
        obj = pickle.loads(data)
        if not isinstance(obj, cls):
            raise UserInputError("these bytes do not hold a FailurePredictor")
        return obj

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_bytes` to ``path``."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> FailurePredictor:
        """Read a predictor written by :meth:`save`."""
        return cls.from_bytes(Path(path).read_bytes())

    @classmethod
    def pretrained(cls) -> FailurePredictor:
        """A predictor fitted on the simulated sweeps that ship with assay.

        The fit runs once per process (a few seconds) and is cached; each call returns
        an independent copy, so ``partial_fit`` on it never changes another's.
        """
        return copy.deepcopy(_pretrained())

    def __repr__(self) -> str:
        return f"FailurePredictor({self.source})"


def models_to_bytes(predictor: FailurePredictor) -> bytes:
    """The fitted models alone (no examples), tagged with the scikit-learn version."""
    import sklearn

    return zlib.compress(pickle.dumps(
        {"sklearn": sklearn.__version__, "features": FEATURES,
         "regressors": predictor._regressors, "classifier": predictor._classifier},
        protocol=pickle.HIGHEST_PROTOCOL,
    ), 9)


def _load_models(predictor: FailurePredictor, data: bytes) -> bool:
    """Attach shipped models when they match this scikit-learn and feature set."""
    import sklearn

    try:
        payload = pickle.loads(zlib.decompress(data))  # our own file, inside the package
    except Exception:  # noqa: BLE001 - any unreadable file means: refit from the examples
        return False
    if payload.get("sklearn") != sklearn.__version__ or tuple(payload.get("features", ())) != FEATURES:
        return False
    predictor._regressors, predictor._classifier = payload["regressors"], payload["classifier"]
    return True


@functools.lru_cache(maxsize=1)
def _pretrained() -> FailurePredictor:
    base = resources.files("assay.policies").joinpath("_pretrained")
    try:
        with base.joinpath(PRETRAINED_FILE).open("rb") as fh:
            data = np.load(io.BytesIO(fh.read()))
    except FileNotFoundError:
        raise UserInputError(
            f"the pretrained examples ({PRETRAINED_FILE}) are missing from the package",
            hint="regenerate them: python -m assay.simulations.pretrain",
        ) from None
    predictor = FailurePredictor(seed=int(data["seed"]))
    predictor.add_examples(data["X"], data["rel"], data["fail"], data["groups"])
    try:
        models = base.joinpath(PRETRAINED_MODELS).read_bytes()
    except FileNotFoundError:
        models = b""
    # The shipped models load instantly; with another scikit-learn (or none shipped) the
    # same models are refitted from the examples, which takes a few seconds.
    if not (models and _load_models(predictor, models)):
        predictor._refit()
    predictor.source = f"pretrained on {predictor.n_examples} simulated examples"
    return predictor


def relative_to_value(rel: float, center: float, spread: float, mode: Mode) -> float:
    """Undo the feature scaling: a relative prediction back to the metric's units."""
    if not math.isfinite(rel):
        return math.nan
    return (center + rel * spread) * mode.sign()
