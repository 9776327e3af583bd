"""The backend conformance harness: every backend runs the same suite.

``backend_case`` is parametrized over the backends (Optuna's ``pytest_storages.py``
pattern): ``sim`` (a SimBackend on a SimClock, instant) and ``ray`` (a RayBackend on the
session's local Ray, marked integration). A case builds specs from behaviours (see
``sched_targets``) and waits for events: the sim case advances its clock from event to
event, the Ray case polls in real time.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sched_targets
from assay.scheduler import Backend, EventKind, SimBackend, SimClock, TrialEvent, TrialSpec

_ids = itertools.count()


def new_id(prefix: str = "t") -> str:
    return f"{prefix}{next(_ids):04d}{int(time.time() * 1000) % 100000:05d}"


@dataclass
class BackendCase:
    """One backend under test and how to drive it."""

    kind: str
    backend: Backend
    slots: int
    clock: SimClock | None = None
    events: list[TrialEvent] = field(default_factory=list)

    def spec(self, behaviour: str = "ok", *, trial_id: str | None = None, **kw: Any) -> TrialSpec:
        config = {"behaviour": behaviour, **kw.pop("config", {})}
        kw.setdefault("stop_grace_s", 5.0)
        return TrialSpec(trial_id or new_id(), "conformance", config,
                         target=sched_targets.scripted, **kw)

    def wait(self, until: Callable[[list[TrialEvent]], bool], timeout: float = 60.0
             ) -> list[TrialEvent]:
        """Poll (advancing simulated time) until ``until(all events so far)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            self.events.extend(self.backend.poll())
            if until(self.events):
                return self.events
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached; events: {self.events}")
            if self.clock is not None:
                t = self.backend.next_event_time()  # type: ignore[attr-defined]
                if t is None:
                    raise AssertionError(f"simulation idle; events: {self.events}")
                self.clock.advance_to(t)
            else:
                time.sleep(0.1)

    def wait_for(self, trial_id: str, kind: EventKind, timeout: float = 60.0) -> TrialEvent:
        evs = self.wait(lambda es: any(e.trial_id == trial_id and e.kind == kind for e in es),
                        timeout)
        return next(e for e in evs if e.trial_id == trial_id and e.kind == kind)

    def of(self, trial_id: str) -> list[EventKind]:
        return [e.kind for e in self.events if e.trial_id == trial_id]


def _sim_case() -> Iterator[BackendCase]:
    clock = SimClock()
    backend = SimBackend(clock, sched_targets.ScriptedSimulator(), cpus=2)
    yield BackendCase("sim", backend, 2, clock)
    backend.shutdown()


def _ray_case(request: pytest.FixtureRequest) -> Iterator[BackendCase]:
    from assay.scheduler import RayBackend
    from ray import cloudpickle

    request.getfixturevalue("ray_local")
    cloudpickle.register_pickle_by_value(sched_targets)
    backend = RayBackend(request.getfixturevalue("data_dir"), heartbeat_s=0.2)
    yield BackendCase("ray", backend, 2)
    backend.shutdown()


@pytest.fixture(params=["sim", pytest.param("ray", marks=pytest.mark.integration)])
def backend_case(request: pytest.FixtureRequest) -> Iterator[BackendCase]:
    """Each backend in turn, fresh for every test."""
    yield from (_sim_case() if request.param == "sim" else _ray_case(request))


@pytest.fixture
def ray_backend(request: pytest.FixtureRequest) -> Iterator[BackendCase]:
    """A RayBackend case on the session's local Ray and a fresh data directory."""
    yield from _ray_case(request)
