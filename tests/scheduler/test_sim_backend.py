"""SimBackend and SimClock: simulated sweeps, deterministic and far faster than real time."""

from __future__ import annotations

import math
import time

import pytest
from assay.errors import ConflictError, NotFoundError, UserInputError
from assay.scheduler import (
    CurveSimulatorSource,
    EventKind,
    RealClock,
    Resources,
    SimBackend,
    SimClock,
    StopMode,
    TrialSpec,
)
from sched_targets import ScriptedSimulator


def spec(i: int, behaviour: str = "ok", **kw) -> TrialSpec:
    config = {"behaviour": behaviour, **kw.pop("config", {})}
    return TrialSpec(f"sim{i:05d}", "simproj", config, **kw)


def drain(backend: SimBackend, clock: SimClock) -> list:
    """Advance from event to event until the backend is idle; all events in order."""
    events = backend.poll()
    while (t := backend.next_event_time()) is not None:
        clock.advance_to(t)
        events += backend.poll()
    return events


def sweep(n: int, slots: int, seed_steps: int = 0) -> tuple[list, SimClock]:
    clock = SimClock()
    backend = SimBackend(clock, ScriptedSimulator(), cpus=slots)
    for i in range(n):
        behaviour = ("ok", "ok", "ok", "raise", "nan")[i % 5]
        backend.launch(spec(i, behaviour, config={"steps": 5 + (i + seed_steps) % 20}))
    return drain(backend, clock), clock


def test_hundreds_of_trials_finish_in_well_under_seconds_and_replay_identically():
    t0 = time.perf_counter()
    events, clock = sweep(500, slots=8)
    elapsed = time.perf_counter() - t0
    again, _ = sweep(500, slots=8)
    assert elapsed < 5
    assert events == again
    finished = [e for e in events if e.kind.finished]
    assert len(finished) == 500 and len({e.trial_id for e in finished}) == 500
    kinds = {k: sum(e.kind is k for e in finished) for k in EventKind}
    assert kinds[EventKind.COMPLETED] == 300 and kinds[EventKind.FAILED] == 200
    # simulated time is the work divided over the slots, not the work itself
    work = sum(e.usage.wall_s for e in finished)
    assert clock.now() == pytest.approx(work / 8, rel=0.1)
    assert [e.time for e in events] == sorted(e.time for e in events)


def test_concurrency_never_exceeds_the_slots_and_freed_slots_refill_at_once():
    events, _ = sweep(60, slots=3)
    live = 0
    for e in events:
        live += 1 if e.kind is EventKind.STARTED else -1 if e.kind.finished else 0
        assert 0 <= live <= 3
    starts = [e.time for e in events if e.kind is EventKind.STARTED]
    ends = sorted(e.time for e in events if e.kind.finished)
    assert set(starts[3:]) <= set(ends)  # every later start happens at some trial's end


def test_poll_does_not_move_time_and_points_come_once():
    clock = SimClock()
    backend = SimBackend(clock, ScriptedSimulator(), cpus=1)
    backend.launch(spec(1, config={"steps": 4}))
    assert [e.kind for e in backend.poll()] == [EventKind.STARTED]
    assert backend.poll() == [] and backend.new_points(["sim00001"]) == {}
    clock.advance(2.5)
    assert backend.poll() == []
    assert backend.new_points(["sim00001"]) == {"sim00001": {"loss": [(0, 1.0), (1, 0.5)]}}
    assert backend.new_points(["sim00001"]) == {}
    clock.advance(10)
    [done] = backend.poll()
    assert done.kind is EventKind.COMPLETED and done.time == 4.0
    assert done.result == {"loss": 0.25} and done.usage.cpu_s == 4.0
    assert [p[0] for p in backend.new_points(["sim00001"])["sim00001"]["loss"]] == [2, 3]


def test_immediate_stop_ends_the_trial_now_and_frees_its_slot():
    clock = SimClock()
    backend = SimBackend(clock, ScriptedSimulator(), cpus=1)
    backend.launch(spec(1, "long"))
    backend.launch(spec(2, "ok"))
    clock.advance(3.5)
    backend.stop("sim00001", "asha: rung 1")
    evs = backend.poll()
    stop = next(e for e in evs if e.kind is EventKind.STOPPED)
    assert stop.time == 3.5 and stop.reason == "asha: rung 1" and stop.usage.wall_s == 3.5
    assert [e.kind for e in evs if e.trial_id == "sim00002"] == [EventKind.STARTED]
    assert next(e for e in evs if e.trial_id == "sim00002").time == 3.5


def test_step_mode_stops_at_the_next_step_or_kills_after_the_grace():
    clock = SimClock()
    backend = SimBackend(clock, ScriptedSimulator(step_s=10), cpus=2, stop_mode="step")
    backend.launch(spec(1, "long", stop_grace_s=30))
    backend.launch(spec(2, "long", stop_grace_s=2))
    clock.advance(13)
    backend.stop("sim00001", "median")
    backend.stop("sim00002", "median")
    evs = drain(backend, clock)
    s1 = next(e for e in evs if e.trial_id == "sim00001" and e.kind.finished)
    s2 = next(e for e in evs if e.trial_id == "sim00002" and e.kind.finished)
    assert (s1.kind, s1.time, s1.reason) == (EventKind.STOPPED, 20.0, "median")
    assert (s2.kind, s2.time) == (EventKind.STOPPED, 15.0)
    assert "killed after 2 s grace" in s2.reason


def test_worker_loss_is_retried_then_fails_after_max_retries():
    clock = SimClock()
    backend = SimBackend(clock, ScriptedSimulator(), cpus=2)
    backend.launch(spec(1, "lost", max_retries=1, config={"lost": 1}))
    backend.launch(spec(2, "lost", max_retries=1, config={"lost": 5}))
    evs = drain(backend, clock)
    assert [e.kind for e in evs if e.trial_id == "sim00001"] == [
        EventKind.STARTED, EventKind.RETRIED, EventKind.STARTED, EventKind.COMPLETED]
    retried = next(e for e in evs if e.kind is EventKind.RETRIED)
    assert retried.attempt == 2 and "worker lost" in retried.reason and retried.usage.wall_s == 1
    failed = [e for e in evs if e.trial_id == "sim00002"][-1]
    assert failed.kind is EventKind.FAILED and failed.attempt == 2
    assert "max_retries=1" in failed.reason


def test_a_retried_trials_points_replace_the_dead_attempts_as_on_a_real_backend():
    """A retry starts the curve again and the run rewinds (resume_from_step "auto"): the
    agent is told to drop what it held (replaced()) and gets the new attempt's points."""
    clock = SimClock()
    backend = SimBackend(clock, ScriptedSimulator(), cpus=1)
    backend.launch(spec(1, "lost", max_retries=1, config={"lost": 1}))
    seen: list = []
    replaced: list = []
    events = backend.poll()
    while (t := backend.next_event_time()) is not None:
        clock.advance_to(t)
        events += backend.poll()
        got = backend.new_points(["sim00001"])
        replaced.append("sim00001" in backend.replaced())
        if replaced[-1]:
            seen.clear()
        seen += got.get("sim00001", {}).get("loss", [])
    assert any(replaced)
    assert seen == [(0, 1.0), (1, 0.5)]  # the new attempt's curve alone, step 0 included


def test_nan_fails_as_diverged_and_crashes_fail_with_a_traceback():
    clock = SimClock()
    backend = SimBackend(clock, ScriptedSimulator(), cpus=2)
    backend.launch(spec(1, "nan"))
    backend.launch(spec(2, "raise"))
    evs = {e.trial_id: e for e in drain(backend, clock) if e.kind.finished}
    assert evs["sim00001"].kind is EventKind.FAILED
    assert evs["sim00001"].reason == "diverged: loss is NaN at step 1"
    assert evs["sim00002"].kind is EventKind.FAILED and "Traceback" in evs["sim00002"].error


def test_gpu_trials_wait_for_gpus_and_capacity_counts_the_queue():
    clock = SimClock()
    backend = SimBackend(clock, ScriptedSimulator(), cpus=8, gpus=2)
    assert backend.capacity(Resources(cpus=1, gpus=1)) == 2
    for i in range(3):
        backend.launch(spec(i, "ok", resources=Resources(cpus=1, gpus=1)))
    assert backend.capacity(Resources(cpus=1, gpus=1)) == 0
    assert backend.capacity(Resources(cpus=1)) == 5
    evs = drain(backend, clock)
    third = next(e for e in evs if e.trial_id == "sim00002" and e.kind is EventKind.STARTED)
    assert third.time == 3.0
    with pytest.raises(UserInputError, match="simulated cluster"):
        backend.launch(spec(9, resources=Resources(cpus=1, gpus=4)))


def test_trials_asking_for_a_custom_resource_share_what_the_cluster_declares():
    clock = SimClock()
    backend = SimBackend(clock, ScriptedSimulator(), cpus=8, resources={"A100": 2})
    a100 = Resources(cpus=1, custom={"A100": 1})
    assert backend.capacity(a100) == 2 and backend.capacity(Resources(cpus=1)) == 8
    for i in range(3):
        backend.launch(spec(i, "ok", resources=a100))
    assert backend.capacity(a100) == 0 and backend.capacity(Resources(cpus=1)) == 5
    evs = drain(backend, clock)
    third = next(e for e in evs if e.trial_id == "sim00002" and e.kind is EventKind.STARTED)
    assert third.time == 3.0  # waited for a freed A100, not for a CPU
    assert backend.capacity(a100) == 2
    short = backend.shortfall(Resources(cpus=1, custom={"TPU": 1}))
    assert short is not None and short.missing == ["TPU"] and "custom: {TPU: 0}" in short.hint
    with pytest.raises(UserInputError, match="TPU"):
        backend.launch(spec(9, resources=Resources(cpus=1, custom={"TPU": 1})))
    backend.resize(resources={"A100": 2, "TPU": 1})
    assert backend.shortfall(Resources(cpus=1, custom={"TPU": 1})) is None


def test_launch_overhead_delays_the_first_step():
    clock = SimClock()
    backend = SimBackend(clock, ScriptedSimulator(), cpus=1, launch_overhead_s=30)
    backend.launch(spec(1, config={"steps": 2}))
    done = next(e for e in drain(backend, clock) if e.kind.finished)
    assert done.time == 32.0 and done.usage.wall_s == 32.0


def test_real_curve_simulator_plays_through_the_adapter():
    curves = pytest.importorskip("assay.simulations.curves")
    sim = curves.CurveSimulator(seed=3, max_steps=12, crash_rate=0.2)
    clock = SimClock()
    backend = SimBackend(clock, CurveSimulatorSource(sim), cpus=4)
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(200):
        backend.launch(TrialSpec(f"cs{i:04d}", "curves", sim.space.sample(rng)))
    t0 = time.perf_counter()
    evs = drain(backend, clock)
    assert time.perf_counter() - t0 < 5
    finished = [e for e in evs if e.kind.finished]
    assert len(finished) == 200
    reasons = " ".join(e.reason for e in finished)
    assert "crashed" in reasons and "diverged" in reasons
    ok = next(e for e in finished if e.kind is EventKind.COMPLETED)
    assert math.isfinite(ok.result[sim.metric])


def test_invalid_use_says_what_to_do():
    clock = SimClock()
    with pytest.raises(UserInputError, match="SimClock"):
        SimBackend(RealClock(), ScriptedSimulator())  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="curve"):
        SimBackend(clock, object())  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="stop_mode"):
        SimBackend(clock, ScriptedSimulator(), stop_mode="later")
    backend = SimBackend(clock, ScriptedSimulator(), stop_mode=StopMode.STEP)
    backend.launch(spec(1))
    with pytest.raises(ConflictError):
        backend.launch(spec(1))
    with pytest.raises(NotFoundError):
        backend.stop("unknown1")


def test_sim_clock_moves_only_forward_and_real_clock_tells_time():
    clock = SimClock(10)
    clock.sleep(5)
    assert clock.now() == 15
    assert clock.advance_to(12) == 15 and clock.advance_to(20) == 20
    with pytest.raises(UserInputError):
        clock.advance(-1)
    with pytest.raises(UserInputError):
        SimClock(-3)
    assert abs(RealClock().now() - time.time()) < 1
