"""A real, small workload: an MLP on scikit-learn's bundled digits, epoch by epoch.

Small enough to train in well under a second on one CPU core, real enough to show every
behaviour a sweep meets: learning rates too small to learn in the budget, good ones, and
large ones that genuinely diverge (plain SGD with momentum, no clipping: the loss blows
up to inf/NaN). Used by demos, the stopper benchmark and agents' end-to-end tests.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import UserInputError
from ..policies.space import SearchSpace, choice, integer, loguniform, uniform

__all__ = ["DIGITS_SPACE", "load_digits_split", "train_digits"]

DIGITS_SPACE = SearchSpace({
    "lr": loguniform(1e-4, 3.0),
    "hidden": integer(16, 256, log=True),
    "depth": integer(1, 3),
    "act": choice(["relu", "gelu", "tanh"]),
    "weight_decay": loguniform(1e-6, 1e-2),
    "momentum": uniform(0.0, 0.95),
    "batch_size": choice([32, 64, 128]),
})
"""A search space over :func:`train_digits` configs. Of 400 random draws (20 epochs), 14
diverged to NaN and a few more blew up to huge finite losses; about half barely learn
(learning rates too small for the budget)."""

_DEFAULTS: dict[str, Any] = {
    "lr": 0.05, "hidden": 64, "depth": 1, "act": "relu", "weight_decay": 0.0,
    "momentum": 0.9, "batch_size": 64, "epochs": 20, "optimizer": "sgd", "seed": 0,
}


@functools.lru_cache(maxsize=1)
def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits standardised per pixel (on the training part), split 80/20 (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    mean, std = Xtr.mean(axis=0), Xtr.std(axis=0) + 1.0  # +1: constant pixels stay finite
    scale = lambda a: ((a - mean) / std).astype(np.float32)
    return scale(Xtr), scale(Xva), ytr.astype(np.int64), yva.astype(np.int64)


def _config(config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(config) - set(_DEFAULTS)
    if unknown:
        raise UserInputError(
            f"unknown train_digits config keys: {sorted(unknown)}", hint=f"known: {sorted(_DEFAULTS)}"
        )
    c = {**_DEFAULTS, **config}
    if not (isinstance(c["lr"], int | float) and c["lr"] > 0):
        raise UserInputError(f"lr must be a positive number, got {c['lr']!r}")
    for key in ("hidden", "depth", "batch_size", "epochs"):
        if isinstance(c[key], bool) or not isinstance(c[key], int | np.integer) or c[key] < 1:
            raise UserInputError(f"{key} must be a positive int, got {c[key]!r}")
    if c["act"] not in ("relu", "gelu", "tanh"):
        raise UserInputError(f"act must be relu, gelu or tanh, got {c['act']!r}")
    if c["optimizer"] not in ("sgd", "adam"):
        raise UserInputError(f"optimizer must be sgd or adam, got {c['optimizer']!r}")
    return c


def train_digits(
    config: Mapping[str, Any],
    report: Callable[[int, dict[str, float]], Any],
) -> dict[str, float]:
    """Train an MLP on digits, calling ``report(epoch, metrics)`` after every epoch.

    Args:
        config: ``lr``, ``hidden``, ``depth``, ``act`` (relu/gelu/tanh), ``weight_decay``,
            ``momentum``, ``batch_size``, ``epochs``, ``optimizer`` (sgd/adam), ``seed``;
            missing keys take defaults (lr 0.05, 64 hidden, 1 layer, relu, SGD with
            momentum 0.9, batch 64, 20 epochs).
        report: Called as ``report(epoch, {"loss", "val_loss", "val_accuracy"})`` with
            epochs from 1; agents pass ``run.log``. Its return value is ignored.

    Returns:
        The last epoch's metrics plus ``epochs_run`` and ``diverged`` (1.0 or 0.0).
        A diverged run reports its non-finite loss once and stops.

    Raises:
        UserInputError: for unknown keys or invalid values.
    """
    import torch
    from torch import nn

    c = _config(config)
    Xtr, Xva, ytr, yva = load_digits_split()
    gen = torch.Generator().manual_seed(int(c["seed"]))
    act = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}[c["act"]]
    with torch.random.fork_rng():  # seeded initial weights, global RNG left alone
        torch.manual_seed(int(c["seed"]))
        layers: list[nn.Module] = []
        width_in = Xtr.shape[1]
        for _ in range(int(c["depth"])):
            layers += [nn.Linear(width_in, int(c["hidden"])), act()]
            width_in = int(c["hidden"])
        layers.append(nn.Linear(width_in, 10))
        model = nn.Sequential(*layers)
    if c["optimizer"] == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=float(c["lr"]), momentum=float(c["momentum"]),
            weight_decay=float(c["weight_decay"]),
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=float(c["lr"]),
                               weight_decay=float(c["weight_decay"]))
    loss_fn = nn.CrossEntropyLoss()
    xtr, ytr_t = torch.from_numpy(Xtr), torch.from_numpy(ytr)
    xva, yva_t = torch.from_numpy(Xva), torch.from_numpy(yva)
    bs = int(c["batch_size"])
    metrics: dict[str, float] = {}
    diverged = False
    epoch = 0
    for epoch in range(1, int(c["epochs"]) + 1):
        model.train()
        order = torch.randperm(len(xtr), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xtr[idx]), ytr_t[idx])
            if not torch.isfinite(loss):
                diverged = True
                break
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        model.eval()
        with torch.no_grad():
            logits = model(xva)
            val_loss = float(loss_fn(logits, yva_t))
            val_acc = float((logits.argmax(1) == yva_t).float().mean())
        train_loss = total / seen if seen and not diverged else math.nan
        if not math.isfinite(val_loss):
            diverged = True
        metrics = {
            "loss": train_loss if not diverged else math.nan,
            "val_loss": val_loss if not diverged else math.nan,
            "val_accuracy": val_acc,
        }
        report(epoch, dict(metrics))
        if diverged:
            break
    return {**metrics, "epochs_run": float(epoch), "diverged": float(diverged)}
