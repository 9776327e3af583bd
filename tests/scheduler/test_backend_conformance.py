"""The contract every backend keeps (run against each one through ``backend_case``)."""

from __future__ import annotations

import time

import pytest
from assay.errors import ConflictError, NotFoundError
from assay.scheduler import EventKind, Resources


def test_trial_reports_started_then_completed_exactly_once(backend_case):
    case = backend_case
    spec = case.spec("ok", config={"steps": 3})
    case.backend.launch(spec)
    assert spec.trial_id in case.backend.running()
    done = case.wait_for(spec.trial_id, EventKind.COMPLETED)
    assert case.of(spec.trial_id) == [EventKind.STARTED, EventKind.COMPLETED]
    assert done.attempt == 1 and done.result["loss"] == pytest.approx(1 / 3, abs=0.01)
    assert done.usage.wall_s >= 0 and done.usage.cpu_s == pytest.approx(done.usage.wall_s)
    assert case.backend.poll() == []
    assert spec.trial_id not in case.backend.running()


def test_launching_an_id_twice_is_a_conflict(backend_case):
    spec = backend_case.spec("ok")
    backend_case.backend.launch(spec)
    with pytest.raises(ConflictError):
        backend_case.backend.launch(spec)
    backend_case.wait_for(spec.trial_id, EventKind.COMPLETED)


def test_stopping_an_unknown_trial_is_not_found(backend_case):
    with pytest.raises(NotFoundError):
        backend_case.backend.stop("nosuchtrial", "because")


def test_stop_is_cooperative_idempotent_and_reported_once(backend_case):
    case = backend_case
    spec = case.spec("long")
    case.backend.launch(spec)
    case.wait_for(spec.trial_id, EventKind.STARTED)
    case.backend.stop(spec.trial_id, "median rule: below median at step 3")
    case.backend.stop(spec.trial_id, "a second reason is ignored")
    ev = case.wait_for(spec.trial_id, EventKind.STOPPED)
    assert ev.reason == "median rule: below median at step 3"
    case.backend.stop(spec.trial_id, "stopping a finished trial does nothing")
    case.events.extend(case.backend.poll())
    assert case.of(spec.trial_id) == [EventKind.STARTED, EventKind.STOPPED]
    assert case.backend.running() == set()


def test_a_trial_that_raises_fails_with_its_error(backend_case):
    case = backend_case
    spec = case.spec("raise")
    case.backend.launch(spec)
    ev = case.wait_for(spec.trial_id, EventKind.FAILED)
    assert "boom" in ev.error and "Traceback" in ev.error
    assert "RuntimeError" in ev.reason
    assert case.of(spec.trial_id) == [EventKind.STARTED, EventKind.FAILED]


def test_capacity_falls_as_trials_occupy_slots_and_queued_trials_stop_without_starting(
        backend_case):
    case = backend_case
    deadline = time.monotonic() + 20  # Ray reports freed resources a moment late
    while case.backend.capacity() < case.slots and time.monotonic() < deadline:
        time.sleep(0.1)
    assert case.backend.capacity() == case.slots
    assert case.backend.capacity(Resources(cpus=2)) == case.slots // 2
    specs = [case.spec("long") for _ in range(case.slots + 1)]
    for s in specs:
        case.backend.launch(s)
    assert case.backend.capacity() == 0
    queued = specs[-1]
    case.backend.stop(queued.trial_id, "not needed any more")
    ev = case.wait_for(queued.trial_id, EventKind.STOPPED)
    assert ev.reason == "not needed any more" and ev.usage.cpu_s == 0
    assert EventKind.STARTED not in case.of(queued.trial_id)
    for s in specs[:-1]:
        case.backend.stop(s.trial_id, "done")
    case.wait(lambda es: sum(e.kind is EventKind.STOPPED for e in es) == len(specs))
    assert case.backend.running() == set()


def test_a_silent_trial_fails_after_its_report_timeout(backend_case):
    case = backend_case
    spec = case.spec("silent", report_timeout_s=1.5, stop_grace_s=1.0)
    case.backend.launch(spec)
    ev = case.wait_for(spec.trial_id, EventKind.FAILED)
    assert "no metric reported for 1.5 s" in ev.reason


def test_shutdown_stops_running_trials_and_leaves_their_events(backend_case):
    case = backend_case
    spec = case.spec("long")
    case.backend.launch(spec)
    case.wait_for(spec.trial_id, EventKind.STARTED)
    case.backend.shutdown()
    case.backend.shutdown()
    evs = case.backend.poll()
    assert [e.kind for e in evs] == [EventKind.STOPPED]
    assert evs[0].reason.startswith("backend shut down")
    assert case.backend.running() == set() and case.backend.capacity() == 0
    with pytest.raises(ConflictError):
        case.backend.launch(case.spec("ok"))
