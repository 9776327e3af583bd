"""Budgets: parsing, validation, and the ledger's accounting per run, agent and project."""

from __future__ import annotations

import pytest
from assay.errors import UserInputError
from assay.scheduler import (
    Budget,
    BudgetLedger,
    EventKind,
    Resources,
    SimBackend,
    SimClock,
    TrialEvent,
    TrialSpec,
    Usage,
    format_duration,
    parse_duration,
)
from sched_targets import ScriptedSimulator


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("20m", 1200), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400), ("2d", 172800),
    (" 45 ", 45), (30, 30), (2.5, 2.5), ("1h 5m 3s", 3903), (".5m", 30),
])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "20x", "5m later", "-3m", "h", True, None, "inf",
                                 float("nan")])
def test_unreadable_durations_are_user_errors_with_a_hint(bad):
    with pytest.raises(UserInputError) as e:
        parse_duration(bad)
    assert e.value.hint


def test_format_duration_is_short():
    assert [format_duration(s) for s in (59, 600, 7200, 9000)] == ["59s", "10m", "2h", "2h30m"]


@pytest.mark.parametrize("kw,match", [
    ({"trials": 0}, "at least 1"), ({"trials": -2}, "at least 1"), ({"trials": 2.5}, "int"),
    ({"trials": True}, "int"), ({"wall_clock_s": "-1h"}, "wall_clock_s"),
    ({"wall_clock_s": 0}, "zero"), ({"cpu_hours": -1}, "cpu_hours"),
    ({"gpu_hours": "lots"}, "gpu_hours"), ({"wall_clock_s": "0m"}, "zero"),
])
def test_impossible_budgets_are_rejected(kw, match):
    with pytest.raises(UserInputError, match=match) as e:
        Budget(**kw)
    assert e.value.hint


def test_zero_gpu_hours_forbid_gpu_trials_but_not_cpu_trials():
    from assay.scheduler.base import Resources
    from assay.scheduler.budget import BudgetLedger
    from assay.scheduler.clock import SimClock

    ledger = BudgetLedger(Budget.from_mapping({"trials": 40, "gpu_hours": 0}), SimClock())
    assert ledger.exhausted() is None
    assert ledger.launch_blocker(Resources(cpus=1)) is None
    assert "gpu-hours" in ledger.launch_blocker(Resources(cpus=1, gpus=1))


def test_budget_text_limits_convert_to_each_unit():
    b = Budget(trials=20, wall_clock_s="20m", cpu_hours="90m", gpu_hours=2)
    assert (b.wall_clock_s, b.cpu_hours, b.gpu_hours) == (1200, 1.5, 2)
    assert Budget.from_mapping({"trials": 4, "wall_clock": "2h"}) == Budget(4, 7200)
    assert Budget().unlimited and not b.unlimited
    with pytest.raises(UserInputError, match="unknown budget keys"):
        Budget.from_mapping({"trails": 4})


def _spec(i: int, *, cpus: float = 1, gpus: float = 0, project: str = "p", **config) -> TrialSpec:
    return TrialSpec(f"led{i:04d}", project, {"behaviour": "ok", **config},
                     resources=Resources(cpus, gpus))


def test_ledger_accounts_each_attempt_per_run_agent_and_project():
    clock = SimClock()
    backend = SimBackend(clock, ScriptedSimulator(step_s=360), cpus=8, gpus=2)
    ledger = BudgetLedger(Budget(trials=10), clock)
    specs = [_spec(0, cpus=2, steps=10), _spec(1, cpus=1, gpus=1, steps=5, project="q"),
             TrialSpec("led0002", "p", {"behaviour": "lost", "lost": 1}, max_retries=1)]
    for s, agent in zip(specs, ["a", "a", "b"]):
        ledger.record_launch(s, agent=agent)
        backend.launch(s)
    while (t := backend.next_event_time()) is not None:
        clock.advance_to(t)
        for e in backend.poll():
            ledger.record(e)
    assert ledger.usage(run="led0000").cpu_hours == pytest.approx(2 * 1.0)  # 2 cpus x 1 h
    assert ledger.usage(run="led0001") == Usage(1800, 1800, 1800)
    assert ledger.usage(run="led0002").wall_s == 360 + 720  # both attempts are paid for
    assert ledger.by_project()["q"].gpu_hours == pytest.approx(0.5)
    assert ledger.usage(agent="a").cpu_s == pytest.approx(2 * 3600 + 1800)
    assert set(ledger.by_agent()) == {"a", "b"}
    assert ledger.remaining().trials == 7 and ledger.exhausted() is None


def test_running_trials_count_with_what_they_used_so_far():
    clock = SimClock()
    ledger = BudgetLedger(Budget(cpu_hours=1), clock)
    s = _spec(1, cpus=4)
    ledger.record_launch(s)
    ledger.record(TrialEvent(s.trial_id, EventKind.STARTED, clock.now()))
    clock.advance(600)
    assert ledger.usage().cpu_hours == pytest.approx(4 * 600 / 3600)
    assert ledger.can_launch(Resources(cpus=1))
    clock.advance(300)
    assert ledger.exhausted() == "cpu-hours budget reached: 1 of 1 used"
    assert not ledger.can_launch()
    ledger.record(TrialEvent(s.trial_id, EventKind.STOPPED, clock.now(),
                             usage=Usage.of(s.resources, 900)))
    assert ledger.remaining().cpu_hours == 0


def test_spent_gpu_hours_still_allow_cpu_trials_but_not_gpu_trials():
    clock = SimClock()
    ledger = BudgetLedger(Budget(gpu_hours="30m"), clock)
    ledger.record(TrialEvent("ext00001", EventKind.COMPLETED, 0.0, usage=Usage(1800, 0, 1800)),
                  project="p", agent="other", resources=Resources(0, 1))
    assert ledger.can_launch(Resources(cpus=2))
    assert not ledger.can_launch(Resources(cpus=1, gpus=1))
    assert "gpu-hours budget reached" in ledger.launch_blocker(Resources(gpus=1))
    assert ledger.exhausted() is not None
    assert ledger.by_agent() == {"other": Usage(1800, 0, 1800)}


def test_trial_and_wall_clock_limits_block_launches_with_a_reason():
    clock = SimClock()
    ledger = BudgetLedger(Budget(trials=2, wall_clock_s="1h"), clock)
    ledger.record_launch(_spec(1))
    assert ledger.can_launch()
    ledger.record_launch(_spec(2))
    ledger.record_launch(_spec(2))  # the same trial twice counts once
    assert ledger.exhausted() == "trial budget reached: 2 of 2 trials launched"
    ledger = BudgetLedger(Budget(wall_clock_s="1h"), clock)
    clock.advance(3599)
    assert ledger.remaining().wall_clock_s == 1
    clock.advance(1)
    assert ledger.exhausted() == "wall-clock budget reached: 1h of 1h elapsed"


def test_ledger_state_survives_a_restart():
    clock = SimClock(100)
    ledger = BudgetLedger(Budget(trials=5, cpu_hours=2), clock)
    s = _spec(1, cpus=2)
    ledger.record_launch(s, agent="a")
    ledger.record(TrialEvent(s.trial_id, EventKind.STARTED, 100.0))
    clock.advance(1800)
    restored = BudgetLedger(Budget(trials=5, cpu_hours=2), clock)
    restored.load_state_dict(ledger.state_dict())
    assert restored.remaining() == ledger.remaining()
    assert restored.usage(agent="a") == ledger.usage(agent="a")
    with pytest.raises(UserInputError, match="not a budget ledger state"):
        restored.load_state_dict({"runs": 3})


def test_an_attempt_lost_with_its_agent_is_charged_until_the_last_save_then_stops():
    clock = SimClock(100)
    ledger = BudgetLedger(Budget(trials=2, cpu_hours=2), clock)
    s = _spec(1, cpus=2)
    ledger.record_launch(s, agent="a")
    ledger.record(TrialEvent(s.trial_id, EventKind.STARTED, 100.0))
    clock.advance(900)
    restored = BudgetLedger(Budget(trials=2, cpu_hours=2), clock)
    restored.load_state_dict(ledger.state_dict())  # saved 900 s after the start
    clock.advance(900)  # the agent was down: when the attempt died is unknown
    restored.record_lost(s.trial_id)
    restored.record_lost("neverseen")  # nothing to close
    lost = Usage.of(s.resources, 900)  # charged up to the last save, never beyond
    assert restored.usage(run=s.trial_id) == lost
    clock.advance(900)
    assert restored.usage(run=s.trial_id) == lost  # no longer counting
    restored.record_launch(s, agent="a")  # relaunched: still one trial
    assert restored.trials_launched == 1 and restored.remaining().trials == 1
    restored.record(TrialEvent(s.trial_id, EventKind.STARTED, clock.now()))
    clock.advance(60)
    restored.record(TrialEvent(s.trial_id, EventKind.COMPLETED, clock.now(),
                               usage=Usage.of(s.resources, 60)))
    assert restored.usage(run=s.trial_id) == lost + Usage.of(s.resources, 60)
