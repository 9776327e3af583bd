"""Behaviour of each stopping rule."""

from __future__ import annotations

import math

import pytest
from assay.errors import UserInputError
from assay.policies import (
    AllOf,
    AnyOf,
    ASHAStopper,
    DivergenceStopper,
    HyperbandStopper,
    MedianStopper,
    NonFiniteStopper,
    PatienceStopper,
    ThresholdStopper,
)
from assay.policies.stoppers.asha import rungs


def _others(curve, n=4, start=1.0, end=0.4):
    return [
        curve(f"o{i}", [start - (start - end - 0.02 * i) * s / 9 for s in range(10)], "completed")
        for i in range(n)
    ]


def test_median_stopper_stops_run_below_median_after_warmup(curve):
    history = _others(curve) + [curve("slow", [1.0, 0.99, 0.98, 0.97, 0.96])]
    early = MedianStopper(warmup_steps=6).should_stop(history)
    assert early == {}
    decided = MedianStopper(warmup_steps=3).should_stop(history)
    assert set(decided) == {"slow"}
    ev = decided["slow"].evidence
    assert ev["step"] == 5 and ev["best"] == pytest.approx(0.96)
    assert ev["best"] > ev["cutoff"] and ev["n_compared"] == 4


def test_median_stopper_keeps_run_above_median(curve):
    history = _others(curve) + [curve("fast", [1.0, 0.7, 0.5, 0.45])]
    assert MedianStopper().should_stop(history) == {}


def test_median_stopper_waits_for_enough_other_trials(curve):
    history = _others(curve, n=2) + [curve("slow", [1.0, 1.0, 1.0])]
    assert MedianStopper(min_trials=3).should_stop(history) == {}
    assert set(MedianStopper(min_trials=2).should_stop(history)) == {"slow"}


def test_median_stopper_counts_early_stopped_trials_at_their_last_value(curve):
    stopped = [curve(f"s{i}", [1.0, 0.95], "stopped") for i in range(3)]
    # Against three stopped trials at 0.95 and one good finished one (0.8 at step 4), 0.9
    # beats the median; against the finished one alone it would not.
    history = stopped + _others(curve, n=1) + [curve("mid", [1.0, 0.95, 0.9, 0.9])]
    assert MedianStopper(min_trials=1).should_stop(history) == {}
    alone = _others(curve, n=1) + [curve("mid", [1.0, 0.95, 0.9, 0.9])]
    assert set(MedianStopper(min_trials=1).should_stop(alone)) == {"mid"}


@pytest.mark.parametrize("bad", [{"percentile": 0}, {"percentile": 100}, {"min_trials": 0},
                                 {"warmup_steps": -1}, {"min_points": 1.5}])
def test_median_stopper_rejects_bad_settings(bad):
    with pytest.raises(UserInputError):
        MedianStopper(**bad)


def test_asha_rungs_grow_by_the_reduction_factor():
    assert rungs(1, 30, 3) == [1, 3, 9, 27]
    assert rungs(2, 16, 2) == [2, 4, 8]


def test_asha_stopper_stops_trials_outside_the_top_third_at_a_rung(curve):
    history = [curve(f"d{i}", [1.0 - 0.1 * i] * 10, "completed") for i in range(5)]
    history += [curve("worst", [1.2, 1.2, 1.2]), curve("best", [0.3, 0.3, 0.3])]
    decided = ASHAStopper(10, min_step=1, reduction_factor=3).should_stop(history)
    assert "worst" in decided and "best" not in decided
    ev = decided["worst"].evidence
    assert ev["rung"] == 1 and ev["rung_step"] == 3
    assert ev["n_kept"] == ev["n_at_rung"] // 3


def test_asha_stopper_does_not_rejudge_a_promoted_trial(curve):
    # "early" passed rung 3 (step 3) and is now at step 5; better trials arrived since.
    history = [curve(f"d{i}", [0.1] * 10, "completed") for i in range(5)]
    history.append(curve("early", [0.5] * 5))
    asha = ASHAStopper(27, min_step=1, reduction_factor=3)
    assert asha.should_stop(history) == {}
    at_rung_9 = history[:-1] + [curve("early", [0.5] * 9)]
    assert set(asha.should_stop(at_rung_9)) == {"early"}


def test_asha_stopper_waits_until_a_rung_has_enough_trials(curve):
    history = [curve("a", [0.5, 0.5, 0.5], "completed"), curve("b", [1.0, 1.0, 1.0])]
    assert ASHAStopper(10, reduction_factor=3).should_stop(history) == {}


def test_asha_stopper_does_not_judge_before_the_first_rung(curve):
    history = [curve(f"d{i}", [0.1] * 10, "completed") for i in range(5)] + [curve("new", [9.0])]
    assert ASHAStopper(10, min_step=2).should_stop(history) == {}


@pytest.mark.parametrize("bad", [{"min_step": 10}, {"reduction_factor": 1}, {"max_step": 0}])
def test_asha_stopper_rejects_bad_settings(bad):
    with pytest.raises(UserInputError):
        ASHAStopper(**({"max_step": 10} | bad))


def test_hyperband_stopper_judges_each_bracket_on_its_own(curve):
    hb = HyperbandStopper(27, reduction_factor=3, brackets=3)
    assert [b[0] for b in hb.brackets] == [1, 3, 9]
    history = [curve(f"t{i}", [1.0 + i] * 27, "completed") for i in range(12)]
    history += [curve(f"r{i}", [5.0 + i] * 4) for i in range(6)]
    decided = hb.should_stop(history)
    for tid, reason in decided.items():
        bracket = reason.evidence["bracket"]
        assert bracket == hb.bracket_of(tid)
        assert reason.evidence["rung_step"] >= hb.brackets[bracket][0]
    late = [f"r{i}" for i in range(6) if hb.bracket_of(f"r{i}") == 2]
    assert not set(late) & set(decided)  # bracket 2 only judges from step 9


def test_non_finite_stopper_stops_nan_and_inf(curve):
    history = [curve("nan", [1.0, math.nan]), curve("inf", [1.0, math.inf]),
               curve("ok", [1.0, 0.5]), curve("recovered", [math.nan, 0.5])]
    decided = NonFiniteStopper().should_stop(history)
    assert set(decided) == {"nan", "inf"}
    assert decided["nan"].evidence["value"] == "nan"  # JSON-safe


def test_divergence_stopper_stops_curve_back_past_its_start(curve):
    history = [curve("div", [1.0, 0.5, 0.6, 1.1, 1.3]), curve("noisy", [1.0, 0.5, 0.6, 0.55])]
    decided = DivergenceStopper(ratio=1.0, patience=2).should_stop(history)
    assert set(decided) == {"div"}
    assert decided["div"].evidence["line"] == pytest.approx(1.0)


def test_divergence_stopper_for_max_mode(curve):
    history = [curve("div", [0.5, 0.9, 0.6, 0.3, 0.2])]
    assert set(DivergenceStopper(mode="max", patience=2).should_stop(history)) == {"div"}


def test_threshold_stopper_requires_a_value_by_a_step(curve):
    history = [curve("slow", [0.1, 0.2, 0.3, 0.35]), curve("fast", [0.3, 0.6, 0.8, 0.85]),
               curve("young", [0.1, 0.1])]
    decided = ThresholdStopper({3: 0.5, 10: 0.9}, mode="max").should_stop(history)
    assert set(decided) == {"slow"}
    assert decided["slow"].evidence["threshold"] == 0.5


@pytest.mark.parametrize("bad", [{}, {"x": 1}, {1: math.nan}, [(1, 2)]])
def test_threshold_stopper_rejects_bad_thresholds(bad):
    with pytest.raises(UserInputError):
        ThresholdStopper(bad)


def test_patience_stopper_stops_after_no_improvement(curve):
    history = [curve("stuck", [1.0, 0.5, 0.5, 0.51, 0.5, 0.52]),
               curve("improving", [1.0, 0.9, 0.8, 0.7, 0.6, 0.5])]
    decided = PatienceStopper(patience=3, min_delta=0.01).should_stop(history)
    assert set(decided) == {"stuck"}


def test_any_of_stops_when_one_rule_fires_and_lists_the_others(curve):
    history = _others(curve) + [curve("bad", [1.0, 1.0, 1.0, math.nan])]
    decided = AnyOf(NonFiniteStopper(), MedianStopper()).should_stop(history)
    assert decided["bad"].rule == "non_finite"
    assert decided["bad"].evidence["also_fired"] == ["median"]


def test_all_of_stops_only_when_every_rule_fires(curve):
    history = _others(curve) + [curve("slow", [1.0, 1.0, 1.0, 1.0]),
                                curve("nan", [0.2, math.nan])]
    decided = AllOf(MedianStopper(), PatienceStopper(patience=2)).should_stop(history)
    assert set(decided) == {"slow"}
    assert decided["slow"].rule == "all_of(median,patience)"
    assert set(decided["slow"].evidence) == {"0:median", "1:patience"}


def test_composition_rejects_non_stoppers():
    with pytest.raises(UserInputError):
        AnyOf()
    with pytest.raises(UserInputError):
        AllOf(MedianStopper(), "asha")  # type: ignore[arg-type]


@pytest.mark.parametrize("compose", [AnyOf, AllOf])
def test_composed_stoppers_must_share_a_mode(compose):
    # Opposite modes judge the same curve in opposite directions: the composition used to
    # take the first stopper's mode silently.
    with pytest.raises(UserInputError, match="one mode"):
        compose(MedianStopper(mode="max"), ASHAStopper(19, mode="min"))
    assert compose(MedianStopper(mode="max"), ASHAStopper(19, mode="max")).mode.value == "max"
