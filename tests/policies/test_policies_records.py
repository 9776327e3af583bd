"""TrialResult, Suggestion and StopReason: validation, immutability, serialisation."""

from __future__ import annotations

import copy
import json
import math
import pickle

import numpy as np
import pytest
from assay.errors import UserInputError
from assay.policies import StopReason, Suggestion, TrialResult, TrialStatus


def test_trial_result_sorts_its_curve_and_keeps_the_latest_duplicate():
    t = TrialResult("a", {"lr": 0.1}, "running", [(3, 0.5), (1, 0.9), (3, 0.4), (2, 0.7)])
    assert t.curve == ((1.0, 0.9), (2.0, 0.7), (3.0, 0.4))
    assert t.status is TrialStatus.RUNNING and t.last_step == 3.0


def test_trial_result_value_falls_back_to_the_last_point():
    assert TrialResult("a", {}, "completed", [(1, 0.9), (2, 0.5)]).value == 0.5
    assert TrialResult("a", {}, "completed", [(1, 0.9)], final=0.3).value == 0.3
    assert TrialResult("a", {}, "completed").value is None


def test_trial_result_keeps_nan_as_evidence():
    t = TrialResult("a", {}, "failed", [(1, 1.0), (2, math.nan)])
    assert math.isnan(t.curve[-1][1])


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"status": "exploded"}, "unknown status"),
        ({"curve": [(1, None)]}, "missing"),
        ({"curve": [(1, "x")]}, "not a number"),
        ({"curve": [(None, 1.0)]}, "missing"),
        ({"curve": [(math.nan, 1.0)]}, "has step"),
        ({"curve": [(1, 2, 3)]}, "pair"),
        ({"config": [1, 2]}, "mapping"),
        ({"final": "high"}, "not a number"),
        ({"metrics": {"acc": None}}, "missing"),
    ],
)
def test_trial_result_rejects_malformed_input(kwargs, words):
    args = {"trial_id": "a", "config": {}} | kwargs
    with pytest.raises(UserInputError, match=words):
        TrialResult(**args)


def test_trial_result_is_immutable_yet_pickles_and_deep_copies():
    t = TrialResult("a", {"lr": 0.1}, "completed", [(1, 0.5)], 0.5, metrics={"mem": 3.0})
    with pytest.raises(AttributeError):
        t.final = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        t.config["lr"] = 1.0  # type: ignore[index]
    assert pickle.loads(pickle.dumps(t)) == t
    assert copy.deepcopy(t) == t
    assert json.loads(json.dumps(t.to_dict())) == t.to_dict()


def test_trial_result_round_trips_through_dicts():
    t = TrialResult("a", {"lr": 0.1}, "stopped", [(1, 0.5), (2, 0.4)], None,
                    metrics={"acc": 0.9}, resources={"epochs": 2})
    assert TrialResult.from_dict(t.to_dict()) == t
    with pytest.raises(UserInputError):
        TrialResult.from_dict({"config": {}})


def test_trial_result_from_store_rows_keeps_only_the_objective_key():
    rows = [
        {"key": "loss", "step": 2, "value": 0.5},
        {"key": "acc", "step": 1, "value": 0.1},
        {"key": "loss", "step": 1, "value": 0.9},
    ]
    t = TrialResult.from_rows("r1", {"lr": 0.1}, "running", rows, "loss")
    assert t.curve == ((1.0, 0.9), (2.0, 0.5))


def test_truncated_shows_the_trial_mid_run():
    t = TrialResult("a", {}, "completed", [(1, 0.9), (2, 0.5), (3, 0.4)], 0.4)
    mid = t.truncated(2)
    assert mid.curve == ((1.0, 0.9), (2.0, 0.5)) and mid.final is None
    assert mid.status is TrialStatus.RUNNING


def test_suggestion_and_stop_reason_make_payloads_json_safe():
    s = Suggestion({"lr": np.float64(0.1)}, {"method": "x", "mean": np.float32(1.5),
                                             "vec": np.arange(3), "bad": math.inf})
    json.dumps(dict(s.explanation), allow_nan=False)
    assert s.explanation["vec"] == [0, 1, 2] and s.explanation["bad"] == "inf"
    r = StopReason("a", "median", "slow", {"value": math.nan, "nested": {"k": np.int64(2)}})
    assert json.loads(json.dumps(r.to_dict(), allow_nan=False))["evidence"] == {
        "value": "nan", "nested": {"k": 2}
    }
    assert pickle.loads(pickle.dumps(r)) == r


def test_trial_status_lifecycle_flags():
    assert {s for s in TrialStatus if s.is_finished} == {
        TrialStatus.COMPLETED, TrialStatus.STOPPED, TrialStatus.FAILED
    }
    assert {s for s in TrialStatus if s.is_active} == {TrialStatus.PENDING, TrialStatus.RUNNING}
