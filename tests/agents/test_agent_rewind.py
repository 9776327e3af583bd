"""A relaunched trial's curve, as the agent's stoppers see it, holds only the new attempt's
points: the relaunch rewinds the run to step 0 and the store's metric source replaces what it
returned of the attempt that died (real runs in a data directory, a simulated clock)."""

from __future__ import annotations

import assay
import pytest
from assay.agents.agent import Agent
from assay.agents.objective import Objective
from assay.policies import TrialStatus
from assay.scheduler import StoreMetricSource
from assay.scheduler.base import SimClock
from assay.scheduler.sim_backend import CurveSimulatorSource, SimBackend
from assay.simulations.curves import CurveSimulator
from assay.store.control import MemoryControlStore

pytestmark = pytest.mark.integration

SIM = CurveSimulator(seed=3, max_steps=20, metric="loss", crash_rate=0.0)


class _Recording(SimBackend):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.specs = []

    def launch(self, spec):
        self.specs.append(spec)
        super().launch(spec)


def _agent(data_dir, control, agent_id=None):
    obj = Objective.from_dict({
        "name": "rw", "project": "rwproj", "train": "examples.digits:train", "metric": "loss",
        "mode": "min", "space": SIM.space.to_dict(), "budget": {"trials": 1},
        "concurrency": 1, "searcher": "random", "max_retries": 2, "seed": 1})
    # Trials never advance on the simulated clock: their points come from the runs the
    # test writes, read back from the store as a real agent reads them.
    backend = _Recording(SimClock(), CurveSimulatorSource(SIM), cpus=1)
    return Agent(obj, backend, StoreMetricSource(data_dir), control, agent_id=agent_id,
                 ahead=False), backend


def _attempt(data_dir, tid, values, *, first=False):
    kw = {"dir": data_dir, "system_metrics_interval": None, "capture": False}
    run = (assay.init("rwproj", id=tid, **kw) if first
           else assay.init("rwproj", resume=tid, resume_from_step=0, **kw))
    for step, v in enumerate(values):
        run.log({"loss": v}, step=step)
    run.finish("crashed" if first else "completed")


def test_a_relaunched_trials_curve_holds_only_the_new_attempts_points(data_dir):
    control = MemoryControlStore()
    agent, _ = _agent(data_dir, control)
    agent.step()
    agent.step()
    (tid,) = agent.trials
    assert agent.trials[tid].status is TrialStatus.RUNNING
    _attempt(data_dir, tid, [5.0] * 10, first=True)  # then the agent (and the trial) died
    agent.step()
    assert len(agent.trials[tid].curve) == 10
    agent.close()

    again, backend = _agent(data_dir, control, agent.agent_id)
    again.step()
    assert [s.resume for s in backend.specs] == [True]  # relaunched, resuming its run
    resumed = [d for d in control.decisions(agent_id=agent.agent_id) if d.kind == "resume"]
    assert resumed[0].explanation["resume_from_step"] == "auto"  # as the worker opens it
    # The new attempt (as the worker opens it: rewound to 0) logs 3 points from the top.
    _attempt(data_dir, tid, [1.0, 0.9, 0.8])
    again.step()
    curve = [(0, 1.0), (1, 0.9), (2, 0.8)]
    assert again.trials[tid].curve == curve  # not the dead attempt's steps 3-9 after them
    assert [list(r.curve) for r in again._history() if r.trial_id == tid] == [curve]  # stoppers
    h = assay.Api(data_dir).history(tid, "loss")
    assert list(zip(h["step"], h["value"])) == curve
