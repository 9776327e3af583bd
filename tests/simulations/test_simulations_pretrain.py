"""The simulated examples (and models) the failure predictor ships with."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
from assay.policies.stoppers.features import FEATURES
from assay.policies.stoppers.predictor import (
    PRETRAINED_FILE,
    PRETRAINED_MODELS,
    FailurePredictor,
    _load_models,
)
from assay.simulations.pretrain import main, pretrain_examples


def _shipped(name: str) -> bytes:
    return resources.files("assay.policies").joinpath("_pretrained", name).read_bytes()


def test_pretrain_examples_are_deterministic():
    a = pretrain_examples(seed=3, n_problems=4)
    b = pretrain_examples(seed=3, n_problems=4)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=k != "features")
    assert a["X"].shape[1] == len(FEATURES)
    assert not np.array_equal(a["X"], pretrain_examples(seed=4, n_problems=4)["X"])


def test_shipped_examples_match_the_feature_set(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(_shipped(PRETRAINED_FILE))
    with np.load(path) as data:
        assert tuple(data["features"]) == FEATURES
        assert len(data["X"]) == len(data["rel"]) == len(data["fail"]) == len(data["groups"])
        assert np.nanmean(data["fail"]) > 0.5  # most trials end worse than the top-k


def test_shipped_models_load_without_refitting():
    predictor = FailurePredictor()
    assert _load_models(predictor, _shipped(PRETRAINED_MODELS))
    assert predictor.is_fitted
    assert not _load_models(FailurePredictor(), b"not a model")


@pytest.mark.slow
def test_shipped_examples_are_what_the_generator_writes(capsys):
    assert main(["--check"]) == 0
    assert "identical" in capsys.readouterr().out


def test_the_check_forgives_last_bit_float_differences_only():
    """Machines' vectorised math differs in the last bit: that is not a changed generator,
    a changed value, NaN, shape or label is."""
    import numpy as np
    from assay.simulations.pretrain import _same

    a = np.array([0.5, 1e-3, np.nan, 3.0], dtype=np.float32)
    assert _same(a, a.copy())
    assert _same(a, np.nextafter(a, np.float32(10)))  # one unit in the last place
    for b in (a + np.float32(1e-4), np.array([0.5, 1e-3, 0.0, 3.0], dtype=np.float32),
              a[:3], a.astype(np.float64)):
        assert not _same(a, b)
    assert _same(np.array(["x"]), np.array(["x"])) and not _same(np.array([1]), np.array([2]))
