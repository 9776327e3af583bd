"""The real digits workload: it learns, reports every epoch, and genuinely diverges."""

from __future__ import annotations

import math

import numpy as np
import pytest
from assay.errors import UserInputError
from assay.simulations import DIGITS_SPACE, load_digits_split, train_digits


def _train(config):
    log: list[tuple[int, dict]] = []
    out = train_digits(config, lambda step, metrics: log.append((step, metrics)))
    return out, log


def test_digits_split_is_fixed_and_standardised():
    Xtr, Xva, ytr, _ = load_digits_split()
    assert Xtr.shape == (1437, 64) and Xva.shape == (360, 64)
    assert set(np.unique(ytr)) == set(range(10))
    assert abs(float(Xtr.mean())) < 0.05


def test_train_digits_learns_and_reports_every_epoch():
    out, log = _train({"lr": 0.1, "momentum": 0.9, "epochs": 6, "hidden": 64})
    assert [s for s, _ in log] == list(range(1, 7))
    assert set(log[0][1]) == {"loss", "val_loss", "val_accuracy"}
    assert log[-1][1]["val_loss"] < log[0][1]["val_loss"]
    assert out["val_accuracy"] > 0.9 and out["diverged"] == 0.0 and out["epochs_run"] == 6


def test_train_digits_diverges_at_large_learning_rates():
    out, log = _train({"lr": 3.0, "momentum": 0.9, "act": "relu", "hidden": 128, "epochs": 20})
    assert out["diverged"] == 1.0 and out["epochs_run"] < 20
    assert math.isnan(log[-1][1]["val_loss"]) and len(log) == out["epochs_run"]
    assert log[0][1]["val_loss"] > 10  # it blew up before turning into NaN


def test_train_digits_is_deterministic_in_its_seed():
    a, _ = _train({"lr": 0.05, "epochs": 2, "seed": 3})
    b, _ = _train({"lr": 0.05, "epochs": 2, "seed": 3})
    c, _ = _train({"lr": 0.05, "epochs": 2, "seed": 4})
    assert a == b and a != c


def test_train_digits_accepts_configs_from_its_space():
    config = DIGITS_SPACE.sample(np.random.default_rng(0))
    out, log = _train({**config, "epochs": 2})
    assert len(log) == out["epochs_run"]


@pytest.mark.parametrize("bad", [{"lr": -1}, {"hidden": 0}, {"act": "swish"},
                                 {"optimizer": "lbfgs"}, {"colour": "red"}, {"epochs": 1.5}])
def test_train_digits_rejects_bad_configs(bad):
    with pytest.raises(UserInputError):
        train_digits(bad, lambda *_: None)
