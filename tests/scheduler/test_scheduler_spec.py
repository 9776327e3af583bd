"""TrialSpec, Resources, TrialEvent and Usage: validation and read-only records."""

from __future__ import annotations

import pickle

import pytest
from assay.errors import UserInputError
from assay.scheduler import EventKind, Resources, TargetKind, TrialEvent, TrialSpec, Usage


def train(config, run):
    return {}


@pytest.mark.parametrize("target,kind", [
    (train, TargetKind.FUNCTION), ("assay.examples.digits:train", TargetKind.IMPORT),
    ("python train.py --fast", TargetKind.COMMAND), (["python", "train.py"], TargetKind.COMMAND),
    (None, None),
])
def test_target_kinds(target, kind):
    assert TrialSpec("abcd1234", "proj", {}, target).target_kind == kind


def test_specs_are_read_only_and_pickle():
    s = TrialSpec("abcd1234", "proj", {"lr": 0.1, "layers": [1, 2]}, ["python", "t.py"],
                  env={"A": "1"})
    with pytest.raises(TypeError):
        s.config["lr"] = 1  # type: ignore[index]
    assert s.target == ("python", "t.py")
    again = pickle.loads(pickle.dumps(s))
    assert again == s and dict(again.config) == {"lr": 0.1, "layers": [1, 2]}


@pytest.mark.parametrize("kw,match", [
    ({"trial_id": "a-b"}, "trial id"), ({"trial_id": "abc"}, "trial id"),
    ({"project": "no spaces"}, "project"), ({"config": [1]}, "mapping"),
    ({"config": {"f": object()}}, "JSON"), ({"target": 3}, "target"),
    ({"target": ""}, "empty"), ({"max_retries": -1}, "max_retries"),
    ({"max_retries": 1.5}, "max_retries"), ({"stop_grace_s": -1}, "stop_grace_s"),
    ({"report_timeout_s": 0}, "report_timeout_s"), ({"env": {"A": 1}}, "env"),
    ({"resources": (1, 0)}, "Resources"), ({"resume": "yes"}, "resume"),
    ({"resume": 1}, "resume"),
])
def test_invalid_specs_are_user_errors(kw, match):
    args = {"trial_id": "abcd1234", "project": "proj", **kw}
    with pytest.raises(UserInputError, match=match) as e:
        TrialSpec(**args)
    assert e.value.hint


def test_resources_must_ask_for_something_non_negative():
    assert Resources(0, 1).gpus == 1
    for bad in [{"cpus": -1}, {"cpus": 0, "gpus": 0}, {"gpus": float("inf")}, {"cpus": "2"}]:
        with pytest.raises(UserInputError):
            Resources(**bad)


def test_custom_resources_are_checked_and_asked_for_by_their_ray_names():
    r = Resources(cpus=1, custom={"A100": 1, "accelerator_type:A100": 0.01, "unused": 0})
    assert r.request() == {"CPU": 1.0, "A100": 1.0, "accelerator_type:A100": 0.01}
    assert r.to_dict() == {"cpus": 1.0, "gpus": 0.0, "custom": {
        "A100": 1.0, "accelerator_type:A100": 0.01, "unused": 0.0}}
    assert Resources(cpus=0, custom={"TPU": 4}).request() == {"TPU": 4.0}  # custom alone is enough
    assert r.fits({"CPU": 8, "A100": 2, "accelerator_type:A100": 1}) == 2
    assert r.fits({"CPU": 8}) == 0
    assert hash(r) == hash(Resources(cpus=1, custom={"A100": 2}))  # usable as a key
    assert r != Resources(cpus=1)
    for bad, match in [({"custom": {"GPU": 1}}, "Ray's own"), ({"custom": {"memory": 1e9}}, "Ray's own"),
                       ({"custom": {"": 1}}, "needs a name"), ({"custom": {"A100": -1}}, ">= 0"),
                       ({"custom": {"A100": "1"}}, ">= 0"), ({"custom": ["A100"]}, "mapping"),
                       ({"cpus": 0, "custom": {"A100": 0}}, "must ask for some")]:
        with pytest.raises(UserInputError, match=match) as e:
            Resources(**bad)
        assert e.value.hint


def test_usage_adds_and_converts_to_hours():
    u = Usage.of(Resources(cpus=4, gpus=1), 1800) + Usage(10, 10, 0)
    assert u == Usage(1810, 7210, 1800) and u.gpu_hours == 0.5
    assert Usage.of(Resources(), -5) == Usage()


def test_events_are_read_only_and_know_which_kinds_are_final():
    e = TrialEvent("abcd1234", "completed", 1.0, result={"loss": 0.1})
    assert e.kind is EventKind.COMPLETED and e.kind.finished
    assert not EventKind.RETRIED.finished and not EventKind.STARTED.finished
    with pytest.raises(TypeError):
        e.result["loss"] = 2  # type: ignore[index]


def test_resume_defaults_to_a_new_run_and_survives_pickling():
    assert TrialSpec("abcd1234", "proj").resume is False
    s = TrialSpec("abcd1234", "proj", resume=True)
    assert pickle.loads(pickle.dumps(s)).resume is True
