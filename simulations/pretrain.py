"""Generate the simulated examples the failure predictor ships with.

    python -m assay.simulations.pretrain            # rewrites policies/_pretrained/sim_*
    python -m assay.simulations.pretrain --check    # regenerates the examples and compares

The examples come from simulated sweeps over many problem instances (seeds from 1000 up,
disjoint from the seeds benchmarks use), of varied length, budget, noise, metric
direction, and focus (random configs, or configs drawn near the optimum as late in a
search). The output is deterministic for a given ``seed``; ``FailurePredictor.pretrained``
fits on it at first use.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..policies.base import Mode
from ..policies.stoppers.features import FEATURES, sweep_examples
from ..policies.stoppers.predictor import (
    PRETRAINED_FILE,
    PRETRAINED_MODELS,
    FailurePredictor,
    models_to_bytes,
)
from .curves import CurveSimulator, simulate_sweep

__all__ = ["fit_models", "main", "pretrain_examples", "write_pretrained"]

_DEFAULT_OUT = Path(__file__).resolve().parent.parent / "policies" / "_pretrained" / PRETRAINED_FILE


def _focused_configs(sim: CurveSimulator, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Configs pulled towards the optimum, as a model-based search proposes later on."""
    best = sim.space.to_unit(sim.best_config)
    out = []
    for _ in range(n):
        pull = rng.uniform(0.3, 0.8)
        u = np.clip(best + (rng.random(len(best)) - best) * (1 - pull), 0, 1)
        out.append(sim.space.from_unit(u))
    return out


def pretrain_examples(
    seed: int = 0, n_problems: int = 160, max_rows: int = 24000
) -> dict[str, np.ndarray]:
    """Examples (features, relative finals, failure labels, sweep groups) from simulations.

    Args:
        seed: Master seed; the output is a deterministic function of the arguments.
        n_problems: Problem instances (one sweep each).
        max_rows: Cap on examples kept (a seeded subsample, whole sweeps kept together).
    """
    rng = np.random.default_rng(seed)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for g in range(n_problems):
        sim = CurveSimulator(
            1000 + seed * 10_000 + g,
            max_steps=int(rng.choice([10, 20, 30, 50])),
            metric=str(rng.choice(["loss", "accuracy"])),
            noise=float(rng.choice([0.005, 0.02, 0.04])),
            crash_rate=0.03,
            # Mostly the default shape mix, sometimes the harder one (more late bloomers
            # and plateaus), so the model knows slow starters can still win.
            shape_weights=(0.55, 0.41, 0.02, 0.02) if rng.random() < 0.7 else (0.4, 0.3, 0.15, 0.15),
        )
        n_trials = int(rng.choice([12, 20, 30, 40]))
        configs = (
            _focused_configs(sim, n_trials, rng) if rng.random() < 0.5
            else [sim.space.sample(rng) for _ in range(n_trials)]
        )
        runs = simulate_sweep(sim, n_trials, seed=g, configs=configs)
        results = [r.to_result() for r in runs]
        X, rel, fail = sweep_examples(results, Mode.parse(sim.mode), sim.max_steps, rng,
                                      points_per_trial=8)
        parts.append((X, rel, fail, np.full(len(X), g)))
    order = rng.permutation(len(parts))
    kept, rows = [], 0
    for i in order:
        if rows >= max_rows:
            break
        kept.append(parts[i])
        rows += len(parts[i][0])
    X, rel, fail, groups = (np.concatenate(p) for p in zip(*kept))
    return {
        "X": X.astype(np.float32), "rel": rel.astype(np.float32),
        "fail": fail.astype(np.float32), "groups": groups.astype(np.int32),
        "seed": np.asarray(seed), "features": np.asarray(FEATURES),
    }


def _to_bytes(data: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **data)  # type: ignore[arg-type]
    return buf.getvalue()


def fit_models(data: dict[str, np.ndarray]) -> FailurePredictor:
    """The predictor fitted on ``data`` (what ``FailurePredictor.pretrained`` would fit)."""
    predictor = FailurePredictor(seed=int(data["seed"]))
    predictor.add_examples(data["X"], data["rel"], data["fail"], data["groups"])
    predictor._refit()
    return predictor


def write_pretrained(path: str | Path = _DEFAULT_OUT, seed: int = 0) -> Path:
    """Generate the examples and the models fitted on them, and write both next to each
    other (default: inside the package). The examples are the source of truth; the
    models file only saves the fit at first use."""
    return _write(Path(path), pretrain_examples(seed))


def _write(path: Path, data: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_to_bytes(data))
    path.with_name(PRETRAINED_MODELS).write_bytes(models_to_bytes(fit_models(data)))
    return path


def _same(old: np.ndarray, new: np.ndarray) -> bool:
    """Equal arrays; floats up to a few units in their last place (NaN where NaN): numpy's
    vectorised exp/log/pow differ in the last bit between CPUs (AVX2 and AVX-512 builds),
    which moved one feature of 432,432 by 6e-16 on one machine."""
    if old.shape != new.shape or old.dtype != new.dtype:
        return False
    if old.dtype.kind == "f":
        return bool(np.allclose(old, new, rtol=1e-6, atol=1e-12, equal_nan=True))
    return bool(np.array_equal(old, new))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(_DEFAULT_OUT))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="compare with --out, write nothing")
    args = parser.parse_args(argv)
    data = pretrain_examples(args.seed)
    if args.check:
        with np.load(args.out) as old:
            same = all(_same(old[k], data[k]) for k in data)
        print("identical" if same else "DIFFERENT", args.out)
        return 0 if same else 1
    path = _write(Path(args.out), data)
    models = path.with_name(PRETRAINED_MODELS)
    print(f"wrote {len(data['X'])} examples to {path} ({path.stat().st_size / 1024:.0f} KiB) "
          f"and models to {models.name} ({models.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
