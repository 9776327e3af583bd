"""Trial targets and a scripted simulator shared by the scheduler tests.

The same config drives both: ``behaviour`` says what the trial does (``ok``, ``raise``,
``long``, ``stubborn``, ``silent``, ``nan``), so the backend conformance suite runs one
spec against the simulated and the Ray backend. Ray workers cannot import this test module,
so the Ray case registers it for pickling by value.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from assay.scheduler import WorkerLost


def scripted(config: Mapping[str, Any], run: Any) -> dict[str, float]:
    """A real trial: logs ``loss`` per step and behaves as ``config["behaviour"]`` says."""
    behaviour = config.get("behaviour", "ok")
    if config.get("pid_file"):
        with open(config["pid_file"], "a") as f:
            f.write(f"{os.getpid()}\n")
    loss = 1.0
    if behaviour == "ok":
        for step in range(int(config.get("steps", 3))):
            loss = 1.0 / (step + 1)
            run.log({"loss": loss}, step=step)
        if "returned" in config:  # a number the trial returns but never logs
            return {"loss": loss, "returned": float(config["returned"])}
        return {"loss": loss}
    if behaviour == "implicit":  # implicit steps; logs 10 + its attach, to tell attempts apart
        for i in range(int(config.get("steps", 3))):
            run.log({"loss": 10.0 * run.attach + i})
        return {"loss": 10.0 * run.attach}
    if behaviour == "raise":
        run.log({"loss": loss}, step=0)
        raise RuntimeError("boom: the trial raised on purpose")
    if behaviour == "exit":  # the trial's own sys.exit: a failure like any other
        run.log({"loss": loss}, step=0)
        raise SystemExit(3)
    if behaviour == "nan":
        run.log({"loss": 1.0}, step=0)
        run.log({"loss": math.nan}, step=1)
        raise FloatingPointError("loss is NaN")
    deadline = time.monotonic() + 600
    step = 0
    while time.monotonic() < deadline:
        if behaviour != "silent":
            run.log({"loss": 1.0 / (step + 1)}, step=step)
        step += 1
        if behaviour != "stubborn" and run.should_stop():
            return {"loss": 1.0 / step}
        time.sleep(0.1)
    return {"loss": 1.0 / step}


class ScriptedSimulator:
    """A deterministic simulator with the same behaviours, one simulated second per step."""

    metric = "loss"

    def __init__(self, step_s: float = 1.0) -> None:
        self.step_s = step_s
        self.attempts: dict[int, int] = {}

    def curve(self, config: Mapping[str, Any], seed: int) -> Iterator[tuple[int, float, float]]:
        behaviour = config.get("behaviour", "ok")
        dt = float(config.get("step_s", self.step_s))
        if behaviour == "ok":
            for s in range(int(config.get("steps", 3))):
                yield s, 1.0 / (s + 1) + 0.001 * (seed % 7), dt
        elif behaviour == "raise":
            yield 0, 1.0, dt
            raise RuntimeError("boom: the trial raised on purpose")
        elif behaviour == "nan":
            yield 0, 1.0, dt
            yield 1, math.nan, dt
        elif behaviour == "silent":
            yield 0, 1.0, 1e9
        elif behaviour == "lost":
            lost_until = int(config.get("lost", 1))
            n = self.attempts.get(seed, 0)
            self.attempts[seed] = n + 1
            yield 0, 1.0, dt
            if n < lost_until:
                raise WorkerLost("worker SIGKILLed (simulated)")
            yield 1, 0.5, dt
        else:  # long, stubborn
            for s in range(100_000):
                yield s, 1.0 / (s + 1), dt
