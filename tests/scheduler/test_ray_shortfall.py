"""RayBackend on the session's local Ray (2 CPUs, no GPU): a trial asking for more than the
whole cluster has is told apart from a busy cluster, refused on a cluster that cannot grow,
and an objective like that is refused before its agent starts."""

from __future__ import annotations

import time

import pytest
from assay.agents.objective import Objective
from assay.agents.runner import check_resources, run_objective
from assay.errors import UserInputError
from assay.scheduler import RayBackend, TrialSpec
from assay.scheduler.base import Resources

pytestmark = pytest.mark.integration


def test_shortfall_against_the_whole_cluster_and_launch_refused_when_it_cannot_grow(
        ray_local, data_dir):
    fixed = RayBackend(data_dir, autoscaling=False)
    try:
        assert fixed.shortfall(Resources(cpus=2)) is None  # fits (once others finish)
        s = fixed.shortfall(Resources(cpus=1, gpus=1))
        assert s is not None and s.missing == ["GPU"] and not s.may_grow
        assert s.total["GPU"] == 0 and s.total["CPU"] == ray_local.cluster_resources()["CPU"]
        assert fixed.shortfall(Resources(cpus=64)).missing == ["CPU"]
        with pytest.raises(UserInputError, match="1 GPU") as e:
            fixed.launch(TrialSpec("tgpu1111", "p", {}, target="examples.toy:train",
                                   resources=Resources(cpus=1, gpus=1)))
        assert "add nodes" in e.value.hint
        assert not fixed.running()
    finally:
        fixed.shutdown()
    joined = RayBackend(data_dir)  # a Ray this backend did not start: it may grow
    try:
        s = joined.shortfall(Resources(cpus=1, gpus=1))
        assert s is not None and s.may_grow
    finally:
        joined.shutdown()


def toygpu(**kw):
    return Objective.from_dict({
        "name": "toygpu", "project": "toygpu", "train": "examples.toy:train",
        "metric": "score", "space": {"x": {"uniform": [0, 1]}, "steps": 2, "step_s": 0.01},
        "budget": {"trials": 1, "wall_clock": "45s"}, "searcher": "random",
        "resources": {"cpus": 1, "gpus": 1}, **kw})


def test_an_objective_the_local_ray_cannot_run_is_refused_before_its_agent_starts(
        ray_local, data_dir, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(UserInputError) as e:
        run_objective(toygpu(), dir=data_dir)
    assert "1 GPU" in e.value.message and "0 GPU" in e.value.message
    assert "resources" in e.value.hint
    check_resources(toygpu(resources={"cpus": 1, "gpus": 0}))  # fits: no error
    # A server checks against what a new local Ray here would have (it starts none).
    import assay.scheduler.ray_backend as rb

    monkeypatch.setattr(rb, "local_resources", lambda: {"CPU": 8.0, "GPU": 0.0})
    with pytest.raises(UserInputError, match="0 GPU"):
        check_resources(toygpu(), running=False)
    check_resources(toygpu(), address="auto")  # a joined cluster may grow: not refused
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    check_resources(toygpu(), running=False)


def test_a_trial_asking_for_a_custom_resource_runs_only_where_the_cluster_has_it(
        ray_local, data_dir):
    """Custom Ray resources (a node's ``--resources``, ``accelerator_type:A100``) could not
    be asked for: a heterogeneous cluster could not steer trials to the right nodes."""
    from assay.scheduler import EventKind

    backend = RayBackend(data_dir, autoscaling=False)
    slot = Resources(cpus=0.5, custom={"assay_slot": 1})
    try:
        assert ray_local.cluster_resources().get("assay_slot") == 1
        assert backend.capacity(slot) == 1  # two CPUs free, but one slot
        assert backend.shortfall(slot) is None
        short = backend.shortfall(Resources(cpus=1, custom={"A100": 1}))
        assert short is not None and short.missing == ["A100"]
        assert "custom: {A100: 0}" in short.hint
        spec = TrialSpec("tslot111", "p", {"x": 0.5, "steps": 2, "step_s": 0.01},
                         target="examples.toy:train", resources=slot)
        backend.launch(spec)
        assert backend.capacity(slot) == 0  # the queued trial holds the only slot
        deadline = time.monotonic() + 60
        events = []
        while time.monotonic() < deadline and backend.running():
            events += backend.poll()
            time.sleep(0.05)
        assert [e.kind for e in events if e.trial_id == "tslot111"][-1] is EventKind.COMPLETED
        while backend.capacity(slot) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # Ray frees a finished task's resources a moment later
        assert backend.capacity(slot) == 1
    finally:
        backend.shutdown()
